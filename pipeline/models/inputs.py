"""What a network's input must be: the per-channel normalisation its weights were trained with, and
what its published weights are (torchvision's `weights.transforms()` and `weights.meta`, timm's
`pretrained_cfg`).

A pretrained first layer learned on inputs scaled one way; fed inputs scaled another, its features
change (measured on Dogs-vs-Cats: docs/results.md, *Transfer learning on a CPU*). So the normalisation travels with
the weights: the registry gives each architecture its own, `build` attaches it to the network
(`of(model)`), the train stage records it in the model file, and everything that feeds a trained
network (validation, evaluate, predict, `Classifier`, export, Grad-CAM) reads it from there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import nn


@dataclass(frozen=True)
class Normalization:
    """x (uint8, 0..255) → (x / 255 − mean) / std, per channel: mean and std in 0..1 units."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def for_channels(self, channels: int) -> Normalization:
        """The same for `channels` input channels: grey (1) takes the means of the three, so that a
        grey photo meets a first layer whose filters were summed over R, G and B
        (models.transfer.grey_input) almost as its RGB copy would."""
        if channels == len(self.mean):
            return self
        if channels == 1:
            return Normalization((sum(self.mean) / len(self.mean),), (sum(self.std) / len(self.std),))
        raise ValueError(f"images have 3 (RGB) or 1 (grey) channels, not {channels}")

    def record(self) -> dict[str, list[float]]:
        """As a model file keeps it (plain lists: the file is loaded as data only)."""
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_record(cls, value: Any, channels: int) -> Normalization:
        """A model file's record, checked (it may come from a stranger): `channels` means in [0, 1]
        and standard deviations in (0, 1], as pixels in 0..1 units have; ValueError saying why not."""
        if not isinstance(value, dict) or set(value) != {"mean", "std"}:
            raise ValueError("must be a mapping of `mean` and `std`, one number per channel each")
        mean, std = value["mean"], value["std"]
        for name, numbers, low_open in (("mean", mean, False), ("std", std, True)):
            if not isinstance(numbers, list) or len(numbers) != channels:
                raise ValueError(f"{name} must be a list of {channels} numbers, one per channel")
            for v in numbers:
                if type(v) not in (int, float) or not math.isfinite(v) or not (0 < v <= 1 if low_open else 0 <= v <= 1):
                    raise ValueError(
                        f"{name} {v!r}: must be in {'(0, 1]' if low_open else '[0, 1]'} (pixels in 0..1 units)"
                    )
        return cls(tuple(float(v) for v in mean), tuple(float(v) for v in std))


# ImageNet's statistics: torchvision's weights were trained on them, and the from-scratch zoo keeps
# them (any fixed affine map that brings its inputs to about zero mean and unit variance would do).
IMAGENET = Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# TensorFlow's (x − 127.5) / 127.5, as the EfficientNet-Lite weights were trained (timm's
# tf_efficientnet_lite0 config: mean = std = 0.5): inputs in [−1, 1].
TENSORFLOW = Normalization((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


@dataclass(frozen=True)
class Pretrained:
    """What an architecture's published weights are, for the registry's listing and `check`'s notes."""

    top1: float  # %, ImageNet-1k validation top-1 accuracy of the published weights
    native_size: int  # px: the input side they were trained and evaluated at
    normalization: Normalization  # the inputs they were trained on
    source: str  # where the weights come from, in a few words


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under torch.compile's or DistributedDataParallel's wrapper."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def of(model: nn.Module) -> Normalization:
    """The normalisation `model`'s inputs take: what `build` or the model file attached to it;
    ImageNet's for a module built elsewhere (a test's toy network)."""
    return getattr(unwrap(model), "input_normalization", IMAGENET)


def attach(model: nn.Module, normalization: Normalization) -> nn.Module:
    unwrap(model).input_normalization = normalization
    return model
