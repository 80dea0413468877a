"""Typed params: one frozen dataclass per section of params.yaml, validated before any work.

Every stage calls `load()` first, so a typo or a bad value fails at once, naming the param,
the value and what is allowed, instead of after an hour of preprocessing or training.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

PARAMS_FILE = Path("params.yaml")
SOURCES = ("microsoft", "kaggle", "synthetic")
TOP_LEVEL = ("model", "data", "train", "models")


class ParamError(ValueError):
    """A bad value in params.yaml; the message names the dotted key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key} = {value!r}: {allowed}")


# ---------------------------------------------------------------- the sections


@dataclass(frozen=True)
class DataParams:
    source: str  # microsoft | kaggle | synthetic | a path to a .zip or a folder of images
    image_size: int  # px: side of the square uint8 tensors that preprocess writes
    resize: Literal["crop", "squash"]  # crop: shorter side to image_size, centre crop; squash: ignore aspect
    max_per_class: int | None  # cap on images per class before splitting (quick runs); null = all
    val_fraction: float
    test_fraction: float
    seed: int  # split and subsampling seed

    def __post_init__(self):
        _positive("data.image_size", self.image_size)
        if self.max_per_class is not None:
            _positive("data.max_per_class", self.max_per_class)
        for key in ("val_fraction", "test_fraction"):
            value = getattr(self, key)
            if not 0 < value < 1:
                raise ParamError(f"data.{key}", value, "must be a fraction strictly between 0 and 1")
        if self.val_fraction + self.test_fraction >= 1:
            raise ParamError(
                "data.val_fraction + data.test_fraction",
                round(self.val_fraction + self.test_fraction, 6),
                "must be below 1, so that images are left to train on",
            )
        if not self.source:
            raise ParamError("data.source", self.source, f"use one of {', '.join(SOURCES)} or a path")


@dataclass(frozen=True)
class TrainParams:
    """Training recipe; every key may be overridden per architecture under `models.<name>`."""

    epochs: int
    batch_size: int
    lr: float  # peak learning rate, reached after warm-up, then cosine decay to 0 (× lr_scale per model)
    optimizer: Literal["sgd", "adamw"]
    momentum: float  # SGD momentum (Nesterov); AdamW's beta1
    weight_decay: float  # decoupled; never applied to biases or normalisation weights
    warmup_epochs: float  # linear warm-up from lr/100; fractions of an epoch allowed
    label_smoothing: float
    crop_scale: tuple[float, float]  # random-resized-crop area range; (1, 1) turns cropping off
    flip: bool  # random horizontal flips
    translate: float  # random shifts up to this fraction of the side (reflected borders); 0 turns them off
    keep: Literal["last", "best"]  # the weights a model file keeps: the last epoch's, or the best on validation
    seed: int  # weight init, batch order and augmentation
    device: str  # auto (CUDA when available, else CPU) | cpu | cuda | cuda:N
    compile: bool  # torch.compile the model (CUDA only; the first epoch pays the compile time)
    resume: bool  # continue from per-epoch checkpoints made with the same model, recipe and data
    max_epochs: int | None = None  # per-architecture cap, min(epochs, max_epochs): train.epochs still reaches every model
    lr_scale: float = 1.0  # per-architecture factor on lr: train.lr still reaches every model
    processes: int = 1  # training processes on this machine (torchrun --nproc_per_node), one per GPU; not per architecture

    def __post_init__(self):
        for key in ("epochs", "batch_size", "processes"):
            _positive(f"train.{key}", getattr(self, key))
        if self.batch_size % self.processes:
            raise ParamError(
                "train.batch_size",
                self.batch_size,
                f"must be divisible by train.processes = {self.processes}: each process takes "
                f"batch_size / {self.processes} images per step, so that the global batch stays as set",
            )
        if self.max_epochs is not None:
            _positive("train.max_epochs", self.max_epochs)
        for key in ("lr", "lr_scale"):
            if not getattr(self, key) > 0:
                raise ParamError(f"train.{key}", getattr(self, key), "must be a positive number")
        if not 0 <= self.translate < 0.5:
            raise ParamError("train.translate", self.translate, "must be a fraction of the side in [0, 0.5)")
        for key, low, high in (("momentum", 0, 1), ("label_smoothing", 0, 1)):
            value = getattr(self, key)
            if not low <= value < high:
                raise ParamError(f"train.{key}", value, f"must be in [{low}, {high})")
        for key in ("weight_decay", "warmup_epochs"):
            if getattr(self, key) < 0:
                raise ParamError(f"train.{key}", getattr(self, key), "must be zero or positive")
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ParamError("train.crop_scale", list(self.crop_scale), "must be [low, high] with 0 < low <= high <= 1")
        if self.device not in ("auto", "cpu", "cuda") and not (
            self.device.startswith("cuda:") and self.device[5:].isdigit()
        ):
            raise ParamError("train.device", self.device, "use auto, cpu, cuda or cuda:N")

    @property
    def run_epochs(self) -> int:
        return min(self.epochs, self.max_epochs or self.epochs)

    @property
    def peak_lr(self) -> float:
        return self.lr * self.lr_scale


