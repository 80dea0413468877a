"""Fixtures shared by the test modules, and one core for each parallel test worker.

Under pytest-xdist (`-n 2`: the default, see pyproject.toml) each worker is pinned to a core of
its own before torch is imported, and so is everything it starts (dvc, torchrun, the stages):
torch then runs one thread per worker instead of two workers each spinning up a thread per core,
whose threads wait on each other (measured here: the full suite took longer with two unpinned
workers than with one process)."""

import os

if (
    os.environ.get("PYTEST_XDIST_WORKER")
    and int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1
    and hasattr(os, "sched_setaffinity")
):
    _cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {_cores[int(os.environ["PYTEST_XDIST_WORKER"].removeprefix("gw")) % len(_cores)]})

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tests.helpers import REPO, SHARED_DATA  # noqa: E402

# The files that take a minute or more, longest first (`pytest --durations=30`, summed per file, on
# the 2-core CPU: about 210, 145, 105, 100, 100, 80 and 60 s); refresh when a file grows past a minute.
LONGEST = (
    "test_experiments.py",
    "test_grid.py",
    "test_remote.py",
    "test_pipeline.py",
    "test_distributed.py",
    "test_links.py",
    "test_real_photos.py",
)


def pytest_collection_modifyitems(config, items) -> None:
    """The longest files first. Under `--dist loadfile` a file runs whole on one worker, in
    collection order: test_remote, collected late (alphabetically), started when the other worker
    had little left and ran alone for the suite's last two minutes."""
    rank = {name: i for i, name in enumerate(LONGEST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST)))  # stable: the rest keep their order


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto`: one worker per core this process may use (taskset, a container's CPU set), not
    the machine's count, nor psutil's physical cores."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@pytest.fixture
def sample_archive() -> Path:
    """The 1,000-photo sample of the Kaggle training set (Kaggle layout); the test is skipped without it."""
    path = SHARED_DATA / "dogs-vs-cats-sample" / "train.zip"
    if not path.is_file():
        pytest.skip(f"the real-photo sample is absent ({path.relative_to(REPO.parent)} beside the repository)")
    return path


@pytest.fixture(scope="module")
def nin_file(tmp_path_factory) -> Path:
    """A model file as train writes it: NiN, untrained (seeded), 72 px, cat and dog."""
    import torch

    from pipeline import models
    from pipeline.models import modelfile

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "nin.pt"
    meta = {"image_size": 72, "resize": "crop", "channels": 3, "classes": ["cat", "dog"], "device": "cpu", "epochs": 1}
    modelfile.save(path, models.build("nin"), name="nin", options={}, meta=meta)
    return path
