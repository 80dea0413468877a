"""End to end with the real `dvc` CLI, in a temporary git + DVC copy of the project, on an archive
the test builds: `dvc repro` of the whole zoo, then `dvc exp run -S model=...`, `dvc metrics diff`,
`dvc exp show` and `dvc plots show`, as a user would type them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from pipeline import models, synthetic
from tests.archives import THUMBS_DB
from tests.helpers import copy_project, dvc, run, set_params

pytestmark = pytest.mark.slow  # `pytest -m 'not slow'` leaves these out of a quick loop

PER_CLASS = 16  # 32 images: 16 train, 8 val, 8 test with the fractions below


def csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A fresh clone-alike: the project's tracked files, git and DVC initialised, small params."""
    root = copy_project(tmp_path_factory.mktemp("project"))
    # The archive a user would point data.source at: Kaggle layout, plus the junk real ones hold.
    archive = tmp_path_factory.mktemp("downloads") / "train.zip"
    synthetic.make_archive(archive, per_class=PER_CLASS, size=80)
    import zipfile

    with zipfile.ZipFile(archive, "a") as z:
        z.writestr("train/cat.9999.jpg", b"")  # zero bytes
        z.writestr("train/Thumbs.db", THUMBS_DB)
    set_params(
        root,
        {
            "data": {"source": str(archive), "image_size": 72, "val_fraction": 0.25, "test_fraction": 0.25},
            "train": {"epochs": 1, "batch_size": 8},
            "models": {"resnet50": {"pretrained": False}},
        },
    )
    run(root, "git", "init", "-q", "-b", "main")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "project")
    return root


@pytest.fixture(scope="module")
def reproduced(repo: Path) -> Path:
    dvc(repo, "repro")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "baseline: the whole zoo, 1 epoch")
    return repo


@pytest.fixture
def experimenting(reproduced: Path):
    """The reproduced project, for a test that runs experiments in its workspace: put back as the
    baseline commit left it afterwards, so that every test sees the same project in any order."""
    yield reproduced
    run(reproduced, "git", "checkout", "--", ".")
    run(reproduced, "git", "clean", "-fdq")  # untracked, not ignored: e.g. a `dvc plots show -o` folder
    dvc(reproduced, "checkout", "--force")


def test_repro_trains_and_evaluates_every_architecture(reproduced: Path):
    summary = json.loads((reproduced / "data/split/summary.json").read_text())
    assert summary["rejects"] == {"empty file": 1, "no class in its path": 1}
    test_images = sum(summary["images"]["test"].values())
    assert summary["images"]["test"] == {"cat": 4, "dog": 4}
    for name in models.names():
        m = json.loads((reproduced / "metrics" / f"{name}.json").read_text())
        t = m["test"]
        assert t["images"] == test_images and 0 <= t["accuracy"] <= 1
        assert sum(sum(row.values()) for row in t["confusion"].values()) == test_images
        assert set(t["precision"]) == set(t["recall"]) == set(t["f1"]) == {"cat", "dog"}
        assert m["train"]["epochs"] == 1 and m["train"]["images_per_second"] > 0 and m["device"].startswith("cpu")
        rows = csv_rows(reproduced / "plots" / "confusion" / f"{name}.csv")
        assert len(rows) == test_images and set(rows[0]) == {"actual", "predicted"}
        assert (reproduced / "dvclive" / "plots" / "metrics" / name / "val" / "accuracy.tsv").exists()
    board = json.loads((reproduced / "reports" / "leaderboard.json").read_text())
    assert sorted(r["model"] for r in board["models"]) == sorted(models.names())
    page = (reproduced / "reports" / "index.html").read_text()
    assert all(f'<section id="{name}">' in page for name in models.names())
    assert dvc(reproduced, "status").stdout.strip() == "Data and pipelines are up to date."
    assert run(reproduced, "git", "status", "--porcelain").stdout == ""  # DVC ignored every output


