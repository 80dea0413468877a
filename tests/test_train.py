"""Training: the schedule, the optimiser's parameter groups, a model that really learns, determinism,
and checkpoints that rebuild the same model."""

import math

import pytest
import torch
from torch import nn

from pipeline import checkpoint, params
from pipeline.optim import lr_factor, param_groups
from pipeline.runtime import predict
from pipeline.train import train_model
from tests.helpers import toy_split


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


def spec(name="resnet18", **train):
    overrides = {"model": name, "train": {"epochs": 3, "batch_size": 16, "seed": 0, **train}}
    return params.load(overrides=overrides).models[0]


def test_a_model_really_learns_and_keeps_its_best_validation_epoch():
    rows = []
    model, summary = train_model(spec(), toy_split(96), toy_split(32, seed=1), log=lambda e, r: rows.append(r))
    assert [round(r["lr"], 8) for r in rows][-1] < rows[0]["lr"] or len(rows) == 1
    assert summary["val"]["accuracy"] >= 0.9
    assert summary["val"]["accuracy"] == max(r["val_accuracy"] for r in rows)
    assert summary["kept_epoch"] == 1 + [r["val_accuracy"] for r in rows].index(summary["val"]["accuracy"])
    assert summary["epochs"] == 3 and summary["images_per_second"] > 0
    assert summary["parameters"] == summary["trainable_parameters"] == 11_177_538
    assert all(math.isfinite(r["train_loss"]) for r in rows)


def test_training_is_deterministic_on_the_cpu():
    a, _ = train_model(spec(epochs=1), toy_split(48), toy_split(16, seed=1))
    b, _ = train_model(spec(epochs=1), toy_split(48), toy_split(16, seed=1))
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_a_checkpoint_rebuilds_the_same_model(tmp_path):
    val = toy_split(16, seed=1)
    s = spec("alexnet_bn", epochs=1)
    model, summary = train_model(s, toy_split(32, size=72), toy_split(16, size=72, seed=1))
    checkpoint.save(tmp_path / "m.pt", model, name=s.name, options=s.options, meta=summary)
    loaded, meta = checkpoint.load(tmp_path / "m.pt")
    val = toy_split(16, size=72, seed=2)
    torch.testing.assert_close(predict(loaded, val, 8), predict(model, val, 8), rtol=0, atol=0)
    assert meta["name"] == "alexnet_bn" and meta["kept_epoch"] == 1
