"""What a model does at an image size, found before any training, without drawing a weight."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from pipeline.common.errors import StageError
from pipeline.models.registry import build, ensure_weights, option_types

# The meta device needs no memory, but it computes shapes with torch's Python reference kernels, and
# the first of them imports torch._dynamo (1.5 s); a real forward pass of a 2-image batch in
# uninitialised CPU memory takes 30-400 ms at 224 px for any model of the zoo on 2 Zen 4 cores, less below.
# So: the CPU, for weights up to 1 GiB (268 M fp32 parameters; VGG-16 has 138 M) while torch._dynamo
# is not loaded; once it is (a torchvision model's constructor loads it), meta costs nothing more.
REAL_FORWARD_BYTES = 2**30


def dynamo_loaded() -> bool:
    """Whether this process has imported torch._dynamo: from then on, meta's shape checks cost nothing more."""
    return "torch._dynamo" in sys.modules


def shapes_forward(builder: Callable[[], nn.Module], batch: int, channels: int, image_size: int) -> torch.Tensor:
    """The output of one forward pass, in eval mode, of the model `builder` makes, for its shape only:
    built on the meta device (nothing drawn), then run on a (batch, channels, image_size, image_size)
    zero batch, in uninitialised CPU memory or on meta (REAL_FORWARD_BYTES says which). The values are garbage."""
    with torch.device("meta"):
        model = builder()
    device = "meta"
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    if not dynamo_loaded() and weights <= REAL_FORWARD_BYTES:
        model, device = model.to_empty(device="cpu"), "cpu"
    with torch.no_grad():
        return model.eval()(torch.zeros(batch, channels, image_size, image_size, device=device))


def preflight(specs, image_size: int, channels: int = 3) -> None:
    """Fail before any training: fetch missing pretrained weights now (or say exactly what to do),
    and run every model once at the image size (shapes only: shapes_forward), so a shape error
    surfaces in a second rather than after the models before it have trained."""
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
        try:
            shapes_forward(lambda: build(spec.name, in_channels=channels, **options), 2, channels, image_size)
        except StageError:
            raise
        except RuntimeError as e:
            raise StageError(f"{spec.name} cannot take {image_size} px images: {e}") from None


def feature_map(name: str, image_size: int) -> tuple[int, int] | None:
    """(side of the last feature map, side the classifier reads) at `image_size` px: the input and the
    output of the model's last adaptive average pool in one forward pass (shapes only: shapes_forward);
    None for a model without one (a vision transformer, say).

    Global pooling models read 1; AlexNet and VGG read 5 and 7 whatever the input, so below 224 px
    their pool copies a smaller map up to that size, which adds dense weights but no information."""
    options = {"pretrained": False} if "pretrained" in option_types(name) else {}
    seen: dict = {}

    def with_hook() -> nn.Module:
        model = build(name, **options)
        pools = [m for m in model.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
        if pools:
            pools[-1].register_forward_hook(
                lambda m, inputs, output: seen.update(side=(inputs[0].shape[-1], output.shape[-1]))
            )
        return model

    shapes_forward(with_hook, 1, 3, image_size)
    return seen.get("side")