def test_plots_show_draws_every_model_confusion_twice_its_pictures_and_curves(reproduced: Path, tmp_path: Path):
    shown = dvc(reproduced, "plots", "show", "-o", str(tmp_path / "dvc_plots"))
    assert "WARNING" not in shown.stderr and "ERROR" not in shown.stderr and "failed" not in shown.stderr
    page = (tmp_path / "dvc_plots" / "index.html").read_text()
    for name in models.names():
        assert f'"dvc.yaml::plots/confusion/{name}.csv"' in page  # counts (top-level `plots:`)
        assert f'"plots/confusion/{name}.csv"' in page  # normalised (evaluate's `plots:`)
        assert f"<p>plots/images/confusion/{name}.png</p>" in page and f"<p>plots/images/most_wrong/{name}.png</p>" in page
        assert f'"dvclive/plots/metrics/{name}/val/accuracy.tsv"' in page
    assert "percent_of_y" in page  # the confusion_normalized template's share per actual class
    assert "<p>reports/accuracy_vs_time.png</p>" in page
    static = {p.name for p in (tmp_path / "dvc_plots" / "static").iterdir()}
    assert {f"workspace_plots_images_most_wrong_{name}.png" for name in models.names()} <= static
    best = json.loads(dvc(reproduced, "metrics", "show", "--json").stdout)[""]["data"]["reports/leaderboard.json"]
    assert best["data"]["best"] == json.loads((reproduced / "reports" / "leaderboard.json").read_text())["best"]


def test_an_experiment_on_one_model_trains_only_it_and_metrics_diff_shows_the_change(experimenting: Path):
    reproduced = experimenting
    out = dvc(reproduced, "exp", "run", "-S", "model=resnet18", "-S", "train.epochs=2", "-S", "train.lr=0.0123").stdout
    # the effective recipe, printed by check before anything trains: the new rate reached the model
    assert any(line.split()[0:3:2] == ["resnet18", "0.0123"] for line in out.splitlines() if line.strip()), out
    assert sorted(p.name for p in (reproduced / "models").iterdir()) == ["resnet18.pt"]
    assert sorted(p.name for p in (reproduced / "metrics").iterdir()) == ["resnet18.json"]
    board = json.loads((reproduced / "reports" / "leaderboard.json").read_text())
    assert [r["model"] for r in board["models"]] == ["resnet18"] and board["best"] == "resnet18"
    page = (reproduced / "reports" / "index.html").read_text()
    assert '<section id="resnet18">' in page and '<section id="alexnet">' not in page

    diff = json.loads(dvc(reproduced, "metrics", "diff", "--json").stdout)
    assert diff["metrics/resnet18.json"]["train.epochs"] == {"old": 1, "new": 2, "diff": 1}
    every = json.loads(dvc(reproduced, "metrics", "diff", "--all", "--json").stdout)["metrics/resnet18.json"]
    assert {"test.accuracy", "test.roc_auc", "test.confusion.cat.dog", "train.seconds"} <= set(every)

    rows = json.loads(dvc(reproduced, "exp", "show", "--json").stdout)
    experiments = [x["revs"][0]["data"] for row in rows for x in row.get("experiments") or []]
    assert [e["params"]["params.yaml"]["data"]["model"] for e in experiments] == ["resnet18"]
    assert experiments[0]["params"]["params.yaml"]["data"]["train"]["epochs"] == 2
    assert experiments[0]["metrics"]["metrics/resnet18.json"]["data"]["train"]["epochs"] == 2
    dvc(reproduced, "plots", "show", "-o", "dvc_plots")
    page = (reproduced / "dvc_plots" / "index.html").read_text()
    assert "resnet18" in page


def test_an_unknown_model_fails_at_once_naming_the_valid_ones(experimenting: Path):
    reproduced = experimenting
    result = dvc(reproduced, "exp", "run", "-S", "model=resnet5O", check=False)
    assert result.returncode != 0
    assert "model = 'resnet5O'" in result.stderr + result.stdout
    assert all(name in result.stderr + result.stdout for name in models.names())
    assert "Running stage 'check'" in result.stdout
    assert "Running stage" not in result.stdout.split("Running stage 'check'")[1]  # check stopped it: nothing else ran
