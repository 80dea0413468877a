"""The optimiser and its schedule: warm-up then cosine, one `lr` per parameter group from the
architecture's own rate, weight decay only where it belongs, and a schedule that resumes exactly."""

import pytest
import torch
from torch import nn

from pipeline.models.transfer import TransferModel, make_head
from pipeline.params import recipes
from pipeline.training.optim import Schedule, lr_factor, make_optimizer, make_scheduler, param_groups


def test_learning_rate_warms_up_linearly_then_decays_as_a_cosine_to_zero():
    total, warmup = 100, 10
    assert lr_factor(0, total, warmup) == pytest.approx(0.01)  # 1% of the peak
    assert lr_factor(5, total, warmup) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_factor(10, total, warmup) == pytest.approx(1.0)
    assert lr_factor(55, total, warmup) == pytest.approx(0.5)  # half-way through the cosine
    assert lr_factor(100, total, warmup) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(0, 10, 0) == pytest.approx(1.0)  # no warm-up: start at the peak
    values = [lr_factor(s, total, warmup) for s in range(total)]
    assert values.index(max(values)) == warmup


def test_weight_decay_skips_biases_and_normalisation_weights():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    groups = param_groups(model, lr=0.1, weight_decay=0.01)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(model[0].weight), id(model[3].weight)}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_train_lr_reaches_every_group_as_lr_scaled_once_and_the_schedule_moves_them_together():
    spec = recipes.load(
        overrides={"model": "alexnet", "train": {"lr": 0.004, "epochs": 2, "warmup_epochs": 0.5}}
    ).models[0]
    assert spec.train.lr == pytest.approx(0.004 * 0.25)  # models.alexnet.lr_scale: 0.25, applied once, here
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model = TransferModel(backbone, make_head(4, [], 2, 0.0), frozen=[], backbone_lr_scale=0.1)
    optimizer = make_optimizer(model, spec.train)
    schedule = Schedule.of(images=40, batch_size=10, tp=spec.train)  # 4 steps an epoch, 8 in all, 2 of warm-up
    scheduler = make_scheduler(optimizer, schedule)
    peaks = sorted({g["initial_lr"] for g in optimizer.param_groups})
    assert peaks == pytest.approx([0.001 * 0.1, 0.001])  # head at lr, backbone at lr × backbone_lr_scale
    for step in range(schedule.total):
        for group in optimizer.param_groups:
            assert group["lr"] == group["initial_lr"] * lr_factor(step, 8, 2)  # bit for bit: peak × the pure schedule
        optimizer.step()
        scheduler.step()


def test_a_restored_schedule_continues_where_it_stopped():
    spec = recipes.load(overrides={"model": "resnet18", "train": {"epochs": 3}}).models[0]
    make = lambda: make_optimizer(nn.Linear(3, 2), spec.train)  # noqa: E731
    schedule = Schedule(steps_per_epoch=5, total=15, warmup=5)
    first = make()
    scheduler = make_scheduler(first, schedule)
    for _ in range(7):
        first.step()
        scheduler.step()
    second = make()
    again = make_scheduler(second, schedule)
    second.load_state_dict(first.state_dict())
    again.load_state_dict(scheduler.state_dict())
    assert second.param_groups[0]["lr"] == first.param_groups[0]["lr"] == spec.train.lr * lr_factor(7, 15, 5)
    for _ in range(3):
        first.step(), scheduler.step(), second.step(), again.step()
    assert second.param_groups[0]["lr"] == first.param_groups[0]["lr"]


def test_sgd_is_nesterov_with_the_recipes_momentum():
    spec = recipes.load(overrides={"model": "resnet18", "train": {"optimizer": "sgd", "momentum": 0.8}}).models[0]
    optimizer = make_optimizer(nn.Linear(3, 2), spec.train)
    assert isinstance(optimizer, torch.optim.SGD)
    assert all(g["nesterov"] and g["momentum"] == 0.8 for g in optimizer.param_groups)


def test_a_constant_schedule_holds_the_peak_after_the_warm_up():
    assert [lr_factor(s, 10, 2, "constant") for s in (0, 1, 2, 5, 9)] == pytest.approx([0.01, 0.505, 1, 1, 1])
    tp = (
        recipes.load(overrides={"model": "alexnet", "train": {"schedule": "constant", "warmup_epochs": 0}})
        .models[0]
        .train
    )
    schedule = Schedule.of(images=40, batch_size=10, tp=tp)
    assert {schedule.factor(s) for s in range(schedule.total)} == {1.0}


def test_sgd_without_momentum_is_the_courses_plain_sgd():
    tp = (
        recipes.load(
            overrides={"model": "alexnet", "train": {"optimizer": "sgd", "momentum": 0.0, "weight_decay": 0.0}}
        )
        .models[0]
        .train
    )
    layer = nn.Linear(3, 1, bias=False)
    before = layer.weight.detach().clone()
    optimizer = make_optimizer(layer, tp)
    layer(torch.ones(1, 3)).sum().backward()  # gradient: ones
    optimizer.step()
    assert optimizer.param_groups[0]["nesterov"] is False
    assert torch.allclose(layer.weight, before - tp.lr * torch.ones(1, 3))  # w - lr·g, nothing else
