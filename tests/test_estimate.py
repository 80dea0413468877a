"""The time estimate printed before training (training.estimate): a line per model from a few timed
steps, the epochs left after a resume, a model already trained left out, and no effect on the run."""

from pathlib import Path

import pytest
import torch

from pipeline.params import recipes
from pipeline.runtime.distributed import World
from pipeline.training.estimate import estimates, step_seconds
from pipeline.training.fit import fit
from pipeline.training.resume import ResumeFile, key
from tests.helpers import toy_split


def spec(epochs=2):
    return recipes.load(overrides={"model": "resnet18", "train": {"epochs": epochs, "batch_size": 16}}).models[0]


@pytest.mark.slow  # two trainings
def test_the_estimate_counts_the_epochs_left_and_skips_a_model_already_trained(tmp_path, capsys):
    p = recipes.load(
        overrides={"model": ["resnet18", "nin"], "data": {"image_size": 72}, "train": {"epochs": 2, "batch_size": 8}}
    )  # 12 steps each
    keys = {s.name: key(s, "digest", 1) for s in p.models}
    big = toy_split(48, size=72), toy_split(16, size=72, seed=1)
    fit(p.models[1], *big, classes=2, resume=ResumeFile(tmp_path / "nin.pt", keys["nin"]))
    capsys.readouterr()
    estimates(p, *big, tmp_path, keys, "cpu (2 threads)", World(), classes=2)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2  # nin is left out: its own line says it is trained when its turn comes
    assert (
        lines[0].split()[0] == "resnet18"
        and lines[0].endswith(" for 2 epochs on cpu (2 threads)")
        and "/epoch, " in lines[0]
    )
    assert lines[1].startswith("train: ") and lines[1].endswith(
        " in all (estimated from 3 timed steps of each model, 1 model already trained)"
    )
    only_nin = recipes.load(
        overrides={"model": "nin", "data": {"image_size": 72}, "train": {"epochs": 2, "batch_size": 8}}
    )
    estimates(only_nin, *big, tmp_path, keys, "cpu", World(), classes=2)
    assert capsys.readouterr().out == "train: every model is already trained with this recipe and data\n"


def test_a_model_trained_in_a_few_steps_is_not_timed(capsys, monkeypatch):
    from pipeline.training import estimate

    timed = []
    monkeypatch.setattr(estimate, "step_seconds", lambda spec, *a, **k: timed.append(spec.name) or 0.5)
    p = recipes.load(
        overrides={
            "model": ["resnet18", "nin"],
            "train": {"epochs": 2, "batch_size": 16},
            "models": {"nin": {"epochs": 3}},
        }
    )
    data = toy_split(64), toy_split(16, seed=1)  # 4 steps an epoch: resnet18 8 in all (FEW_STEPS), nin 12
    estimates(p, *data, Path("no-resume"), {"resnet18": "k", "nin": "k"}, "cpu", World(), classes=2)
    lines = capsys.readouterr().out.splitlines()
    assert timed == ["nin"]
    assert lines[0].split()[0] == "nin" and lines[0].endswith(" for 3 epochs on cpu")  # the registry's order
    assert lines[1] == "    resnet18 8 steps in all: not timed (timing would take about as long as training)"
    assert lines[2].endswith(" in all (estimated from 3 timed steps of each model, 1 of a few steps not timed)")
    estimates(
        recipes.load(overrides={"model": "resnet18", "train": {"epochs": 1}}),
        *data,
        Path("no-resume"),
        {"resnet18": "k"},
        "cpu",
        World(),
        classes=2,
    )
    assert capsys.readouterr().out.endswith(
        "not timed (timing would take about as long as training)\n"
    )  # and no sum of nothing


def test_a_timed_step_leaves_the_run_it_precedes_unchanged():
    data = toy_split(48), toy_split(16, seed=1)
    before, _ = fit(spec(1), *data, classes=2)
    assert step_seconds(spec(1), data[0], 16, classes=2) > 0
    after, _ = fit(spec(1), *data, classes=2)
    assert all(torch.equal(before.state_dict()[k], after.state_dict()[k]) for k in before.state_dict())