TRAIN_KEYS = frozenset(f.name for f in dataclasses.fields(TrainParams))


@dataclass(frozen=True)
class ModelSpec:
    """One architecture to train: its builder options and its resolved training recipe."""

    name: str
    options: dict = field(hash=False)  # keyword options for pipeline.models.build
    train: TrainParams
    own: tuple[str, ...] = ()  # train keys that models.<name> sets for this architecture

    def kept_values(self, train: TrainParams) -> list[str]:
        """Where this architecture does not follow the `train` section, one line each: a train key set
        under models.<name> to another value, or max_epochs capping train.epochs. lr_scale is not
        one of them: it scales train.lr, so a change to train.lr still reaches this model."""
        notes = []
        for key in self.own:
            mine, shared = getattr(self.train, key), getattr(train, key)
            if key == "max_epochs":
                if self.train.run_epochs < train.epochs:
                    notes.append(
                        f"{self.name} trains {self.train.run_epochs} epochs, not train.epochs = {train.epochs} "
                        f"(models.{self.name}.max_epochs = {mine})"
                    )
            elif key != "lr_scale" and mine != shared:
                notes.append(
                    f"{self.name} keeps its own {key} = {_show(mine)} (models.{self.name}.{key}), "
                    f"not train.{key} = {_show(shared)}"
                )
        return notes


@dataclass(frozen=True)
class Params:
    models: tuple[ModelSpec, ...]  # what `model` selects, in the registry's order
    data: DataParams
    train: TrainParams

    @property
    def model_names(self) -> list[str]:
        return [spec.name for spec in self.models]

    def recipe_table(self) -> str:
        """The effective recipe of every selected model, one row each, and below it every place where a
        model does not follow the `train` section (so that `-S train.<key>=...` never silently misses one)."""
        header = ("model", "optimizer", "lr", "weight_decay", "epochs", "batch_size", "keep")
        rows = [header]
        for spec in self.models:
            tp = spec.train
            lr = f"{tp.peak_lr:.3g}" + (f" ({tp.lr_scale:g} × lr)" if tp.lr_scale != 1 else "")
            rows.append((spec.name, tp.optimizer, lr, f"{tp.weight_decay:g}", str(tp.run_epochs), str(tp.batch_size), tp.keep))
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        lines += [f"warning: {note}" for spec in self.models for note in spec.kept_values(self.train)]
        return "\n".join(lines)


# ---------------------------------------------------------------- loading


def load(path: Path | str = PARAMS_FILE, overrides: Mapping | None = None) -> Params:
    """Read and validate params.yaml (plus optional nested overrides, as `dvc exp run -S` would set)."""
    raw = _read(Path(path))
    return parse(merge(raw, overrides) if overrides else raw)


