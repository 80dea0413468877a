"""Weight initialisation shared by the from-scratch architectures (classic and resnet)."""

from __future__ import annotations

from torch import nn


def init_weights(model: nn.Module) -> nn.Module:
    """He init on the fan-in for convs, small normal for dense layers, identity BatchNorm.

    Fan-in keeps each ReLU layer's output variance equal to its input's, so the nets without
    BatchNorm (AlexNet, VGG, NiN, GoogLeNet) start with activations neither exploding nor vanishing;
    fan-out would multiply it by fan_in/fan_out at every 832 → 32 channel 1×1 reduction.
    """
    if any(p.is_meta for p in model.parameters()):
        # Built on the meta device (shapes only: to check a model file, or a size before training):
        # there are no values to draw, and drawing them there imports torch._dynamo, 1.5 s a process.
        return model
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
        if getattr(m, "bias", None) is not None:
            nn.init.zeros_(m.bias)
    return model
