"""The learning-curve grid (pipeline.grid): a miniature grid through the real DVC queue, every cell
on the same test photos, and its summary's paired tests against counts computed here by hand; the
table, the verdicts and the argument checks without DVC."""

from __future__ import annotations

import html
import json
import sys
from pathlib import Path

import pytest

from pipeline import grid
from pipeline.common.errors import StageError
from tests.helpers import committed_project, results_of, run


@pytest.fixture
def project(tmp_path_factory) -> Path:
    """A committed project (nothing reproduced: the first cell splits and preprocesses, the others
    take both from DVC's run cache) with two regimes of its size: the real presets need the 9k set."""
    params = {
        "data": {"image_size": 72, "val_fraction": 0.25, "test_fraction": 0.25},
        "train": {"epochs": 1, "batch_size": 8},
    }
    presets = {
        "presets/grid-scratch.yaml": "model: nin\ntrain:\n  epoch_images: 16\n",
        "presets/grid-probe.yaml": "model: resnet18\n",
    }
    return committed_project(
        tmp_path_factory, "grid", params, per_class=16, size=80, files=presets
    )  # 16 train, 8 val, 8 test


# two regimes × 8 photos × one seed: 2 cells, each a DVC experiment of its own (about 30 s on 2 cores).
# One count is enough here: that the photos of a smaller count are among a larger one's, with the same
# validation and test photos, is the split's (test_split, train_photos), and a grid's cells are the
# product of its lists (test_the_cells_are_every_regime_count_and_seed_cheapest_first, below).
MINI = (
    sys.executable,
    "-m",
    "pipeline.grid",
    "run",
    "mini",
    "--regimes",
    "scratch,probe",
    "--photos",
    "8",
    "--seeds",
    "1",
)


@pytest.mark.slow
def test_a_miniature_learning_curve_grid_scores_every_cell_on_the_same_test_photos(project: Path, tmp_path: Path):
    import dvc.api
    import numpy as np

    reproduced = project
    done = run(reproduced, *MINI, "--poll", "5")  # each look, a `dvc queue status`, takes a second of the queue's core
    assert "grid: 2 cells, 0 already done" in done.stdout and "grid: all 2 cells done" in done.stdout, (
        done.stdout + done.stderr
    )
    names = [f"mini-{r}-8-s0" for r in ("scratch", "probe")]
    results = {
        n: json.loads(
            dvc.api.read(f"results/{'nin' if 'scratch' in n else 'resnet18'}.json", repo=str(reproduced), rev=n)
        )
        for n in names
    }
    train = {n: dvc.api.read("data/split/train.csv", repo=str(reproduced), rev=n).splitlines()[1:] for n in names}
    test = {n: dvc.api.read("data/split/test.csv", repo=str(reproduced), rev=n) for n in names}
    assert (
        len({json.dumps(r["labels"]) for r in results.values()}) == 1 and len(set(test.values())) == 1
    )  # one test split for all
    assert [len(train[n]) for n in names] == [8, 8] and train["mini-scratch-8-s0"] == train["mini-probe-8-s0"]
    assert len(test["mini-scratch-8-s0"].splitlines()) - 1 == 8  # the test photos: not cut with the training ones

    run(reproduced, sys.executable, "-m", "pipeline.grid", "summary", "mini", "--out", str(tmp_path))
    summary = json.loads((tmp_path / "grid.json").read_text())
    assert summary["photos"] == [8] and summary["test_images"] == 8 and (tmp_path / "grid.png").stat().st_size > 0
    assert all(html.escape(v) in (tmp_path / "grid.html").read_text() for v in summary["verdicts"]) and (
        tmp_path / "grid.md"
    ).read_text() == grid.markdown(summary)
    (pair,) = summary["pairs"]  # McNemar's counts, computed here by hand from each cell's predictions
    a, b = (f"mini-{pair[k]}-{pair['photos']}-s0" for k in ("a", "b"))
    right = {n: np.asarray(results[n]["predicted"]) == np.asarray(results[n]["labels"]) for n in (a, b)}
    (per,) = pair["per_seed"]
    assert (per["a_only"], per["b_only"]) == (int((right[a] & ~right[b]).sum()), int((~right[a] & right[b]).sum()))
    assert {(r["regime"], r["photos"]): r["mean"] for r in summary["table"]} == {
        (("scratch" if "scratch" in n else "probe"), len(train[n])): results[n]["test"]["accuracy"] for n in names
    }
    again = run(reproduced, *MINI)
    assert (
        "grid: 2 cells, 2 already done" in again.stdout and "--queue" not in again.stdout
    )  # a stopped grid resumes: nothing done twice


