"""A registry of model builders: `build(name, num_classes=2, in_channels=3, **options) -> nn.Module`.

Each builder takes keyword-only options; their annotations and defaults are the contract that
params.yaml's `models.<name>` section is checked against before any work starts. A family of models
named by a prefix (`torchvision:<name>`) registers one builder for all its names.

A leaf of the model package: it imports no architecture and nothing of params (params asks it).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from pipeline.common.errors import ParamError
from pipeline.common.schema import coerce
from pipeline.models import inputs
from pipeline.models.inputs import IMAGENET, Normalization, Pretrained


@dataclass(frozen=True)
class Arch:
    builder: Callable[..., nn.Module]
    min_image_size: int  # px: smallest square input whose feature maps stay at least 1×1
    check: Callable[..., None] | None  # check(key=..., **options): option values beyond their types
    zoo: bool = True  # trained by `model: all`; else only when named
    # weights(**options): the pretrained weights at hand, or a StageError saying how
    weights: Callable[..., None] | None = None
    # runtime.precision auto may train it in bf16; False: measured to cost it accuracy, auto keeps fp32
    bf16: bool = True
    # its published weights: their accuracy, native size and the inputs they expect
    pretrained: Pretrained | None = None
    # a dataclass of its options, shared by a family of builders; None: the builder's keyword-only arguments
    options: type | None = None


@dataclass(frozen=True)
class Family:
    """Models named `prefix + member`; the builder and check take the member name first."""

    prefix: str
    about: str  # what the family holds, for error messages: "any torchvision classification model"
    members: Callable[[], list[str]]
    builder: Callable[..., nn.Module]  # builder(member, *, num_classes, in_channels, **options)
    check: Callable[..., None] | None  # check(member, key=..., **options)
    weights: Callable[..., None] | None = None  # weights(member, **options)
    options: type | None = None  # as Arch.options
    normalization: Normalization = IMAGENET  # the inputs its members' weights expect

    def member(self, name: str) -> str | None:
        """`name` without the prefix, if it names a member of this family."""
        if name.startswith(self.prefix) and name[len(self.prefix) :] in self.members():
            return name[len(self.prefix) :]
        return None


# Every builder's arguments that the data sets, not params.yaml's models.<name>: never options
DATA_SHAPED = ("num_classes", "in_channels")
_ARCHS: dict[str, Arch] = {}
_FAMILIES: list[Family] = []


def register(
    name: str,
    *,
    min_image_size: int = 32,
    check: Callable[..., None] | None = None,
    zoo: bool = True,
    weights: Callable[..., None] | None = None,
    bf16: bool = True,
    pretrained: Pretrained | None = None,
    options: type | None = None,
):
    def add(builder):
        _ARCHS[name] = Arch(builder, min_image_size, check, zoo, weights, bf16, pretrained, options)
        return builder

    return add


def register_family(
    prefix: str,
    about: str,
    builder: Callable[..., nn.Module],
    *,
    members: Callable[[], list[str]],
    check: Callable[..., None] | None = None,
    weights: Callable[..., None] | None = None,
    options: type | None = None,
) -> None:
    _FAMILIES.append(Family(prefix, about, members, builder, check, weights, options))


def names() -> list[str]:
    """The zoo that `model: all` trains, in registration order (cheapest idea first, as in the course)."""
    return [name for name, arch in _ARCHS.items() if arch.zoo]


def registered() -> list[str]:
    """Every registered architecture: the zoo, then the ones trained only when named."""
    return names() + [name for name, arch in _ARCHS.items() if not arch.zoo]


def ensure_weights(name: str, options: dict) -> None:
    """Make sure a pretrained model's weights are at hand (fetched into a cache where that is how
    they come), or raise the StageError that says what to do; nothing for other models."""
    if name in _ARCHS:
        if _ARCHS[name].weights:
            _ARCHS[name].weights(**options)
    elif found := _family(name):
        family, member = found
        if family.weights:
            family.weights(member, **options)


def resolve(value, key: str = "model") -> list[str]:
    """`all`, one name or a list of names -> validated names in the zoo's order (requested extras last)."""
    if value == "all":
        return names()
    requested = [value] if isinstance(value, str) else value
    if not isinstance(requested, list) or not requested or not all(isinstance(n, str) for n in requested):
        raise ParamError(key, value, f"use all, one name or a list of names from: {', '.join(registered())}")
    for name in requested:
        if name not in _ARCHS and not _family(name):
            raise _unknown(name, key)
    if len(set(requested)) != len(requested):
        raise ParamError(key, value, "names each architecture more than once")
    order = {name: i for i, name in enumerate(registered())}
    return sorted(requested, key=lambda n: order.get(n, len(order)))