def _read(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ParamError("params file", str(path), "not found: run from the repository root") from None
    except yaml.YAMLError as e:
        raise ParamError("params file", str(path), f"is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ParamError("params file", str(path), "must be a mapping of sections")
    return raw


def load_data(path: Path | str = PARAMS_FILE) -> DataParams:
    """The data section alone: the data stages need no model registry (nor a rerun when a model changes)."""
    raw = _read(Path(path))
    _no_unknown_keys("params.yaml", raw, TOP_LEVEL)
    return build_section(DataParams, raw.get("data"), "data")


def merge(base: Mapping, overrides: Mapping) -> dict:
    """Nested dict update: overrides win, sections merge key by key."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse(raw: Mapping) -> Params:
    from pipeline import models  # the registry validates names, options and sizes

    _no_unknown_keys("params.yaml", raw, TOP_LEVEL)
    data = build_section(DataParams, raw.get("data"), "data")
    train = build_section(TrainParams, raw.get("train"), "train")

    per_model = raw.get("models") or {}
    if not isinstance(per_model, Mapping):
        raise ParamError("models", per_model, "must be a mapping of architecture name to overrides")
    selected = models.resolve(raw.get("model", "all"))  # raises ParamError naming `model`
    # Overrides of architectures that are not selected are checked too: a typo must not wait
    # for the day that architecture is trained.
    for name in per_model:
        if name not in selected:
            models.resolve(name, key=f"models.{name}")
            model_spec(name, per_model[name], train)
    specs = tuple(model_spec(name, per_model.get(name), train) for name in selected)
    for spec in specs:
        minimum = models.min_image_size(spec.name)
        if data.image_size < minimum:
            raise ParamError(
                "data.image_size",
                data.image_size,
                f"{spec.name} needs at least {minimum} px (its strided stem and three pools leave "
                f"nothing smaller); raise data.image_size or leave {spec.name} out of `model`",
            )
    return Params(models=specs, data=data, train=train)


def model_spec(name: str, overrides: Mapping | None, train: TrainParams) -> ModelSpec:
    """Split `models.<name>` into training-recipe overrides and builder options, checking both."""
    from pipeline import models

    key = f"models.{name}"
    if overrides is not None and not isinstance(overrides, Mapping):
        raise ParamError(key, overrides, "must be a mapping of option or train key to value")
    overrides = dict(overrides or {})
    if "processes" in overrides:
        raise ParamError(
            f"{key}.processes",
            overrides["processes"],
            "one launch trains every architecture (torchrun starts train.processes processes for the "
            "whole stage); set train.processes instead",
        )
    recipe = {k: overrides.pop(k) for k in list(overrides) if k in TRAIN_KEYS}
    spec_train = build_section(TrainParams, {**_asdict(train), **recipe}, key)
    options = models.check_options(name, overrides, key=key)
    return ModelSpec(name=name, options=options, train=spec_train, own=tuple(sorted(recipe)))


def build_section(cls, raw: Any, section: str):
    """Build a section dataclass from a mapping: every key known, every value of its declared type."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ParamError(section, raw, "must be a mapping of keys to values")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _no_unknown_keys(section, raw, fields)
    values = {}
    for name, f in fields.items():
        key = f"{section}.{name}"
        if name in raw:
            values[name] = coerce(key, raw[name], hints[name])
        elif f.default is dataclasses.MISSING:
            raise ParamError(key, None, "is missing from params.yaml")
    try:
        return cls(**values)
    except ParamError as e:
        prefix, _, rest = e.key.partition(".")
        if rest and prefix != section:  # a train key checked under models.<name>: name where it came from
            raise ParamError(f"{section}.{rest}", e.value, e.allowed) from None
        raise


def coerce(key: str, value: Any, hint: Any) -> Any:
    """Check `value` against a type hint; numbers written as strings (YAML reads 1e-3 as a string) become floats."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return coerce(key, value, option)
            except ParamError as e:
                errors.append(e.allowed)
        raise ParamError(key, value, " or ".join(errors) + (" or null" if type(None) in args else ""))
    if origin is Literal:
        if value in args:
            return value
        raise ParamError(key, value, f"use one of {', '.join(map(str, args))}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ParamError(key, value, "must be true or false")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ParamError(key, value, "must be a whole number")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ParamError(key, value, "must be a number")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ParamError(key, value, "must be a string")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ParamError(key, value, "must be a list")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ParamError(key, value, f"must be a list of {len(args)} values")
            return tuple(coerce(f"{key}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if hint is Any:
        return value
    raise TypeError(f"{key}: unsupported type hint {hint!r}")


def _no_unknown_keys(section: str, raw: Mapping, known) -> None:
    unknown = sorted(set(raw) - set(known))
    if unknown:
        where = "" if section == "params.yaml" else f"{section}."
        raise ParamError(f"{where}{unknown[0]}", raw[unknown[0]], f"unknown key; known keys here: {', '.join(sorted(known))}")


def _positive(key: str, value: int) -> None:
    if value <= 0:
        raise ParamError(key, value, "must be a positive whole number")


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(list(value) if isinstance(value, tuple) else value)


def _asdict(section) -> dict:
    return {f.name: getattr(section, f.name) for f in dataclasses.fields(section)}
