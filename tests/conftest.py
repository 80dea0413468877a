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

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tests.paths import REPO, SHARED_DATA  # noqa: E402  (not tests.helpers: see tests/paths.py)

# Seconds per file of a whole run, kept in git for a fresh clone (CI's): `python -m pytest
# --store-durations` rewrites it. Only the order of the files depends on it, never a result.
STORED = Path(__file__).with_name("durations.json")
# A file in neither this clone's cache nor STORED (a new one) is guessed from its tests: a test
# marked slow runs the real dvc, torchrun or a fresh interpreter (seconds to a minute), any other
# takes a fraction of a second.
GUESS = {"slow": 20.0, "other": 0.3}


def pytest_addoption(parser) -> None:
    parser.addoption(
        "--store-durations",
        action="store_true",
        help=f"after a whole run, write each file's seconds to {STORED.relative_to(REPO)} (the order of a fresh clone)",
    )


def pytest_collection_modifyitems(config, items) -> None:
    """The longest files first. Under `--dist loadfile` a file runs whole on one worker, in
    collection order: a long file started last (test_remote, in a fresh clone whose guess said 20 s)
    ran alone for the suite's last minute. A file's seconds come from this clone's last whole run
    (pytest's cache, written below), else from STORED, else from the guess above."""
    cache = getattr(config, "cache", None)  # none under -p no:cacheprovider
    stored = json.loads(STORED.read_text()) if STORED.is_file() else {}
    seconds = {**stored, **(cache.get("durations/files", {}) if cache else {})}
    guess: dict[str, float] = {}
    for item in items:
        kind = "slow" if item.get_closest_marker("slow") else "other"
        guess[item.path.name] = guess.get(item.path.name, 0.0) + GUESS[kind]
    cost = {name: seconds.get(name, g) for name, g in guess.items()}
    items.sort(key=lambda item: -cost[item.path.name])  # stable: a file's tests keep their order


_durations: dict[str, float] = {}  # file → seconds, this run


def pytest_runtest_logreport(report) -> None:
    """Each file's seconds (setup, call and teardown of its tests), summed where the results arrive:
    in the controller under xdist."""
    file = report.nodeid.split("::")[0].rsplit("/", 1)[-1]
    _durations[file] = _durations.get(file, 0.0) + report.duration


def pytest_sessionfinish(session) -> None:
    """Kept after a whole run only: a file's seconds under -k or -m would be a part of it."""
    option = session.config.option
    whole = not option.keyword and not option.markexpr and session.config.args == session.config.getini("testpaths")
    if os.environ.get("PYTEST_XDIST_WORKER") or not _durations or not whole:
        return
    if cache := getattr(session.config, "cache", None):
        known = cache.get("durations/files", {})
        cache.set("durations/files", {**known, **{f: round(s, 2) for f, s in _durations.items()}})
    if session.config.getoption("store_durations"):
        from pipeline.common import atomic

        atomic.write_text(STORED, json.dumps({f: round(s, 1) for f, s in sorted(_durations.items())}, indent=1) + "\n")


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
