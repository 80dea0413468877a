"""Transfer learning done right: a torchvision backbone with ImageNet weights under a gentler head.

The course's ResNet-50 fine-tuning made three mistakes, each prevented here by construction:
- `param.requirse_grad = False` froze nothing: freezing is done here, once, by `requires_grad_(False)`,
  and tests check that frozen weights and BatchNorm statistics stay bit-identical;
- evaluation without `model.eval()`: frozen parts are kept in eval mode even while the head trains, and
  every prediction in this project goes through one `predict` that sets eval mode itself;
- 2048 → 2 in one step: the head is `head` hidden layers with ReLU and dropout (default 2048 → 512 → 2).

Grey input (`in_channels=1`) keeps the pretrained first layer: its filters summed over R, G and B.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
from torch import nn

from pipeline.common.errors import ParamError, StageError
from pipeline.models.registry import register, register_family

TORCHVISION = "torchvision:"  # prefix naming any torchvision classification model, e.g. torchvision:efficientnet_b0


def _tv():
    """torchvision's `models`, imported on first use: importing it costs every stage 2 to 3 s of its
    start (here, on top of torch's 2), and only these transfer models need it."""
    from torchvision import models

    return models


class TransferModel(nn.Module):
    """backbone (B, C, S, S) → (B, features), then head → (B, classes)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, frozen: list[str], backbone_lr_scale: float):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.frozen = frozen  # submodules of the backbone that never train (eval mode, no grad)
        self.backbone_lr_scale = backbone_lr_scale
        for name in frozen:
            backbone.get_submodule(name).requires_grad_(False)

    def train(self, mode: bool = True) -> TransferModel:
        super().train(mode)
        # A frozen BatchNorm in train mode would still update its running mean and variance from
        # Dog-vs-Cat batches (and Dropout would still drop): frozen means frozen.
        for name in self.frozen:
            self.backbone.get_submodule(name).eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def param_groups(self, lr: float) -> list[dict]:
        """Trainable parameters only; an unfrozen backbone learns `backbone_lr_scale` times slower."""
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        groups = [{"params": list(self.head.parameters()), "lr": lr}]
        if backbone:
            groups.append({"params": backbone, "lr": lr * self.backbone_lr_scale})
        return groups


def make_head(features: int, hidden: list[int], num_classes: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(features, width), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        features = width
    return nn.Sequential(*layers, nn.Linear(features, num_classes))


def frozen_modules(backbone: nn.Module, freeze: str) -> list[str]:
    """Names of the largest submodules to freeze ("" is the whole backbone): all (`backbone`), none,
    or everything before submodule `freeze`."""
    if freeze == "none":
        return []
    if freeze == "backbone":
        return [""]
    first = next(name for name, _ in backbone.get_submodule(freeze).named_parameters())
    order = [name for name, _ in backbone.named_parameters()]
    cut = order.index(f"{freeze}.{first}")  # parameters are registered in forward order
    frozen_params = set(order[:cut])

    def walk(module: nn.Module, prefix: str) -> list[str]:
        names = [f"{prefix}{n}" for n, _ in module.named_parameters()]
        if names and all(n in frozen_params for n in names):
            return [prefix.rstrip(".")]
        if not any(n in frozen_params for n in names):
            return []
        return [m for child_name, child in module.named_children() for m in walk(child, f"{prefix}{child_name}.")]

    return walk(backbone, "")


def _classifier_path(model: nn.Module) -> str:
    """The last Linear layer: torchvision's ImageNet classifier (fc, classifier[-1], heads.head...)."""
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ParamError("model", type(model).__name__, "has no final Linear layer to replace with a head")
    return linears[-1]


def grey_input(model: nn.Module) -> None:
    """Make the model's first convolution take one channel, its filters (out, 3, k, k) summed over
    R, G and B into (out, 1, k, k): a grey photo is R = G = B, so the pretrained layer's response to
    it is unchanged (up to the per-channel normalisation, which grey input shares: pipeline.data)."""
    path, first = next((name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d))
    if first.in_channels != 3 or first.groups != 1:
        raise ParamError("data.channels", 1, f"{type(model).__name__}'s first convolution does not read 3 channels")
    grey = nn.Conv2d(
        1, first.out_channels, first.kernel_size, first.stride, first.padding, first.dilation,
        bias=first.bias is not None, padding_mode=first.padding_mode,
    )  # fmt: skip
    with torch.no_grad():
        grey.weight.copy_(first.weight.sum(dim=1, keepdim=True))
        if first.bias is not None:
            grey.bias.copy_(first.bias)
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, grey)


def weights_file(tv_name: str, weights: str | None) -> tuple[Path, str]:
    """(local file, URL) of the ImageNet weights: `weights` names a file, or one of torchvision's
    published sets for this model (IMAGENET1K_V1, the course's; IMAGENET1K_V2...), kept in torch hub's
    usual cache; null is torchvision's DEFAULT set (IMAGENET1K_V2 for ResNet-50)."""
    published = _tv().get_model_weights(tv_name)
    if _names_a_file(tv_name, weights):
        return Path(weights).expanduser(), published.DEFAULT.url
    url = published[weights or "DEFAULT"].url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url), url


