"""The weights' moving average (training.average, `train.ema`): decay 0 is the weights themselves,
the warm-up and the decay give the hand-computed averages, BatchNorm's statistics are averaged too,
and training with it validates and keeps the average, resuming an interrupted run to the same one."""

import pytest
import torch
from torch import nn

from pipeline.common.errors import ParamError
from pipeline.params import recipes
from pipeline.runtime.inference import probabilities
from pipeline.training.average import averaged
from pipeline.training.fit import fit
from pipeline.training.resume import ResumeFile
from tests.helpers import toy_split


def net(value: float) -> nn.Module:
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        for t in (*model.parameters(), model[1].running_mean):
            t.fill_(value)
    return model


def set_to(model: nn.Module, value: float) -> None:
    with torch.no_grad():
        for t in (*model.parameters(), model[1].running_mean):
            t.fill_(value)


def test_decay_zero_is_the_raw_weights_after_every_update():
    model = net(1.0)
    average = averaged(model, 0.0)
    for value in (1.0, 5.0, -3.0):
        set_to(model, value)
        average.update_parameters(model)
        assert all(torch.equal(a, b) for a, b in zip(average.module.state_dict().values(), model.state_dict().values()))


def test_the_average_warms_up_then_decays_as_computed_by_hand():
    model = net(0.0)
    average = averaged(model, 0.5)
    average.update_parameters(model)  # the first update copies: 0
    set_to(model, 10.0)
    average.update_parameters(model)  # decay min(0.5, 1/10) = 0.1: 0.1 × 0 + 0.9 × 10 = 9
    assert average.module[0].weight.flatten().tolist() == pytest.approx([9.0] * 4)
    assert average.module[1].running_mean.tolist() == pytest.approx([9.0] * 2)  # BatchNorm's statistics too
    set_to(model, 20.0)
    average.update_parameters(model)  # decay min(0.5, 2/11): 2/11 × 9 + 9/11 × 20 = 18
    assert average.module[0].bias.tolist() == pytest.approx([18.0] * 2)
    for _ in range(20):
        average.update_parameters(model)  # the decay reaches 0.5 at the 10th update: halfway to 20 each step
    assert average.module[0].bias.tolist() == pytest.approx([20.0] * 2, abs=1e-3)
    assert model[0].bias.tolist() == [20.0, 20.0]  # the model itself is never touched


def spec(**train):
    return recipes.load(
        overrides={"model": "resnet18", "train": {"epochs": 3, "batch_size": 16, "seed": 0, **train}}
    ).models[0]


@pytest.mark.slow  # three runs of several epochs
def test_a_run_with_ema_validates_and_keeps_the_average_and_resumes_to_the_same_one(tmp_path):
    data = toy_split(48), toy_split(16, seed=1)
    rows = []
    plain, _ = fit(spec(), *data, classes=2)
    kept, summary = fit(
        spec(ema=0.9), *data, classes=2, log=lambda e, r: rows.append(r), resume=ResumeFile(tmp_path / "whole.pt", "k")
    )
    assert summary["averaged_updates"] == 3 * 3  # one per step: three epochs of three (the first copies the weights)
    assert not all(
        torch.equal(a, b) for a, b in zip(kept.state_dict().values(), plain.state_dict().values())
    )  # the average, not the last weights
    proba = probabilities(kept, data[1], 64)
    assert (
        rows[-1]["val_accuracy"] == (proba.argmax(1) == data[1].labels).float().mean().item()
    )  # validation scored the average

    def interrupt_in_epoch_2(epoch, row):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(spec(ema=0.9), *data, classes=2, log=interrupt_in_epoch_2, resume=ResumeFile(tmp_path / "cut.pt", "k"))
    resumed, again = fit(spec(ema=0.9), *data, classes=2, resume=ResumeFile(tmp_path / "cut.pt", "k"))
    assert again["averaged_updates"] == summary["averaged_updates"]
    assert all(torch.equal(a, b) for a, b in zip(resumed.state_dict().values(), kept.state_dict().values()))
    finished, _ = fit(
        spec(ema=0.9), *data, classes=2, resume=ResumeFile(tmp_path / "whole.pt", "k")
    )  # already trained: the kept average back
    assert all(torch.equal(a, b) for a, b in zip(finished.state_dict().values(), kept.state_dict().values()))


@pytest.mark.parametrize("decay", [-0.1, 1.0, float("nan")])
def test_a_decay_outside_zero_to_one_is_refused_by_name(decay):
    with pytest.raises(ParamError, match=r"train.ema"):
        spec(ema=decay)
