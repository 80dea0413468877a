"""What a person sees comparing experiments: the real `dvc exp show` on metrics.json as evaluate
writes it for the whole zoo, in a small DVC project whose one stage writes that file from made-up
results (training the zoo twice more would take minutes and show the same table)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from pipeline import models
from tests.helpers import documentation, dvc, run

pytestmark = pytest.mark.slow  # `pytest -m "not slow"` leaves these out of a quick loop

# The stage: metrics.json for every architecture, from results that depend on train.lr and the seed.
STAGE = """
import json, random, sys
import yaml
from pipeline import models
from pipeline.evaluation import results
from tests.helpers import result

p = yaml.safe_load(open("params.yaml"))
rng = random.Random(f"{p['train']['lr']} {p['train']['seed']}")
NAMES = models.names()
found = [result(name, rng.uniform(0.7, 0.85), rng.uniform(0.3, 0.6), seconds=rng.uniform(100, 3000)) for name in NAMES]
json.dump(results.tracked(found), open("metrics.json", "w"), indent=2)
"""


@pytest.fixture(scope="module")
def compared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("compare")
    (root / "make_metrics.py").write_text(STAGE)
    (root / "params.yaml").write_text("model: all\ntrain:\n  lr: 0.002\n  seed: 0\n  epochs: 12\n")
    (root / "dvc.yaml").write_text(
        "stages:\n  evaluate:\n    cmd: python make_metrics.py\n    deps: [make_metrics.py]\n"
        "    params: [model, train]\n    metrics:\n      - metrics.json:\n          cache: false\n"
    )
    run(root, "git", "init", "-q", "-b", "main")
    dvc(root, "init", "-q")
    pythonpath = {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}  # `tests.helpers` for the stage
    dvc(root, "repro", env=pythonpath)
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "baseline")  # the README's first run: results committed
    dvc(root, "exp", "run", "-S", "train.lr=0.004", env=pythonpath)
    dvc(root, "exp", "run", "-S", "train.lr=0.001", "-S", "train.seed=1", env=pythonpath)
    return root


def test_exp_show_only_changed_fits_200_columns_with_every_models_test_accuracy(compared: Path):
    shown = dvc(compared, "exp", "show", "--only-changed", "--no-pager", env={"COLUMNS": "200"}).stdout
    lines = shown.splitlines()
    assert max(map(len, lines)) <= 200
    header = next(line for line in lines if "Experiment" in line).split()
    assert header[2 : 2 + len(models.names())] == [f"acc.{name}" for name in models.names()]
    assert len([line for line in lines if "[" in line]) == 2  # both experiments listed, under the baseline


def test_the_readme_one_liner_puts_the_changed_params_beside_the_accuracies(compared: Path):
    readme = documentation()
    command = "dvc exp show --only-changed --drop '(auc|log_loss|f1|train_s|img_s)\\.'"
    assert command in readme
    shown = dvc(
        compared,
        "exp",
        "show",
        "--only-changed",
        "--no-pager",
        "--drop",
        "(auc|log_loss|f1|train_s|img_s)\\.",
        env={"COLUMNS": "200"},
    ).stdout
    header = next(line for line in shown.splitlines() if "Experiment" in line).split()
    assert header[2:] == [*(f"acc.{name}" for name in models.names()), "best", "train.lr", "train.seed"]
    assert max(map(len, shown.splitlines())) <= 200


def test_the_readme_accuracy_only_view_is_one_column_per_model(compared: Path):
    assert "dvc exp show --drop '.*' --keep 'Experiment|acc\\.'" in documentation()
    rows = dvc(compared, "exp", "show", "--csv", "--drop", ".*", "--keep", "Experiment|acc\\.").stdout.splitlines()
    assert rows[0].split(",") == ["Experiment", *(f"acc.{name}" for name in models.names())]
    assert len(rows) == 1 + 4  # the workspace, the baseline and its two experiments


def test_metrics_show_lists_only_numbers_and_the_best_model(compared: Path):
    shown = json.loads(dvc(compared, "metrics", "show", "--json").stdout)[""]["data"]["metrics.json"]["data"]
    assert shown.pop("best") in models.names()
    assert all(isinstance(v, float) for by_model in shown.values() for v in by_model.values())


def test_the_experiments_table_fits_120_columns_with_every_experiment_model_and_change(compared: Path):
    dvc(
        compared, "exp", "run", "--queue", "-n", "later", "-S", "train.seed=7"
    )  # queued, never run: listed all the same
    try:
        done = run(
            compared,
            sys.executable,
            "-m",
            "pipeline.experiments",
            "--width",
            "120",
            "--json",
            "rows.json",
            env={"PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        )
    finally:
        dvc(compared, "queue", "remove", "later")
    lines = done.stdout.splitlines()
    assert max(map(len, lines)) <= 120
    assert any(line.startswith("later  [queued]  ") and "train.seed=7" in line for line in lines)
    assert sum("[success]" in line for line in lines) == 2 and any(
        "train.lr=0.001 train.seed=1" in line for line in lines
    )
    rows = json.loads((compared / "rows.json").read_text())
    shown = json.loads(dvc(compared, "exp", "show", "--json").stdout)
    for row in rows:  # each accuracy is the experiment's own metric
        rev = (
            next(
                x["revs"][0]
                for r in shown
                for x in r.get("experiments") or []
                if x.get("name") == row["experiment"] or x["revs"][0].get("name") == row["experiment"]
            )
            if row["state"] == "success"
            else None
        )
        if rev:
            assert row["accuracy"] == rev["data"]["metrics"]["metrics.json"]["data"]["acc"][row["model"]]
    assert {r["model"] for r in rows if r["state"] == "success"} == set(models.names())