def published_names(tv_name: str) -> list[str]:
    return [name for name in _tv().get_model_weights(tv_name).__members__ if name != "DEFAULT"]


def _names_a_file(tv_name: str, weights: str | None) -> bool:
    """`weights` is a path to a state-dict file, not null nor the name of a published set."""
    return bool(weights) and weights not in _tv().get_model_weights(tv_name).__members__


def ensure_weights(tv_name: str, weights: str | None) -> Path:
    """The weights file, downloaded into the cache if needed; fails at once with what to do, rather
    than letting a run silently train from random weights."""
    path, url = weights_file(tv_name, weights)
    if path.exists():
        return path
    if _names_a_file(tv_name, weights):
        raise StageError(
            f"{tv_name}: weights file {path} (set by `weights`) does not exist; `weights` is a state-dict "
            f"file or one of torchvision's published sets: {', '.join(published_names(tv_name))}"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), progress=True)  # writes a temp file, then renames
        return path
    except Exception as e:  # no network, proxy, disk: all end the same way for the user
        raise StageError(
            f"{tv_name}: ImageNet weights are not in {path} and could not be downloaded from {url} "
            f"({type(e).__name__}: {e}). Download that file on a machine with internet and put it at {path}, "
            f"or set `weights: /path/to/{path.name}` for this model in params.yaml, "
            f"or `pretrained: false` to train from random weights."
        ) from None


def torchvision_model(
    tv_name: str,
    *,
    num_classes: int = 2,
    in_channels: int = 3,
    pretrained: bool = True,
    freeze: str = "backbone",
    head: list[int] = (512,),  # hidden widths: [512] is 2048 → 512 → 2 for ResNet-50; [] a single Linear
    dropout: float = 0.5,
    backbone_lr_scale: float = 0.1,
    weights: str | None = None,  # a published set (IMAGENET1K_V1...) or a state-dict file; null: DEFAULT
) -> TransferModel:
    extra = {"aux_logits": True} if tv_name in ("googlenet", "inception_v3") else {}
    if pretrained and extra and in_channels == 3:
        extra["transform_input"] = True  # these weights expect their own input scaling (of RGB)
    model = _tv().get_model(tv_name, weights=None, **extra)
    if pretrained:
        state = torch.load(ensure_weights(tv_name, weights), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    if extra:  # training uses the main output only
        model.aux_logits = False
        for aux in ("aux1", "aux2", "AuxLogits"):
            if hasattr(model, aux):
                setattr(model, aux, None)
    if in_channels == 1:
        grey_input(model)
    path = _classifier_path(model)
    features = model.get_submodule(path).in_features
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, nn.Identity())
    # `freeze` and `backbone_lr_scale` keep pretrained features: random ones must train at the full rate
    return TransferModel(
        model,
        make_head(features, list(head), num_classes, dropout),
        frozen_modules(model, freeze) if pretrained else [],
        backbone_lr_scale if pretrained else 1.0,
    )


def check_options(tv_name: str, key: str, **options) -> None:
    """Values beyond their types, checked on a skeleton built on the meta device (no memory, no weights)."""
    if any(w <= 0 for w in options.get("head", ())):
        raise ParamError(f"{key}.head", options["head"], "hidden widths must be positive")
    if not 0 <= options.get("dropout", 0) < 1:
        raise ParamError(f"{key}.dropout", options["dropout"], "must be in [0, 1)")
    if options.get("backbone_lr_scale", 1) <= 0:
        raise ParamError(f"{key}.backbone_lr_scale", options["backbone_lr_scale"], "must be positive")
    freeze = options.get("freeze", "backbone")
    if freeze not in ("backbone", "none"):
        with torch.device("meta"):
            skeleton = _tv().get_model(tv_name, weights=None)
        children = [name for name, m in skeleton.named_modules() if name and any(True for _ in m.parameters())]
        if freeze not in children or freeze == _classifier_path(skeleton):
            top = [n for n, _ in skeleton.named_children()]
            raise ParamError(
                f"{key}.freeze",
                freeze,
                f"use backbone (only the head trains), none (everything trains) or a submodule of "
                f"{tv_name} to train from, e.g. one of {', '.join(top)}",
            )


register_family(
    TORCHVISION,
    "any torchvision classification model",
    torchvision_model,
    members=lambda: _tv().list_models(module=_tv()),
    check=check_options,
)


@register("resnet50", check=functools.partial(check_options, "resnet50"))
def resnet50(
    *,
    num_classes: int = 2,
    in_channels: int = 3,
    pretrained: bool = True,
    freeze: str = "backbone",
    head: list[int] = (512,),
    dropout: float = 0.5,
    backbone_lr_scale: float = 0.1,
    weights: str | None = None,
) -> TransferModel:
    """torchvision's ResNet-50 with ImageNet weights; `freeze: layer4` trains layer4 and the head."""
    return torchvision_model(
        "resnet50",
        num_classes=num_classes,
        in_channels=in_channels,
        pretrained=pretrained,
        freeze=freeze,
        head=head,
        dropout=dropout,
        backbone_lr_scale=backbone_lr_scale,
        weights=weights,
    )
