"""End to end with the real `dvc` CLI, in a temporary git + DVC copy of the project, on an archive
the test builds: `dvc repro` of the whole zoo, then `dvc exp run -S model=...`, `dvc metrics diff`,
`dvc exp show` and `dvc plots show`, as a user would type them."""

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
from tests.helpers import REPO, copy_project, dvc, run, set_params

pytestmark = pytest.mark.slow  # `pytest -m "not slow"` leaves these out of a quick loop

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
        m = json.loads((reproduced / "results" / f"{name}.json").read_text())
        t = m["test"]
        assert t["images"] == test_images and 0 <= t["accuracy"] <= 1
        assert sum(sum(row.values()) for row in t["confusion"].values()) == test_images
        assert set(t["precision"]) == set(t["recall"]) == set(t["f1"]) == {"cat", "dog"}
        assert m["train"]["epochs"] == 1 and m["train"]["images_per_second"] > 0 and m["device"].startswith("cpu")
        counts = [r for r in csv_rows(reproduced / "plots" / "confusion.csv") if r["model"] == name]
        assert [(r["actual"], r["predicted"]) for r in counts] == [("cat", "cat"), ("cat", "dog"), ("dog", "cat"), ("dog", "dog")]
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
    # .dvc/config's cache.type: each model is one file on disk, the workspace's name a read-only hardlink into the cache
    for path in (reproduced / "models").iterdir():
        assert path.stat().st_nlink == 2 and path.stat().st_mode & 0o222 == 0, path
    in_git = run(reproduced, "git", "ls-files", "metrics.json", "plots", "dvclive").stdout.split()
    assert in_git == ["dvclive/metrics.json", "dvclive/plots/custom/epochs.json", "metrics.json", "plots/confusion.csv", "plots/roc.csv"]


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


def vega_plots(repo: Path, *args: str) -> tuple[dict, list]:
    """{plot id: Vega-Lite spec} of every data chart `dvc plots show|diff --json` renders, and its errors."""
    shown = json.loads(dvc(repo, "plots", *args, "--json").stdout)
    specs = {pid: items[0]["content"] for pid, items in shown["data"].items() if items[0]["type"] == "vega"}
    return specs, shown.get("errors") or []


