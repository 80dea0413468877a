"""The course's classic CNNs, from scratch, for RGB (or grey: `in_channels=1`) input and any square size from their
minimum up.

Shapes follow the d2l material at 224 px (AlexNet reaches 256×5×5 = 6400 features before its first
dense layer, VGG 512×7×7); an adaptive pool before the classifier keeps those feature sizes, and so
the parameter counts, for any input size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from pipeline.models.init import init_weights
from pipeline.models.registry import register

VGG11 = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))  # (convs, channels) per block
# GoogLeNet's nine Inception blocks: (1×1, (1×1 reduce, 3×3), (1×1 reduce, 5×5), pool→1×1) channels
INCEPTION_B3 = ((64, (96, 128), (16, 32), 32), (128, (128, 192), (32, 96), 64))
INCEPTION_B4 = (
    (192, (96, 208), (16, 48), 64),
    (160, (112, 224), (24, 64), 64),
    (128, (128, 256), (24, 64), 64),
    (112, (144, 288), (32, 64), 64),
    (256, (160, 320), (32, 128), 128),
)
INCEPTION_B5 = ((256, (160, 320), (32, 128), 128), (384, (192, 384), (48, 128), 128))
# AlexNet's three ideas, each replaceable to measure what it buys (docs/results.md, *What the course claims, measured*)
ACTIVATIONS = {"relu": lambda: nn.ReLU(inplace=True), "sigmoid": nn.Sigmoid}  # sigmoid: LeNet's, before AlexNet
POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}  # avg: LeNet's subsampling


# ---------------------------------------------------------------- blocks


def conv(
    c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int = 0, *, bn: bool = False, activation: str = "relu"
) -> nn.Sequential:
    """Conv → (BatchNorm) → ReLU. With BatchNorm the conv's bias is redundant (BN's shift replaces it)."""
    layers = [nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def dense(f_in: int, f_out: int, *, bn: bool = False, dropout: float = 0.5, activation: str = "relu") -> nn.Sequential:
    """Hidden dense layer: Linear → (BatchNorm) → ReLU → Dropout."""
    layers = [nn.Linear(f_in, f_out, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm1d(f_out))
    layers += [ACTIVATIONS[activation](), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


def classifier(
    features: int,
    num_classes: int,
    *,
    bn: bool = False,
    dropout: float = 0.5,
    activation: str = "relu",
    width: int = 4096,
) -> nn.Sequential:
    """The AlexNet/VGG head: features → width → width → classes (the papers' 4096: most of the weights,
    37.8 M of AlexNet's 46.8 M and 119.6 M of VGG-11's 128.8 M)."""
    hidden = {"bn": bn, "dropout": dropout, "activation": activation}
    return nn.Sequential(
        nn.Flatten(), dense(features, width, **hidden), dense(width, width, **hidden), nn.Linear(width, num_classes)
    )


def vgg_block(num_convs: int, c_in: int, c_out: int, *, bn: bool = False) -> nn.Sequential:
    layers = [conv(c_in if i == 0 else c_out, c_out, 3, padding=1, bn=bn) for i in range(num_convs)]
    return nn.Sequential(*layers, nn.MaxPool2d(2, 2))


def nin_block(c_in: int, c_out: int, kernel: int, stride: int, padding: int, *, scores: bool = False) -> nn.Sequential:
    """k×k conv then two 1×1 convs, each with ReLU: a small MLP applied at every pixel.

    `scores`: the network's last block. Its hidden width stays at `c_in` and its last 1×1 conv gives
    the class scores, without ReLU. The course's version, 2 channels wide throughout with a ReLU after
    each conv, is a 2-unit bottleneck: once both units read 0 for every image, no gradient flows and
    training stalls at loss ln 2, as it did on the real photos. The NiN paper's last block is wide too.
    """
    hidden = c_in if scores else c_out
    layers = [conv(c_in, hidden, kernel, stride, padding), conv(hidden, hidden, 1)]
    layers.append(nn.Conv2d(hidden, c_out, 1) if scores else conv(hidden, c_out, 1))
    return nn.Sequential(*layers)


class Inception(nn.Module):
    """Four parallel paths (1×1; 1×1→3×3; 1×1→5×5; 3×3 max-pool→1×1) concatenated on channels."""

    def __init__(self, c_in: int, c1: int, c2: tuple[int, int], c3: tuple[int, int], c4: int):
        super().__init__()
        self.p1 = conv(c_in, c1, 1)
        self.p2 = nn.Sequential(conv(c_in, c2[0], 1), conv(c2[0], c2[1], 3, padding=1))
        self.p3 = nn.Sequential(conv(c_in, c3[0], 1), conv(c3[0], c3[1], 5, padding=2))
        self.p4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), conv(c_in, c4, 1))
        self.out_channels = c1 + c2[1] + c3[1] + c4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.p1(x), self.p2(x), self.p3(x), self.p4(x)), dim=1)


def inception_stage(c_in: int, arch) -> tuple[list[nn.Module], int]:
    blocks = []
    for spec in arch:
        blocks.append(Inception(c_in, *spec))
        c_in = blocks[-1].out_channels
    return blocks, c_in


# ---------------------------------------------------------------- architectures


Activation = Literal["relu", "sigmoid"]
Pool = Literal["max", "avg"]


@dataclass(frozen=True)
class AlexNetOptions:
    """The options of AlexNet and AlexNet-BN (models.alexnet, models.alexnet_bn in params.yaml): its
    three ideas, each replaceable by what came before it to measure what it buys (`activation`
    sigmoid, `pool` avg, `dropout` 0), local response normalisation as in the 2012 paper, and the
    width of its two hidden dense layers."""

    lrn: bool = False  # after the ReLU of the first two convs, before their pools
    activation: Activation = "relu"
    pool: Pool = "max"
    dropout: float = 0.5  # in the dense layers
    dense: int = 4096


def _alexnet(num_classes: int, in_channels: int, *, bn: bool, o: AlexNetOptions) -> nn.Module:
    norm = (lambda: nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)) if o.lrn else nn.Identity
    c = {"bn": bn, "activation": o.activation}
    features = nn.Sequential(
        conv(in_channels, 96, 11, stride=4, padding=1, **c),
        norm(),
        POOLS[o.pool](3, 2),  # 224 → 54 → 26
        conv(96, 256, 5, padding=2, **c),
        norm(),
        POOLS[o.pool](3, 2),  # → 26 → 12
        conv(256, 384, 3, padding=1, **c),
        conv(384, 384, 3, padding=1, **c),
        conv(384, 256, 3, padding=1, **c),
        POOLS[o.pool](3, 2),  # → 12 → 5
        nn.AdaptiveAvgPool2d(5),  # identity at 224 px; other sizes keep 256×5×5 = 6400 features
    )
    head = classifier(256 * 5 * 5, num_classes, **c, dropout=o.dropout, width=o.dense)
    return init_weights(nn.Sequential(features, head))


@register("alexnet", min_image_size=65, options=AlexNetOptions)
def alexnet(*, num_classes: int = 2, in_channels: int = 3, **options) -> nn.Module:
    return _alexnet(num_classes, in_channels, bn=False, o=AlexNetOptions(**options))


@register("alexnet_bn", min_image_size=65, options=AlexNetOptions)
def alexnet_bn(*, num_classes: int = 2, in_channels: int = 3, **options) -> nn.Module:
    return _alexnet(num_classes, in_channels, bn=True, o=AlexNetOptions(**options))


def _vgg(arch, num_classes: int, in_channels: int, *, bn: bool, dense: int) -> nn.Module:
    blocks, c_in = [], in_channels
    for num_convs, c_out in arch:
        blocks.append(vgg_block(num_convs, c_in, c_out, bn=bn))
        c_in = c_out
    features = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(7))  # 224 px → 7×7 after five 2× pools
    return init_weights(nn.Sequential(features, classifier(c_in * 7 * 7, num_classes, bn=bn, width=dense)))


@register("vgg11")
def vgg11(*, num_classes: int = 2, in_channels: int = 3, dense: int = 4096) -> nn.Module:
    """`dense`: the width of its two hidden dense layers."""
    return _vgg(VGG11, num_classes, in_channels, bn=False, dense=dense)


@register("vgg11_bn")
def vgg11_bn(*, num_classes: int = 2, in_channels: int = 3, dense: int = 4096) -> nn.Module:
    return _vgg(VGG11, num_classes, in_channels, bn=True, dense=dense)


@register("nin", min_image_size=67)
def nin(*, num_classes: int = 2, in_channels: int = 3, dropout: float = 0.5) -> nn.Module:
    """No dense layer: the last NiN block has one channel per class, then global average pooling."""
    return init_weights(
        nn.Sequential(
            nin_block(in_channels, 96, 11, 4, 0),
            nn.MaxPool2d(3, 2),  # 224 → 54 → 26
            nin_block(96, 256, 5, 1, 2),
            nn.MaxPool2d(3, 2),  # → 26 → 12
            nin_block(256, 384, 3, 1, 1),
            nn.MaxPool2d(3, 2),  # → 12 → 5
            nn.Dropout(dropout),
            nin_block(384, num_classes, 3, 1, 1, scores=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
    )


# bf16 cost GoogLeNet accuracy in the CPU zoo (72 px, 4,500 test photos): 0.683 against fp32's 0.723
# (train.seed 2), 0.721 against 0.739 (seed 1); the other models moved within their seed noise (docs/speed.md)
@register("googlenet", bf16=False)
def googlenet(*, num_classes: int = 2, in_channels: int = 3) -> nn.Module:
    b1 = nn.Sequential(conv(in_channels, 64, 7, 2, 3), nn.MaxPool2d(3, 2, 1))  # 224 → 112 → 56
    b2 = nn.Sequential(conv(64, 64, 1), conv(64, 192, 3, padding=1), nn.MaxPool2d(3, 2, 1))  # → 28
    b3, c = inception_stage(192, INCEPTION_B3)  # 256, 480 channels
    b4, c = inception_stage(c, INCEPTION_B4)  # 512, 512, 512, 528, 832
    b5, c = inception_stage(c, INCEPTION_B5)  # 832, 1024
    return init_weights(
        nn.Sequential(
            b1,
            b2,
            nn.Sequential(*b3, nn.MaxPool2d(3, 2, 1)),  # → 14
            nn.Sequential(*b4, nn.MaxPool2d(3, 2, 1)),  # → 7
            nn.Sequential(*b5, nn.AdaptiveAvgPool2d(1), nn.Flatten()),
            nn.Linear(c, num_classes),
        )
    )
