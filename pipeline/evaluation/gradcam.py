"""What a network looks at: Grad-CAM (Selvaraju et al., 2017) on its last convolutional block.

The block is found, not configured: the module whose output is the last 4-D feature map with more
than one pixel a side before the classifier (ResNet's layer4, VGG's features, NiN's last block,
GoogLeNet's last Inception, any torchvision model's equivalent). Its activations A (C, h, w) are
weighted by the mean gradient of the class score over each channel, summed, kept where positive,
and upsampled to the photo: a map in [0, 1] of where the evidence for that class lies.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib import colormaps
from torch import nn

from pipeline.models import inputs
from pipeline.runtime.tensors import normalize


def last_feature_map(model: nn.Module, size: int, channels: int = 3) -> nn.Module:
    """The module whose output is the last (B, C, h, w) map with h, w > 1 in a forward pass of a
    size × size batch of `channels` channels: the network's last convolutional block, whatever the
    architecture."""
    found: list[nn.Module] = []

    def seen(module, _inputs, output):
        if isinstance(output, torch.Tensor) and output.dim() == 4 and min(output.shape[-2:]) > 1:
            found.append(module)

    hooks = [m.register_forward_hook(seen) for m in model.modules() if m is not model]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, channels, size, size, device=next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    if not found:
        raise ValueError(f"{type(model).__name__} has no feature map larger than 1×1 at {size} px")
    return found[-1]


def gradcam(
    model: nn.Module, x: torch.Tensor, classes: torch.Tensor | None = None, layer: nn.Module | None = None
) -> np.ndarray:
    """Heat maps (B, S, S) in [0, 1] for a uint8 batch x (B, C, S, S): where the evidence for
    `classes` (B,) lies (default: each photo's predicted class). In eval mode, in float32, with the
    gradients of the photo itself, so a frozen backbone explains its features too."""
    layer = layer or last_feature_map(model, x.shape[-1], x.shape[1])
    kept: dict[str, torch.Tensor] = {}
    hook = layer.register_forward_hook(lambda _m, _i, out: kept.__setitem__("maps", out))
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            pixels = normalize(x, inputs.of(model)).requires_grad_(True)
            logits = model(pixels).float()
            classes = logits.argmax(1) if classes is None else classes
            maps = kept["maps"]
            score = logits.gather(1, classes.view(-1, 1)).sum()
            (grads,) = torch.autograd.grad(score, maps)
    finally:
        hook.remove()
        model.train(was_training)
    weights = grads.float().mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1): each channel's importance
    cam = torch.relu((weights * maps.float()).sum(1, keepdim=True)).detach()  # (B, 1, h, w)
    cam = nn.functional.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).max(1).values.clamp_min(1e-12).view(-1, 1, 1)
    return (cam / peak).cpu().numpy()


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """A (C, S, S) uint8 photo (RGB or grey) with its (S, S) heat map over it (the jet colour map:
    red is where the evidence is), as an (S, S, 3) uint8 image."""
    colour = colormaps["jet"](heat)[..., :3]  # (S, S, 3) in [0, 1]
    photo = np.broadcast_to(image.transpose(1, 2, 0), (*image.shape[1:], 3)).astype(np.float32) / 255
    return np.clip(255 * ((1 - alpha) * photo + alpha * colour), 0, 255).astype(np.uint8)