# the ids of dvc.yaml's chart definitions (`- <id>: {template, x, y, ...}`), not its image paths
TOP_LEVEL_CHARTS = [next(iter(d)) for d in yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"] if isinstance(d, dict)]


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
    assert "Confusion matrices on the test split: share of each actual class" in (tmp_path / "dvc_plots" / "index.html").read_text()


def test_an_experiment_on_one_model_trains_only_it_and_diffs_show_the_change(experimenting: Path):
    reproduced = experimenting
    out = dvc(reproduced, "exp", "run", "-n", "longer", "-S", "model=resnet18", "-S", "train.epochs=2", "-S", "train.lr=0.0123").stdout
    # the effective recipe, printed by check before anything trains: the new rate reached the model
    assert any(line.split()[0:3:2] == ["resnet18", "0.0123"] for line in out.splitlines() if line.strip()), out
    assert "    resnet18 4 steps in all: not timed" in out  # 2 epochs of 16 photos at batch 8: trained, not timed
    assert sorted(p.name for p in (reproduced / "models").iterdir()) == ["resnet18.pt"]
    assert sorted(p.name for p in (reproduced / "results").iterdir()) == ["resnet18.json"]
    board = json.loads((reproduced / "reports" / "leaderboard.json").read_text())
    assert [r["model"] for r in board["models"]] == ["resnet18"] and board["best"] == "resnet18"
    page = (reproduced / "reports" / "index.html").read_text()
    assert '<section id="resnet18">' in page and '<section id="alexnet">' not in page

    # against the last commit (metrics.json is in git: this works in a fresh clone too)
    diff = json.loads(dvc(reproduced, "metrics", "diff", "--json").stdout)["metrics.json"]
    assert diff["train_s.resnet18"]["new"] > 0 and diff["train_s.resnet18"]["old"] > 0
    assert diff["acc.alexnet"]["new"] is None  # not trained in this experiment
    every = json.loads(dvc(reproduced, "exp", "diff", "--all", "--json").stdout)  # params beside the metrics
    assert {"acc.resnet18", "train_s.resnet18"} <= set(every["metrics"]["metrics.json"])
    assert every["params"]["params.yaml"]["train.lr"] == {"old": 0.002, "new": 0.0123, "diff": 0.0103}

    rows = json.loads(dvc(reproduced, "exp", "show", "--json").stdout)
    experiments = [x["revs"][0]["data"] for row in rows for x in row.get("experiments") or []]
    assert [e["params"]["params.yaml"]["data"]["model"] for e in experiments] == ["resnet18"]
    assert experiments[0]["params"]["params.yaml"]["data"]["train"]["epochs"] == 2
    assert list(experiments[0]["metrics"]["metrics.json"]["data"]["acc"]) == ["resnet18"]
    # two epochs now: `dvc plots diff` draws the baseline and the experiment on the same charts
    specs, errors = vega_plots(reproduced, "diff", "HEAD", "longer")
    assert errors == []
    curves = specs["Validation accuracy per epoch"]["data"]["values"]
    assert {(v["rev"], v["model"], int(v["epoch"])) for v in curves if v["model"] == "resnet18"} == {("HEAD", "resnet18", 1), ("longer", "resnet18", 1), ("longer", "resnet18", 2)}
    assert {v["rev"] for v in specs["ROC curves on the test split (two classes: the second, dog, positive; more: one-vs-rest macro average)"]["data"]["values"]} == {"HEAD", "longer"}


def test_predict_agrees_with_evaluate_on_the_test_split(reproduced: Path, tmp_path: Path):
    out = tmp_path / "predictions.csv"
    done = run(reproduced, sys.executable, "-m", "pipeline.predict", "--model", "resnet18", "data/raw/images.zip", "--out", str(out))
    assert "predict: 34 photos with resnet18" in done.stderr  # 32 photos, an empty file and Thumbs.db
    rows = {r["file"].split(":", 1)[1]: r for r in csv_rows(out)}
    test = csv_rows(reproduced / "data" / "split" / "test.csv")
    labels = [t["label"] for t in test]
    predicted = [rows[t["member"]] for t in test]
    evaluated = json.loads((reproduced / "results" / "resnet18.json").read_text())["test"]
    assert sum(p["label"] == label for p, label in zip(predicted, labels)) / len(test) == evaluated["accuracy"]
    confusion = {a: {c: sum(p["label"] == c for p, label in zip(predicted, labels) if label == a) for c in ("cat", "dog")} for a in ("cat", "dog")}
    assert confusion == evaluated["confusion"]  # photo by photo, the same calls
    assert rows["train/cat.9999.jpg"]["error"] == "empty file"


def test_an_unknown_model_fails_at_once_naming_the_valid_ones(experimenting: Path):
    reproduced = experimenting
    result = dvc(reproduced, "exp", "run", "-S", "model=resnet5O", check=False)
    assert result.returncode != 0
    assert "model = 'resnet5O'" in result.stderr + result.stdout
    assert all(name in result.stderr + result.stdout for name in models.names())
    assert "Running stage 'check'" in result.stdout
    assert "Running stage" not in result.stdout.split("Running stage 'check'")[1]  # check stopped it: nothing else ran


def test_the_courses_first_mistake_is_an_experiment_that_reevaluates_only_and_compare_pairs_it(experimenting: Path):
    reproduced = experimenting
    out = dvc(reproduced, "exp", "run", "-n", "no-eval", "-S", "evaluate.eval_mode=false", "-S", "evaluate.order=sorted", "-S", "evaluate.batch_size=4").stdout
    assert "warning: evaluate.eval_mode = false: the course's mistake (a), on purpose" in out and "sorted in batches of 4" in out
    assert "Stage 'train' didn't change, skipping" in out and "Running stage 'evaluate'" in out  # the trained weights are reused
    result = json.loads((reproduced / "results" / "resnet18.json").read_text())
    assert result["evaluation"] == {"eval_mode": False, "order": "sorted", "batch_size": 4}
    table = run(reproduced, sys.executable, "-m", "pipeline.compare", "HEAD", "no-eval", "--model", "resnet18").stdout
    baseline, mistaken = (line for line in table.splitlines() if line.startswith(("| HEAD ", "| no-eval ")))
    assert "| (baseline) |" in baseline  # the first is what the others are compared with
    right = sum(p == y for p, y in zip(result["predicted"], result["labels"]))
    assert f"| {right / len(result['labels']):.3f} (" in mistaken  # the experiment's own accuracy, read at its revision


def test_seeds_run_as_queued_experiments_and_their_summary_is_their_metrics(experimenting: Path, tmp_path: Path):
    reproduced = experimenting
    done = run(reproduced, sys.executable, "-m", "pipeline.seeds", "run", "tiny", "--seeds", "2", "-S", "model=[resnet18,nin]")
    assert done.stdout.count("dvc exp run --queue -n tiny-seed") == 2 and "seeds: all 2 done" in done.stdout
    assert [line.split()[1] for line in done.stdout.splitlines() if line.startswith("seeds: tiny-seed")] != []
    shown = json.loads(dvc(reproduced, "exp", "show", "--json").stdout)
    runs = {rev["name"]: rev["data"] for row in shown for x in row.get("experiments") or [] for rev in x["revs"] if (rev.get("name") or "").startswith("tiny-seed")}
    assert sorted(runs) == ["tiny-seed0", "tiny-seed1"]
    assert sorted(r["params"]["params.yaml"]["data"]["train"]["seed"] for r in runs.values()) == [0, 1]
    run(reproduced, sys.executable, "-m", "pipeline.seeds", "summary", "tiny", "--json", str(tmp_path / "seeds.json"))
    summary = json.loads((tmp_path / "seeds.json").read_text())
    for model in ("resnet18", "nin"):
        accuracies = [r["metrics"]["metrics.json"]["data"]["acc"][model] for r in runs.values()]
        assert summary["metrics"]["acc"][model]["mean"] == pytest.approx(sum(accuracies) / 2)
        assert (summary["metrics"]["acc"][model]["min"], summary["metrics"]["acc"][model]["max"]) == (min(accuracies), max(accuracies))
    (pair,) = summary["pairs"]
    assert pair["seeds"] == 2 and len(pair["differences"]) == 2
    assert (reproduced / "params.yaml").read_text() == run(reproduced, "git", "show", "HEAD:params.yaml").stdout  # the workspace left alone
