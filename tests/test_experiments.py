"""Experiments the DVC way, with the real `dvc` CLI, on a committed baseline of two models (NiN and
ResNet-18, one epoch, a 32-photo archive the test builds): `dvc exp run -S ...` retrains only what
a param changed, `dvc metrics diff`, `dvc exp diff`, `dvc plots diff`, the course's first mistake
as an evaluation-only experiment, and seeds through the real queue. (The whole zoo: test_pipeline.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from pipeline import models
from tests.helpers import committed_project, dvc, run, vega_plots

pytestmark = pytest.mark.slow  # `pytest -m "not slow"` leaves these out of a quick loop


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory) -> Path:
    """A fresh clone-alike with NiN and ResNet-18 reproduced and committed: the baseline."""
    params = {
        "model": ["nin", "resnet18"],
        "data": {"image_size": 72, "val_fraction": 0.25, "test_fraction": 0.25},
        "train": {"epochs": 1, "batch_size": 8},
    }
    root = committed_project(tmp_path_factory, "project", params, per_class=16, size=80)  # 16 train, 8 val, 8 test
    dvc(root, "repro")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "baseline: nin and resnet18, 1 epoch")
    return root


@pytest.fixture
def experimenting(reproduced: Path):
    """The reproduced project, for a test that runs experiments in its workspace: put back as the
    baseline commit left it afterwards, so that every test sees the same project in any order."""
    yield reproduced
    run(reproduced, "git", "checkout", "--", ".")
    run(reproduced, "git", "clean", "-fdq")  # untracked, not ignored: e.g. a `dvc plots show -o` folder
    dvc(reproduced, "checkout", "--force")


def test_an_experiment_on_one_model_trains_only_it_and_diffs_show_the_change(experimenting: Path):
    reproduced = experimenting
    out = dvc(
        reproduced,
        "exp",
        "run",
        "-n",
        "longer",
        "-S",
        "model=resnet18",
        "-S",
        "train.epochs=2",
        "-S",
        "train.lr=0.0123",
    ).stdout
    # the effective recipe, printed by check before anything trains: the new rate reached the model
    assert any(line.split()[0:3:2] == ["resnet18", "0.0123"] for line in out.splitlines() if line.strip()), out
    assert "    resnet18 4 steps in all: not timed" in out  # 2 epochs of 16 photos at batch 8: trained, not timed
    assert sorted(p.name for p in (reproduced / "models").iterdir()) == ["resnet18.pt"]
    assert sorted(p.name for p in (reproduced / "results").iterdir()) == ["resnet18.json"]
    board = json.loads((reproduced / "reports" / "leaderboard.json").read_text())
    assert [r["model"] for r in board["models"]] == ["resnet18"] and board["best"] == "resnet18"
    page = (reproduced / "reports" / "index.html").read_text()
    assert '<section id="resnet18">' in page and '<section id="nin">' not in page

    # against the last commit (metrics.json is in git: this works in a fresh clone too)
    diff = json.loads(dvc(reproduced, "metrics", "diff", "--json").stdout)["metrics.json"]
    assert diff["train_s.resnet18"]["new"] > 0 and diff["train_s.resnet18"]["old"] > 0
    assert diff["acc.nin"]["new"] is None  # not trained in this experiment
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
    assert {(v["rev"], v["model"], int(v["epoch"])) for v in curves if v["model"] == "resnet18"} == {
        ("HEAD", "resnet18", 1),
        ("longer", "resnet18", 1),
        ("longer", "resnet18", 2),
    }
    assert {
        v["rev"]
        for v in specs[
            "ROC curves on the test split (two classes: the second, dog, positive; more: one-vs-rest macro average)"
        ]["data"]["values"]
    } == {"HEAD", "longer"}


def test_a_code_change_reruns_the_stages_that_import_it_and_no_other(experimenting: Path):
    # dvc.yaml's code deps come from the imports (python -m pipeline.deps): the real dvc says what is stale
    def stale() -> set[str]:
        return {name.split(":")[-1] for name in json.loads(dvc(experimenting, "status", "--json").stdout)}

    assert stale() == set()
    page = experimenting / "pipeline" / "evaluation" / "page.py"
    page.write_text(page.read_text() + "\n# an edit\n")
    assert stale() == {"report"}  # the HTML pages: only the report draws one
    workers = experimenting / "pipeline" / "data" / "workers.py"
    workers.write_text(workers.read_text() + "\n# an edit\n")
    assert stale() == {"report", "split", "preprocess"}  # the process pools that decode the photos


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
    out = dvc(
        reproduced,
        "exp",
        "run",
        "-n",
        "no-eval",
        "-S",
        "evaluate.eval_mode=false",
        "-S",
        "evaluate.order=sorted",
        "-S",
        "evaluate.batch_size=4",
    ).stdout
    assert (
        "warning: evaluate.eval_mode = false: the course's mistake (a), on purpose" in out
        and "sorted in batches of 4" in out
    )
    assert (
        "Stage 'train' didn't change, skipping" in out and "Running stage 'evaluate'" in out
    )  # the trained weights are reused
    result = json.loads((reproduced / "results" / "resnet18.json").read_text())
    assert result["evaluation"] == {"eval_mode": False, "order": "sorted", "batch_size": 4, "tta": False}
    table = run(reproduced, sys.executable, "-m", "pipeline.compare", "HEAD", "no-eval", "--model", "resnet18").stdout
    baseline, mistaken = (line for line in table.splitlines() if line.startswith(("| HEAD ", "| no-eval ")))
    assert "| (baseline) |" in baseline  # the first is what the others are compared with
    right = sum(p == y for p, y in zip(result["predicted"], result["labels"]))
    assert f"| {right / len(result['labels']):.3f} (" in mistaken  # the experiment's own accuracy, read at its revision


def test_seeds_run_as_queued_experiments_and_their_summary_is_their_metrics(experimenting: Path, tmp_path: Path):
    # One seed, 0, whose recipe is the baseline's: DVC's run cache serves every stage, so what is tested
    # is the seeds command's own work (queue, worker, wait, summary) against numbers known beforehand,
    # the baseline's. Training in the queue is the grid's test; a summary over several seeds, test_seeds.
    reproduced = experimenting
    done = run(
        reproduced,
        sys.executable,
        "-m",
        "pipeline.seeds",
        "run",
        "tiny",
        "--seeds",
        "1",
        "--poll",
        "2",
        "-S",
        "model=[nin,resnet18]",  # a flag passed on: the baseline's list
    )
    assert done.stdout.count("dvc exp run --queue -n tiny-seed") == 1 and "seeds: all 1 done" in done.stdout
    assert "seeds: tiny-seed0 done (1 of 1)" in done.stdout
    shown = json.loads(dvc(reproduced, "exp", "show", "--json").stdout)
    runs = {
        rev["name"]: rev["data"]
        for row in shown
        for x in row.get("experiments") or []
        for rev in x["revs"]
        if (rev.get("name") or "").startswith("tiny-seed")
    }
    assert list(runs) == ["tiny-seed0"] and runs["tiny-seed0"]["params"]["params.yaml"]["data"]["train"]["seed"] == 0
    baseline = json.loads((reproduced / "metrics.json").read_text())
    assert runs["tiny-seed0"]["metrics"]["metrics.json"]["data"]["acc"] == baseline["acc"]
    run(reproduced, sys.executable, "-m", "pipeline.seeds", "summary", "tiny", "--json", str(tmp_path / "seeds.json"))
    summary = json.loads((tmp_path / "seeds.json").read_text())
    assert summary["experiments"] == {"tiny-seed0": 0}
    for model in ("resnet18", "nin"):
        accuracy = baseline["acc"][model]
        assert summary["metrics"]["acc"][model] == {
            "mean": accuracy,
            "sd": 0.0,
            "min": accuracy,
            "max": accuracy,
            "seeds": 1,
        }
    (pair,) = summary["pairs"]
    assert pair["seeds"] == 1 and pair["p_value"] is None  # one seed: a difference, no test
    assert pair["differences"] == [pytest.approx(baseline["acc"][pair["a"]] - baseline["acc"][pair["b"]])]
    assert (reproduced / "params.yaml").read_text() == run(
        reproduced, "git", "show", "HEAD:params.yaml"
    ).stdout  # the workspace left alone
