"""Several seeds: the summary's means, spreads and paired t-tests against hand-computed answers, and
the queued commands (the real DVC queue runs in test_experiments)."""

import math
import time
from pathlib import Path

import pytest
from scipy import stats

from pipeline import seeds
from pipeline.common import queue
from pipeline.common.errors import StageError


def runs(**acc_per_seed):
    """{name-seedK: {"params", "metrics"}} from {model: [accuracy on seed 0, 1, ...]}"""
    n = len(next(iter(acc_per_seed.values())))
    return {
        f"x-seed{k}": {
            "params": {"train": {"seed": k}},
            "metrics": {"acc": {m: v[k] for m, v in acc_per_seed.items()}, "best": "a"},
        }
        for k in range(n)
    }


def test_means_spreads_and_the_paired_t_test_over_seeds():
    summary = seeds.summarise(runs(b=[0.70, 0.73, 0.71], a=[0.80, 0.82, 0.84]))
    a = summary["metrics"]["acc"]["a"]
    assert (
        a["mean"] == pytest.approx(0.82)
        and a["sd"] == pytest.approx(0.02)
        and (a["min"], a["max"], a["seeds"]) == (0.80, 0.84, 3)
    )
    (pair,) = summary["pairs"]
    assert (pair["a"], pair["b"], pair["held"], pair["seeds"]) == ("a", "b", 3, 3)  # the better mean first
    assert pair["differences"] == pytest.approx([0.10, 0.09, 0.13])
    d = [0.10, 0.09, 0.13]  # t = mean / (sd / √n) with n − 1 = 2 degrees of freedom
    mean, sd = sum(d) / 3, math.sqrt(sum((x - sum(d) / 3) ** 2 for x in d) / 2)
    assert pair["p_value"] == pytest.approx(2 * stats.t.sf(mean / (sd / math.sqrt(3)), 2))
    assert summary["experiments"] == {"x-seed0": 0, "x-seed1": 1, "x-seed2": 2} and "best" not in summary["metrics"]
    text = seeds.markdown(summary)
    assert "| acc | a | 0.82 | 0.02 | 0.8–0.84 |" in text and "| a − b | +0.100, +0.090, +0.130 | 3 of 3 |" in text


def test_a_gap_that_flips_between_seeds_holds_on_some_and_is_not_significant():
    (pair,) = seeds.summarise(runs(a=[0.80, 0.70, 0.81], b=[0.75, 0.78, 0.76]))["pairs"]
    assert pair["held"] == 2 and pair["p_value"] > 0.5


def test_experiments_that_share_a_seed_are_refused():
    same = runs(a=[0.8, 0.9])
    same["x-seed1"]["params"]["train"]["seed"] = 0
    with pytest.raises(StageError, match="do not differ by train.seed"):
        seeds.summarise(same)


def test_each_seed_is_one_queued_experiment_and_a_relative_source_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("photos.zip").write_bytes(b"")
    commands = seeds.queue_commands("cpu", [0, 1], None, ["-S", "data.source=photos.zip", "-S", "model=nin"])
    assert commands == [
        [
            "dvc",
            "exp",
            "run",
            "--queue",
            "-n",
            f"cpu-seed{k}",
            "-S",
            f"train.seed={k}",
            "-S",
            f"data.source={tmp_path / 'photos.zip'}",
            "-S",
            "model=nin",
        ]
        for k in (0, 1)
    ]
    assert queue.absolute_source(["-S", "data.source=synthetic"]) == ["-S", "data.source=synthetic"]  # not a path here


def test_a_preset_on_several_seeds_goes_through_the_preset_command():
    assert seeds.queue_commands("cpu-64", [2], "cpu-64", ["-S", "train.epochs=3"]) == [
        ["pipeline.preset", "cpu-64", "--queue", "-n", "cpu-64-seed2", "-S", "train.seed=2", "-S", "train.epochs=3"]
    ]


def test_starting_the_worker_returns_while_the_daemon_it_left_still_runs(tmp_path):
    start = time.perf_counter()  # the daemon holds the command's output for 30 s: a pipe would wait for it
    done = queue.run_detached(["sh", "-c", "sleep 30 & echo worker started"], tmp_path / "start.log")
    assert time.perf_counter() - start < 10
    assert done.returncode == 0 and done.stdout == "worker started\n"
