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
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pipeline.common.errors import ParamError, StageError
from pipeline.models import weightsfile
from pipeline.models.inputs import IMAGENET, Pretrained
from pipeline.models.registry import register, register_family

TORCHVISION = "torchvision:"  # prefix naming any torchvision classification model, e.g. torchvision:efficientnet_b0


def _tv():
    """torchvision's `models`, imported on first use: importing it costs every stage 2 to 3 s of its
    start (here, on top of torch's 2), and only these transfer models need it."""
    from torchvision import models

    return models


class TransferModel(nn.Module):
    """backbone (B, C, S, S) → (B, features), then head → (B, classes).

    `freeze_epochs`: the frozen parts train from that epoch on, at the backbone's rate (fastai's
    `fine_tune`: the head first, then everything); they are in the optimiser from the start, where
    parameters without a gradient are skipped, so the schedule and the resume state need no change.

    `precompute`: while the whole backbone is frozen, training computes its features once and trains
    the head on them (training.precompute).

    `head_only` reproduces the course's `requirse_grad` typo on purpose (models.<name>.requirse_grad):
    nothing is frozen (every BatchNorm in train mode, every weight requires a gradient, so every step
    back-propagates through the whole network), but the optimiser is given the head alone, as the
    course's `optim.Adam(net.fc.parameters())` was: the backbone's weights stay, its statistics drift."""

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        frozen: list[str],
        backbone_lr_scale: float,
        *,
        head_only: bool = False,
        freeze_epochs: int | None = None,
        precompute: bool = False,
    ):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.frozen = frozen  # submodules of the backbone that do not train (eval mode, no grad), for now
        self.backbone_lr_scale = backbone_lr_scale
        self.head_only = head_only
        self.freeze_epochs = freeze_epochs if frozen else None
        self.precompute = precompute and frozen == [
            ""
        ]  # training.precompute: the head trains on features computed once while all of the backbone is frozen
        for name in frozen:
            backbone.get_submodule(name).requires_grad_(False)

    def train(self, mode: bool = True) -> TransferModel:
        super().train(mode)
        # A frozen BatchNorm in train mode would still update its running mean and variance from
        # Dog-vs-Cat batches (and Dropout would still drop): frozen means frozen.
        for name in self.frozen:
            self.backbone.get_submodule(name).eval()
        return self

    def thaw(self, epoch: int) -> None:
        """Before epoch `epoch` (from 0): from `freeze_epochs` on, nothing is frozen any more."""
        if self.freeze_epochs is not None and epoch >= self.freeze_epochs and self.frozen:
            self.frozen = []
            self.backbone.requires_grad_(True)
            self.train(self.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def param_groups(self, lr: float) -> list[dict]:
        """The head at `lr`; the backbone's parameters that train (or will, after `freeze_epochs`)
        `backbone_lr_scale` times slower; none of them for the course's `requirse_grad`."""
        later = self.freeze_epochs is not None
        backbone = [p for p in self.backbone.parameters() if p.requires_grad or later]
        groups = [{"params": list(self.head.parameters()), "lr": lr}]
        if backbone and not self.head_only:
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
    it is unchanged (up to the per-channel normalisation, which grey input shares: runtime.tensors).
    The layer is changed in place, so a subclass of Conv2d (TensorFlow-style padding) keeps its forward."""
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    if first.in_channels != 3 or first.groups != 1:
        raise ParamError("data.channels", 1, f"{type(model).__name__}'s first convolution does not read 3 channels")
    with torch.no_grad():
        first.weight = nn.Parameter(first.weight.sum(dim=1, keepdim=True))
    first.in_channels = 1


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


def load_weights(model: nn.Module, path: Path, name: str) -> None:
    """Load the state-dict file at `path` into `model`, as data only (`weights_only`); StageError
    naming the file when it is not a state dict, or not one of this network (the names or shapes of
    its tensors differ): a `weights:` file is checked by `check` this way, before any work."""
    state = weightsfile.load(path, f"{name}: weights file", noun="a state-dict file")
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise StageError(
            f"{name}: weights file {path} holds a {type(state).__name__}, not a state dict (parameter names to tensors)"
        )
    if why := weightsfile.problem(state, model.state_dict()):
        raise StageError(f"{name}: weights file {path} is not ImageNet weights this code can use: {why}")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # missing or unexpected keys, or shapes that differ
        first = " ".join(str(e).split())[:240]
        raise StageError(f"{name}: weights file {path} is not a state dict of {name}: {first}") from None


def hub_weights(tv_name: str, weights: str | None) -> Path:
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


@dataclass(frozen=True)
class TransferOptions:
    """The options of every pretrained network under a new head (models.<name> in params.yaml): one
    type for ResNet-50, any torchvision model and every EfficientNet-Lite, read by the registry."""

    pretrained: bool = True  # its published weights; false: random, all of it trains at the full rate
    freeze: str = "backbone"  # backbone: only the head trains | none | a submodule to train from (layer4, _blocks.10)
    # hidden widths: [512] is features → 512 → classes; [] a single Linear, the course's abrupt head
    head: list[int] = (512,)
    dropout: float = 0.5  # in the head, after each hidden layer
    backbone_lr_scale: float = 0.1  # the backbone's rate, × the head's
    # a state-dict file (or a torchvision set's name: IMAGENET1K_V1...); null: the published default
    weights: str | None = None
    requirse_grad: bool = False  # the course's typo, on purpose: nothing frozen, the optimiser given only the head
    # epochs `freeze` holds for, then everything trains (fastai's fine_tune); null: all
    freeze_epochs: int | None = None
    # while the whole backbone is frozen, train the head on its features computed once (fastai's precompute; flips
    # only); else nothing
    precompute: bool = False


def transfer_model(backbone: nn.Module, features: int, num_classes: int, o: TransferOptions) -> TransferModel:
    """`backbone` (B, C, S, S) → (B, features), its classifier already removed, under a new head as
    `o` says. `freeze` and `backbone_lr_scale` keep pretrained features: random ones train at the full rate."""
    return TransferModel(
        backbone,
        make_head(features, list(o.head), num_classes, o.dropout),
        frozen_modules(backbone, o.freeze) if o.pretrained and not o.requirse_grad else [],
        o.backbone_lr_scale if o.pretrained else 1.0,
        head_only=o.requirse_grad,
        freeze_epochs=o.freeze_epochs,
        precompute=o.precompute,
    )


def torchvision_model(tv_name: str, *, num_classes: int = 2, in_channels: int = 3, **options) -> TransferModel:
    """torchvision's `tv_name` with its ImageNet weights under a new head (TransferOptions)."""
    o = TransferOptions(**options)
    extra = {"aux_logits": True} if tv_name in ("googlenet", "inception_v3") else {}
    if o.pretrained and extra and in_channels == 3:
        extra["transform_input"] = True  # these weights expect their own input scaling (of RGB)
    model = _tv().get_model(tv_name, weights=None, **extra)
    if o.pretrained:
        load_weights(model, hub_weights(tv_name, o.weights), tv_name)
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
    return transfer_model(model, features, num_classes, o)


MAX_HEAD_WIDTH = 16_384


def check_head(key: str, **options) -> None:
    """The options every transfer model shares, beyond their types."""
    if any(w <= 0 for w in options.get("head", ())):
        raise ParamError(f"{key}.head", options["head"], "hidden widths must be positive")
    if any(w > MAX_HEAD_WIDTH for w in options.get("head", ())) or len(options.get("head", ())) > 8:
        raise ParamError(
            f"{key}.head",
            options["head"],
            f"at most 8 hidden layers of at most {MAX_HEAD_WIDTH:,} units (AlexNet's and VGG's heads are 4,096 wide)",
        )
    if not 0 <= options.get("dropout", 0) < 1:
        raise ParamError(f"{key}.dropout", options["dropout"], "must be in [0, 1)")
    if options.get("backbone_lr_scale", 1) <= 0:
        raise ParamError(f"{key}.backbone_lr_scale", options["backbone_lr_scale"], "must be positive")
    if (epochs := options.get("freeze_epochs")) is not None and epochs < 0:
        raise ParamError(
            f"{key}.freeze_epochs", epochs, "must be 0 or more epochs (null: freeze holds for every epoch)"
        )


def precomputes(options: dict) -> bool:
    """Whether a transfer model with these options trains its head on precomputed features for a
    while: `precompute` and a whole pretrained backbone frozen (elsewhere `precompute` has nothing to
    do: features that train cannot be computed once)."""
    frozen = (
        options.get("freeze", "backbone") == "backbone"
        and options.get("pretrained", True)
        and not options.get("requirse_grad")
    )
    return bool(options.get("precompute")) and frozen


def check_freeze(skeleton: nn.Module, name: str, key: str, freeze: str) -> None:
    """`freeze` is backbone, none, or a submodule of `skeleton` (that has parameters) to train from."""
    if freeze in ("backbone", "none"):
        return
    children = [n for n, m in skeleton.named_modules() if n and any(True for _ in m.parameters())]
    if freeze not in children or freeze == _classifier_path(skeleton):
        top = [n for n, _ in skeleton.named_children()]
        raise ParamError(
            f"{key}.freeze",
            freeze,
            f"use backbone (only the head trains), none (everything trains) or a submodule of "
            f"{name} to train from, e.g. one of {', '.join(top)}",
        )


def check_options(tv_name: str, key: str, **options) -> None:
    """Values beyond their types, `freeze` checked on a skeleton built on the meta device (no memory, no weights)."""
    check_head(key, **options)
    if options.get("freeze", "backbone") not in ("backbone", "none"):
        with torch.device("meta"):
            skeleton = _tv().get_model(tv_name, weights=None)
        check_freeze(skeleton, tv_name, key, options["freeze"])


def _torchvision_weights(tv_name: str, *, pretrained: bool = True, weights: str | None = None, **_) -> None:
    if pretrained:
        hub_weights(tv_name, weights)


register_family(
    TORCHVISION,
    "any torchvision classification model",
    torchvision_model,
    members=lambda: _tv().list_models(module=_tv()),
    check=check_options,
    weights=_torchvision_weights,
    options=TransferOptions,
)


# The course's network: `freeze: layer4` trains layer4 and the head.
register(
    "resnet50",
    check=functools.partial(check_options, "resnet50"),
    weights=functools.partial(_torchvision_weights, "resnet50"),
    options=TransferOptions,
    pretrained=Pretrained(
        top1=80.858, native_size=224, normalization=IMAGENET, source="torchvision's IMAGENET1K_V2 (torch hub download)"
    ),
)(functools.partial(torchvision_model, "resnet50"))
