"""A registry of model builders: `build(name, num_classes=2, **options) -> nn.Module`.

Each builder takes keyword-only options; their annotations and defaults are the contract that
params.yaml's `models.<name>` section is checked against before any work starts.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from pipeline.params import ParamError, coerce

TORCHVISION = "torchvision:"  # prefix naming any torchvision classification model, e.g. torchvision:efficientnet_b0


@dataclass(frozen=True)
class Arch:
    builder: Callable[..., nn.Module]
    min_image_size: int  # px: smallest square input whose feature maps stay at least 1×1
    check: Callable[..., None] | None  # check(key=..., **options): option values beyond their types


_ARCHS: dict[str, Arch] = {}


def register(name: str, *, min_image_size: int = 32, check: Callable[..., None] | None = None):
    def add(builder):
        _ARCHS[name] = Arch(builder, min_image_size, check)
        return builder

    return add


def names() -> list[str]:
    """The zoo that `model: all` trains, in registration order (cheapest idea first, as in the course)."""
    return list(_ARCHS)


def resolve(value, key: str = "model") -> list[str]:
    """`all`, one name or a list of names -> validated names in the zoo's order (requested extras last)."""
    if value == "all":
        return names()
    requested = [value] if isinstance(value, str) else value
    if not isinstance(requested, list) or not requested or not all(isinstance(n, str) for n in requested):
        raise ParamError(key, value, f"use all, one name or a list of names from: {', '.join(names())}")
    for name in requested:
        if name not in _ARCHS and not _is_torchvision(name):
            raise ParamError(
                key,
                name,
                f"unknown architecture; valid names: all, {', '.join(names())}, "
                f"or {TORCHVISION}<name> for any torchvision classification model",
            )
    if len(set(requested)) != len(requested):
        raise ParamError(key, value, "names each architecture more than once")
    order = {name: i for i, name in enumerate(names())}
    return sorted(requested, key=lambda n: order.get(n, len(order)))


def _is_torchvision(name: str) -> bool:
    from torchvision import models as tv

    return name.startswith(TORCHVISION) and name[len(TORCHVISION) :] in tv.list_models(module=tv)


def _builder(name: str) -> Callable[..., nn.Module]:
    if name in _ARCHS:
        return _ARCHS[name].builder
    if _is_torchvision(name):
        from pipeline.models.transfer import torchvision_model

        return lambda **options: torchvision_model(name[len(TORCHVISION) :], **options)
    resolve(name, key="name")  # raises the error that lists the valid names
    raise AssertionError


def min_image_size(name: str) -> int:
    return _ARCHS[name].min_image_size if name in _ARCHS else 32


def option_types(name: str) -> dict[str, tuple[object, object]]:
    """{option: (type hint, default)} of a builder's keyword-only options."""
    builder = _ARCHS[name].builder if name in _ARCHS else _torchvision_signature()
    hints = typing.get_type_hints(builder)
    return {
        p.name: (hints[p.name], p.default)
        for p in inspect.signature(builder).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "num_classes"
    }


def _torchvision_signature():
    from pipeline.models.transfer import torchvision_model

    return torchvision_model


def check_options(name: str, options: dict, key: str) -> dict:
    """Validate builder options from params.yaml; returns them typed. Errors name `key.<option>`."""
    from pipeline.params import TRAIN_KEYS

    known = option_types(name)
    values = {}
    for option, value in options.items():
        if option not in known:
            allowed = sorted(known) + sorted(TRAIN_KEYS)
            raise ParamError(f"{key}.{option}", value, f"unknown key; known keys for {name}: {', '.join(allowed)}")
        values[option] = coerce(f"{key}.{option}", value, known[option][0])
    if name in _ARCHS:
        check = _ARCHS[name].check
    else:
        from pipeline.models.transfer import check_options as check_torchvision

        check = functools.partial(check_torchvision, name[len(TORCHVISION) :])
    if check:
        check(key=key, **values)
    return values


def build(name: str, num_classes: int = 2, **options) -> nn.Module:
    """Build architecture `name` for `num_classes` outputs; unknown names list the valid ones."""
    return _builder(name)(num_classes=num_classes, **options)


def preflight(specs, image_size: int) -> None:
    """Fail before any training: fetch missing pretrained weights now (or say exactly what to do),
    and run every model on the meta device (no memory, no weights) at the image size, so a shape
    error surfaces in a second rather than after the models before it have trained."""
    import torch

    from pipeline.io import StageError
    from pipeline.models.transfer import ensure_weights

    for spec in specs:
        options = dict(spec.options)
        if "pretrained" in option_types(spec.name):
            if options.get("pretrained", option_types(spec.name)["pretrained"][1]):
                ensure_weights(spec.name.removeprefix(TORCHVISION), options.get("weights"))
            options["pretrained"] = False
        with torch.device("meta"):
            try:
                build(spec.name, **options).eval()(torch.empty(2, 3, image_size, image_size))
            except RuntimeError as e:
                raise StageError(f"{spec.name} cannot take {image_size} px images: {e}") from None


def feature_map(name: str, image_size: int) -> tuple[int, int] | None:
    """(side of the last feature map, side the classifier reads) at `image_size` px: the input and the
    output of the model's last adaptive average pool, found on the meta device (no memory, no weights);
    None for a model without one (a vision transformer, say).

    Global pooling models read 1; AlexNet and VGG read 5 and 7 whatever the input, so below 224 px
    their pool copies a smaller map up to that size, which adds dense weights but no information."""
    import torch

    options = {"pretrained": False} if "pretrained" in option_types(name) else {}
    with torch.device("meta"):
        model = build(name, **options).eval()
        pools = [m for m in model.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
        if not pools:
            return None
        seen = {}
        pools[-1].register_forward_hook(lambda m, inputs, output: seen.update(side=(inputs[0].shape[-1], output.shape[-1])))
        model(torch.empty(1, 3, image_size, image_size))
    return seen["side"]