def test_the_cells_are_every_regime_count_and_seed_cheapest_first():
    chosen = grid.cells(["scratch", "probe"], ["40", "all"], [0, 1])
    assert [c.name("g") for c in chosen] == [
        f"g-{r}-{n}-s{s}" for s in (0, 1) for n in ("40", "all") for r in ("scratch", "probe")
    ]
    commands = grid.queue_commands("g", chosen[:2], ["-S", "data.source=synthetic"])
    assert [c[:5] for c in commands] == [
        ["pipeline.preset", f"grid-{r}", "--queue", "-n", f"g-{r}-40-s0"] for r in ("scratch", "probe")
    ]
    assert all(c[-1] == "evaluate" and "data.train_photos=40" in c and "train.seed=0" in c for c in commands)
    assert "data.train_photos=null" in grid.queue_commands("g", [chosen[2]], [])[0]  # all: the whole training split


def test_the_summary_pairs_regimes_at_each_count_and_says_which_needs_more_photos():
    cells = {
        "g-scratch-40-s0": grid.Cell("scratch", "40", 0),
        "g-probe-40-s0": grid.Cell("probe", "40", 0),
        "g-scratch-all-s0": grid.Cell("scratch", "all", 0),
        "g-probe-all-s0": grid.Cell("probe", "all", 0),
    }
    right = {
        "g-scratch-40-s0": [True] * 5 + [False] * 15,  # 0.25
        "g-probe-40-s0": [True] * 18
        + [False] * 2,  # 0.90: right on 13 photos scratch gets wrong, wrong on none it gets right
        "g-scratch-all-s0": [True] * 19 + [False],  # 0.95
        "g-probe-all-s0": [True] * 20,
    }
    photos = {"g-scratch-40-s0": 40, "g-probe-40-s0": 40, "g-scratch-all-s0": 7200, "g-probe-all-s0": 7200}
    summary = grid.summarise(cells, {n: results_of(r) for n, r in right.items()}, photos)
    at_40 = next(p for p in summary["pairs"] if p["photos"] == 40)
    assert (at_40["a"], at_40["b"], at_40["per_seed"][0]["a_only"], at_40["per_seed"][0]["b_only"]) == (
        "probe",
        "scratch",
        13,
        0,
    )
    assert at_40["per_seed"][0]["p_value"] == pytest.approx(2 / 2**13)  # McNemar exact: 13 of 13 discordant one way
    assert (
        "scratch needs 7,200 photos to reach probe's accuracy with 40 (180 times as many; mean over seeds)"
        in summary["verdicts"]
    )
    other = results_of([True] * 19 + [False] * 1)
    other["labels"] = other["labels"][::-1]
    with pytest.raises(StageError, match="not scored on the same test photos"):
        grid.summarise(cells, {**{n: results_of(r) for n, r in right.items()}, "g-probe-all-s0": other}, photos)
    assert "| probe | 40 | 1 | 0.900 |" in grid.markdown(summary)


@pytest.mark.parametrize("text", ["40,x", "1", "40,40", "", "4e3"])
def test_photo_counts_are_numbers_or_all(text):
    with pytest.raises(StageError, match="--photos"):
        grid.parse_photos(text)


def test_regimes_that_split_the_photos_differently_are_refused_before_anything_is_queued(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "grid-a.yaml").write_text("model: nin\ndata:\n  test_fraction: 0.2\n")
    (tmp_path / "presets" / "grid-b.yaml").write_text("model: resnet18\n")
    with pytest.raises(StageError, match="split the photos differently .data.test_fraction."):
        grid.check_regimes(["a", "b"], [])
    assert set(grid.check_regimes(["a", "b"], ["-S", "data.test_fraction=0.2"])) == {"a", "b"}  # a -S for all of them


def test_the_grid_is_estimated_before_it_is_queued_from_each_regimes_estimate(monkeypatch, tmp_path):
    asked = []

    def fake(p, compute, timers):
        asked.append((p.models[0].name, p.data.train_photos))
        return (60.0 if p.data.train_photos else 600.0), []

    monkeypatch.setattr(grid, "training_estimate", fake)
    found = {"scratch": {"model": "nin"}, "probe": {"model": "resnet18"}}
    seconds, lines = grid.estimate(found, ["40", "all"], 3)
    assert asked == [("nin", 40), ("nin", None), ("resnet18", 40), ("resnet18", None)]
    assert (
        seconds == 3 * 2 * (60 + 600) + 12 * grid.DVC_SECONDS
    )  # each cell's training times the seeds, and DVC's start-up a cell
    assert lines[-1].startswith("grid: ~1 h 12 min in all for 12 cells (3 seeds;")