def _unknown(name: str, key: str) -> ParamError:
    families = "".join(f", or {f.prefix}<name> for {f.about}" for f in _FAMILIES)
    return ParamError(key, name, f"unknown architecture; valid names: all, {', '.join(registered())}{families}")


def _family(name: str) -> tuple[Family, str] | None:
    for family in _FAMILIES:
        if (member := family.member(name)) is not None:
            return family, member
    return None


def _builder(name: str) -> Callable[..., nn.Module]:
    if name in _ARCHS:
        return _ARCHS[name].builder
    if found := _family(name):
        family, member = found
        return functools.partial(family.builder, member)
    raise _unknown(name, "name")


def bf16_ok(name: str) -> bool:
    """Whether `runtime.precision: auto` may choose bf16 for this architecture (families: yes)."""
    return _ARCHS[name].bf16 if name in _ARCHS else True


def min_image_size(name: str) -> int:
    return _ARCHS[name].min_image_size if name in _ARCHS else 32


def pretrained(name: str) -> Pretrained | None:
    """What architecture `name`'s published weights are; None for the from-scratch zoo and families."""
    return _ARCHS[name].pretrained if name in _ARCHS else None


def normalization(name: str) -> Normalization:
    """The RGB inputs architecture `name` takes: its pretrained weights' own, else ImageNet's."""
    if name in _ARCHS:
        return _ARCHS[name].pretrained.normalization if _ARCHS[name].pretrained else IMAGENET
    if found := _family(name):
        return found[0].normalization
    raise _unknown(name, "name")


def option_types(name: str) -> dict[str, tuple[object, object]]:
    """{option: (type hint, default)}: the fields of the architecture's options dataclass, or its
    builder's keyword-only arguments."""
    if name in _ARCHS:
        builder, options = _ARCHS[name].builder, _ARCHS[name].options
    elif found := _family(name):
        builder, options = found[0].builder, found[0].options
    else:
        raise _unknown(name, "name")
    if options is not None:
        hints = typing.get_type_hints(options)
        return {f.name: (hints[f.name], f.default) for f in dataclasses.fields(options)}
    hints = typing.get_type_hints(builder)
    return {
        p.name: (hints[p.name], p.default)
        for p in inspect.signature(builder).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in DATA_SHAPED
    }


def check_options(name: str, options: dict, key: str, also_known=()) -> dict:
    """Validate builder options from params.yaml; returns them typed. Errors name `key.<option>`;
    `also_known`: other keys the caller accepts at that place (listed when a key is unknown)."""
    known = option_types(name)
    values = {}
    for option, value in options.items():
        if option not in known:
            allowed = sorted(known) + sorted(also_known)
            raise ParamError(f"{key}.{option}", value, f"unknown key; known keys for {name}: {', '.join(allowed)}")
        values[option] = coerce(f"{key}.{option}", value, known[option][0])
    if "dropout" in values and not 0 <= values["dropout"] < 1:  # every builder's dropout is a probability
        raise ParamError(
            f"{key}.dropout", values["dropout"], "must be a probability in [0, 1): the share of units dropped"
        )
    if "dense" in values and values["dense"] < 1:  # AlexNet's and VGG's hidden dense layers
        raise ParamError(
            f"{key}.dense", values["dense"], "must be a whole number of units, 1 or more (4096: the paper's)"
        )
    if name in _ARCHS:
        check = _ARCHS[name].check
    else:
        family, member = _family(name)
        check = family.check and functools.partial(family.check, member)
    if check:
        check(key=key, **values)
    return values


def build(name: str, num_classes: int = 2, in_channels: int = 3, **options) -> nn.Module:
    """Build architecture `name` for `num_classes` outputs and `in_channels` input channels (3: RGB,
    1: grey); unknown names list the valid ones. The network carries the normalisation its inputs
    take (inputs.of)."""
    model = _builder(name)(num_classes=num_classes, in_channels=in_channels, **options)
    return inputs.attach(model, normalization(name).for_channels(in_channels))
