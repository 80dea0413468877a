"""What a model does at an image size, found before any training on the meta device (no memory, no weights)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pipeline.common.errors import StageError
from pipeline.models.registry import build, ensure_weights, option_types


def preflight(specs, image_size: int, channels: int = 3) -> None:
    """Fail before any training: fetch missing pretrained weights now (or say exactly what to do),
    and run every model on the meta device (no memory, no weights) at the image size, so a shape
    error surfaces in a second rather than after the models before it have trained."""
    for spec in specs:
        options = dict(spec.options)
        if "pretrained" in option_types(spec.name):
            ensure_weights(spec.name, options)
            if (
                options.get("pretrained", True)
                and options.get("weights")
                and Path(options["weights"]).expanduser().is_file()
            ):
                build(
                    spec.name, in_channels=channels, **options
                )  # a weights file of the user's: loaded once, here, to know it fits
            options["pretrained"] = False
        with torch.device("meta"):
            try:
                build(spec.name, in_channels=channels, **options).eval()(
                    torch.empty(2, channels, image_size, image_size)
                )
            except StageError:
                raise
            except RuntimeError as e:
                raise StageError(f"{spec.name} cannot take {image_size} px images: {e}") from None


def feature_map(name: str, image_size: int) -> tuple[int, int] | None:
    """(side of the last feature map, side the classifier reads) at `image_size` px: the input and the
    output of the model's last adaptive average pool, found on the meta device (no memory, no weights);
    None for a model without one (a vision transformer, say).

    Global pooling models read 1; AlexNet and VGG read 5 and 7 whatever the input, so below 224 px
    their pool copies a smaller map up to that size, which adds dense weights but no information."""
    options = {"pretrained": False} if "pretrained" in option_types(name) else {}
    with torch.device("meta"):
        model = build(name, **options).eval()
        pools = [m for m in model.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
        if not pools:
            return None
        seen = {}
        pools[-1].register_forward_hook(
            lambda m, inputs, output: seen.update(side=(inputs[0].shape[-1], output.shape[-1]))
        )
        model(torch.empty(1, 3, image_size, image_size))
    return seen["side"]
