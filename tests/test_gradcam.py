"""Grad-CAM: maps the size of the photo, found on each architecture's last feature map, and heat
where a constructed model's evidence really is."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipeline import models
from pipeline.evaluation import gradcam
from tests.helpers import skeleton


class LeftHalfOnly(nn.Module):
    """Zeroes the right half of the image: whatever follows can only use the left half."""

    def forward(self, x):
        half = x.shape[-1] // 2
        return torch.cat([x[..., :half], torch.zeros_like(x[..., half:])], dim=-1)


def test_the_heat_lies_where_the_decision_is_made():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    head = nn.Linear(8, 2)
    with torch.no_grad():
        conv.weight.abs_()  # positive filters on a positive image: every channel responds
        head.weight.copy_(torch.stack([-torch.ones(8), torch.ones(8)]))  # class 1 = the sum of the channels
        head.bias.zero_()
    model = nn.Sequential(LeftHalfOnly(), conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
    x = torch.full((2, 3, 32, 32), 255, dtype=torch.uint8)  # the same content on both halves
    assert gradcam.last_feature_map(model, 32) is model[2]  # the ReLU's map: the last before the pool
    heat = gradcam.gradcam(model, x)
    assert heat.shape == (2, 32, 32) and heat.min() >= 0 and heat.max() == pytest.approx(1.0)
    left, right = heat[:, :, :14].mean(), heat[:, :, 18:].mean()  # away from the border column
    assert left > 0.5 and right < 0.01 * left


def test_a_zoo_model_gives_a_map_per_photo_of_its_size_on_its_last_block():
    torch.manual_seed(0)
    model = models.build("resnet18")
    assert output_shape(model, gradcam.last_feature_map(model, 64), 64) == (
        1,
        512,
        2,
        2,
    )  # the last stage, 1/32 of the side
    x = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    heat = gradcam.gradcam(model, x, classes=torch.tensor([0, 1, 1]))
    assert heat.shape == (3, 64, 64) and np.isfinite(heat).all() and 0 <= heat.min() and heat.max() <= 1
    model.train()
    gradcam.gradcam(model, x)
    assert model.training  # gradcam explains in eval mode, then restores the mode it found


@pytest.mark.parametrize("name", models.registered())
def test_every_architecture_has_a_feature_map_to_explain(name):
    model = skeleton(name, **({"pretrained": False} if "pretrained" in models.option_types(name) else {}))
    shape = output_shape(model, gradcam.last_feature_map(model, 96), 96)
    assert len(shape) == 4 and min(shape[-2:]) > 1


def output_shape(model: nn.Module, layer: nn.Module, size: int) -> tuple[int, ...]:
    seen = {}
    hook = layer.register_forward_hook(lambda _m, _i, out: seen.__setitem__("shape", tuple(out.shape)))
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    hook.remove()
    return seen["shape"]


def test_an_overlay_is_the_photo_under_its_heat():
    photo = np.zeros((3, 8, 8), dtype=np.uint8)
    heat = np.zeros((8, 8))
    heat[:, 4:] = 1.0
    out = gradcam.overlay(photo, heat)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert out[0, 7, 0] > out[0, 7, 2] and out[0, 0, 2] > out[0, 0, 0]  # hot is red, cold is blue
