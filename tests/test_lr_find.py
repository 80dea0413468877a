"""The learning-rate finder: a geometric sweep of the rate on the model's own recipe, stopped when
the loss runs away, a suggestion on the steepest descent, a plot, and the -S flag to use it."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from pipeline.params import recipes
from pipeline.runtime.device import Compute
from pipeline.training import lr_range
from tests.helpers import REPO, toy_split, write_processed


@pytest.mark.slow  # a range test of many steps
def test_the_rate_grows_geometrically_and_the_loss_runs_away_at_the_top():
    spec = recipes.load(REPO / "params.yaml", {"model": "resnet18", "train": {"batch_size": 16}}).models[0]
    found = lr_range.range_test(
        spec, toy_split(64), classes=2, compute=Compute(torch.device("cpu")), start=1e-5, end=100.0, steps=40
    )
    ratios = [b / a for a, b in zip(found.rates, found.rates[1:])]
    assert found.rates[0] == pytest.approx(1e-5) and all(r == pytest.approx((100 / 1e-5) ** (1 / 39)) for r in ratios)
    assert found.stopped_early and len(found.rates) < 40  # 100 is far past what AdamW survives
    assert found.rates[0] <= found.suggested <= found.minimum <= found.rates[-1]


def test_the_suggestion_is_the_steepest_descent_before_the_minimum():
    rates = [10 ** (-k / 2) for k in range(10, 0, -1)]  # 1e-5 ... 0.3
    losses = [0.70, 0.69, 0.68, 0.60, 0.45, 0.40, 0.38, 0.37, 0.9, 3.0]  # steepest between the 4th and 5th
    found = lr_range._result(rates, losses, stopped=True)
    assert found.suggested == rates[3] and found.minimum == rates[7]
    assert math.isclose(found.suggested, 10**-3.5)


@pytest.mark.slow  # a fresh interpreter
def test_the_command_plots_and_says_which_flag_to_use(tmp_path):
    data = write_processed(tmp_path / "processed", {"train": toy_split(64), "val": toy_split(16, seed=1)})

    def lr_find(*args) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "pipeline.lr_find", "--data", str(data), *args]
        return subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)

    done = lr_find("--model", "resnet18", "--steps", "30", "--out", str(tmp_path / "lr.png"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "lr.png").read_bytes().startswith(b"\x89PNG")
    assert "steepest descent at" in done.stdout and "-S train.lr=" in done.stdout
    small = lr_find("--model", "alexnet", "--out", str(tmp_path / "a.png"))
    assert small.returncode == 2 and "alexnet cannot take 32 px images" in small.stderr
