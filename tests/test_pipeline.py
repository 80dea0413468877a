"""End to end with the real `dvc` CLI, in a temporary git + DVC copy of the project, on an archive
the test builds: `dvc repro` of the whole zoo, its metrics, `dvc exp show`, `dvc plots show` and
predict, as a user would type them. Experiments on a baseline (`dvc exp run`, `dvc metrics diff`,
`dvc plots diff`, the queue): test_experiments, on a project of two models, in parallel with this."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pipeline import models
from pipeline.data import synthetic
from tests.archives import THUMBS_DB
from tests.helpers import REPO, copy_project, dvc, run, set_params, vega_plots

pytestmark = pytest.mark.slow  # `pytest -m "not slow"` leaves these out of a quick loop

DENSE = ("alexnet", "alexnet_bn", "vgg11", "vgg11_bn")
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
            # AlexNet's and VGG's dense layers 64 wide, not 4096: 4 M and 11 M weights, not 47 M and 129 M,
            # whose saving, hashing and loading took most of this run (the widths' own test: test_models)
            "models": {"resnet50": {"pretrained": False}, **{m: {"dense": 64} for m in DENSE}},
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


def test_repro_trains_and_evaluates_every_architecture(reproduced: Path):
    summary = json.loads((reproduced / "data/split/summary.json").read_text())
    assert summary["rejects"] == {"empty file": 1, "no class in its path": 1}
    test_images = sum(summary["images"]["test"].values())
    assert summary["images"]["test"] == {"cat": 4, "dog": 4}
    for name in models.names():
        m = json.loads((reproduced / "results" / f"{name}.json").read_text())
        t = m["test"]
        assert t["images"] == test_images and 0 <= t["accuracy"] <= 1
        assert sum(sum(row.values()) for row in t["confusion"].values()) == test_images
        assert set(t["precision"]) == set(t["recall"]) == set(t["f1"]) == {"cat", "dog"}
        assert m["train"]["epochs"] == 1 and m["train"]["images_per_second"] > 0 and m["device"].startswith("cpu")
        counts = [r for r in csv_rows(reproduced / "plots" / "confusion.csv") if r["model"] == name]
        assert [(r["actual"], r["predicted"]) for r in counts] == [
            ("cat", "cat"),
            ("cat", "dog"),
            ("dog", "cat"),
            ("dog", "dog"),
        ]
        assert sum(int(r["count"]) for r in counts) == test_images
    epochs = json.loads((reproduced / "dvclive" / "plots" / "custom" / "epochs.json").read_text())
    assert [(r["model"], r["epoch"]) for r in epochs] == [(name, 1) for name in models.names()]  # epochs count from 1
    board = json.loads((reproduced / "reports" / "leaderboard.json").read_text())
    assert sorted(r["model"] for r in board["models"]) == sorted(models.names())
    extra = {"meta.json": ""}
    torch.export.load(reproduced / "exports" / "best.pt2", extra_files=extra)  # the export stage: the best model
    assert json.loads(extra["meta.json"])["model"] == board["best"]
    page = (reproduced / "reports" / "index.html").read_text()
    assert all(f'<section id="{name}">' in page for name in models.names())
    assert dvc(reproduced, "status").stdout.strip() == "Data and pipelines are up to date."
    assert run(reproduced, "git", "status", "--porcelain").stdout == ""  # DVC ignored every cached output
    # no model shares an inode with DVC's cache or the resume state (.dvc/config's cache.type = reflink,copy): a
    # write into one name cannot corrupt the others (docs/running.md, Disk)
    for path in (reproduced / "models").iterdir():
        copied = reproduced / "resume" / f"{path.stem}.weights.pt"
        assert path.stat().st_nlink == 1 and copied.stat().st_nlink == 1 and copied.read_bytes() == path.read_bytes(), (
            path
        )
    in_git = run(reproduced, "git", "ls-files", "metrics.json", "plots", "dvclive").stdout.split()
    assert in_git == [
        "dvclive/metrics.json",
        "dvclive/plots/custom/epochs.json",
        "metrics.json",
        "plots/confusion.csv",
        "plots/roc.csv",
    ]


def test_metrics_are_a_few_numbers_per_model_under_short_keys(reproduced: Path):
    shown = json.loads(dvc(reproduced, "metrics", "show", "--json").stdout)[""]["data"]
    assert list(shown) == ["metrics.json"]  # the split summary, DVCLive's summary, the leaderboard: plain files
    tracked = shown["metrics.json"]["data"]
    assert list(tracked) == ["acc", "auc", "log_loss", "f1", "train_s", "img_s", "best"]
    for key, by_model in tracked.items():
        if key != "best":
            assert list(by_model) == models.names() and all(isinstance(v, (int, float)) for v in by_model.values())
    board = json.loads((reproduced / "reports" / "leaderboard.json").read_text())
    assert tracked["best"] == board["best"]
    assert tracked["acc"][board["best"]] == max(tracked["acc"].values())
    results = {name: json.loads((reproduced / "results" / f"{name}.json").read_text()) for name in models.names()}
    assert tracked["acc"] == {name: round(r["test"]["accuracy"], 4) for name, r in results.items()}
    # DVC's own table: short headers, every model's test accuracy first
    table = dvc(reproduced, "exp", "show", "--csv").stdout.splitlines()[0].split(",")
    assert table[table.index("acc.alexnet") :][: len(models.names())] == [f"acc.{name}" for name in models.names()]


# the ids of dvc.yaml's chart definitions (`- <id>: {template, x, y, ...}`), not its image paths
TOP_LEVEL_CHARTS = [
    next(iter(d)) for d in yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"] if isinstance(d, dict)
]


def test_every_chart_renders_every_model_with_a_title_and_labelled_axes(reproduced: Path, tmp_path: Path):
    specs, errors = vega_plots(reproduced, "show")
    assert errors == []
    assert sorted(specs) == sorted(TOP_LEVEL_CHARTS)  # one chart per definition: no per-file chart, no other
    for pid, spec in specs.items():
        values = spec["data"]["values"]
        assert {v["model"] for v in values} == set(models.names()), pid  # every trained model, on one chart
        assert spec["title"]["text"] == pid
        x = (spec.get("spec") or spec.get("layer", [spec])[0])["encoding"]["x"]
        assert x["title"] and "<DVC" not in json.dumps(spec)  # every anchor filled: titles, labels, fields
        if x["field"] == "epoch":
            assert min(int(v["epoch"]) for v in values) == 1
    images = json.loads(dvc(reproduced, "plots", "show", "--json").stdout)["data"]
    for name in models.names():
        assert {f"plots/images/{kind}/{name}.png" for kind in ("confusion", "most_wrong", "gradcam")} <= set(images)
    shown = dvc(reproduced, "plots", "show", "-o", str(tmp_path / "dvc_plots"))
    assert "WARNING" not in shown.stderr and "ERROR" not in shown.stderr and "failed" not in shown.stderr
    assert (
        "Confusion matrices on the test split: share of each actual class"
        in (tmp_path / "dvc_plots" / "index.html").read_text()
    )


def test_predict_agrees_with_evaluate_on_the_test_split(reproduced: Path, tmp_path: Path):
    out = tmp_path / "predictions.csv"
    done = run(
        reproduced,
        sys.executable,
        "-m",
        "pipeline.predict",
        "--model",
        "resnet18",
        "data/raw/images.zip",
        "--out",
        str(out),
    )
    assert "predict: 34 photos with resnet18" in done.stderr  # 32 photos, an empty file and Thumbs.db
    rows = {r["file"].split(":", 1)[1]: r for r in csv_rows(out)}
    test = csv_rows(reproduced / "data" / "split" / "test.csv")
    labels = [t["label"] for t in test]
    predicted = [rows[t["member"]] for t in test]
    evaluated = json.loads((reproduced / "results" / "resnet18.json").read_text())["test"]
    assert sum(p["label"] == label for p, label in zip(predicted, labels)) / len(test) == evaluated["accuracy"]
    confusion = {
        a: {c: sum(p["label"] == c for p, label in zip(predicted, labels) if label == a) for c in ("cat", "dog")}
        for a in ("cat", "dog")
    }
    assert confusion == evaluated["confusion"]  # photo by photo, the same calls
    assert rows["train/cat.9999.jpg"]["error"] == "empty file"
