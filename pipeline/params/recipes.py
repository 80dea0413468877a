"""Typed params: what `model` selects, each architecture's resolved recipe, validated before any work.

`load()` reads params.yaml into `Params`: the `data`, `train` and `runtime` sections
(pipeline.params.sections), and one ModelSpec per selected architecture, its `models.<name>`
overrides split into train keys (a recipe of its own, reported by `recipe_table`) and builder
options, checked against the model registry. A ModelSpec's `train.lr` is that architecture's own
rate, train.lr × its lr_scale: the one value every later step calls `lr`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import models
from pipeline.common import schema
from pipeline.common.errors import ParamError, StageError
from pipeline.params.sections import (
    PARAMS_FILE,
    TOP_LEVEL,
    TRAIN_KEYS,
    DataParams,
    EvaluateParams,
    RuntimeParams,
    TrainParams,
)


@dataclass(frozen=True)
class ModelSpec:
    """One architecture to train: its builder options and its resolved training recipe."""

    name: str
    options: dict = field(hash=False)  # keyword options for pipeline.models.build
    train: TrainParams
    own: dict = field(default_factory=dict, hash=False)  # train keys models.<name> sets, and their values

    def kept_values(self, train: TrainParams) -> list[str]:
        """Where this architecture does not follow the `train` section, one line each: a train key set
        under models.<name> to another value, or max_epochs capping train.epochs. lr_scale is not
        one of them: it scales train.lr, so a change to train.lr still reaches this model."""
        notes = []
        for key, written in self.own.items():
            mine, shared = written, getattr(train, key)
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
    runtime: RuntimeParams
    evaluate: EvaluateParams = EvaluateParams()
    raw: Mapping = field(default_factory=dict, compare=False, repr=False)  # the values as read: for saying what changed
    origin: tuple | None = field(default=None, compare=False, repr=False)  # (params file, overrides) it was loaded from

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
            lr = f"{tp.lr:.3g}" + (f" ({tp.lr_scale:g} × lr)" if tp.lr_scale != 1 else "")
            rows.append(
                (spec.name, tp.optimizer, lr, f"{tp.weight_decay:g}", str(tp.run_epochs), str(tp.batch_size), tp.keep)
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        lines += [f"warning: {note}" for spec in self.models for note in spec.kept_values(self.train)]
        return "\n".join(lines)

    def mistakes(self) -> list[str]:
        """One `warning:` line for each of the course's three fine-tuning mistakes in effect (see
        evaluation/mistakes.py): each is reproduced only when asked for."""
        found = []
        if not self.evaluate.eval_mode:
            size = self.evaluate.batch_size or self.train.batch_size
            found.append(
                "warning: evaluate.eval_mode = false: the course's mistake (a), on purpose: the test photos are "
                f"predicted without model.eval(), {self.evaluate.order} in batches of {size}: BatchNorm on each "
                "batch's own statistics, dropout on"
            )
        for spec in self.models:
            if spec.options.get("requirse_grad"):
                found.append(
                    f"warning: models.{spec.name}.requirse_grad = true: the course's mistake (b), on purpose: nothing "
                    "is frozen and only the head is optimised: every step back-propagates through the whole backbone, "
                    "whose weights stay while its BatchNorm statistics drift"
                )
            if spec.options.get("head") == []:
                found.append(
                    f"warning: models.{spec.name}.head = []: the course's mistake (c), on purpose: one Linear layer "
                    "from the backbone's features to the classes"
                )
        return found


# ---------------------------------------------------------------- loading


def load(path: Path | str = PARAMS_FILE, overrides: Mapping | None = None) -> Params:
    """Read and validate params.yaml (plus optional nested overrides, as `dvc exp run -S` would set)."""
    raw = schema.read(Path(path))
    p = parse(schema.merge(raw, overrides) if overrides else raw)
    return dataclasses.replace(p, origin=(Path(path).resolve(), overrides))


def parse(raw: Mapping) -> Params:
    schema.no_unknown_keys("params.yaml", raw, TOP_LEVEL)
    data = schema.build_section(DataParams, raw.get("data"), "data")
    train = schema.build_section(TrainParams, raw.get("train"), "train")
    run = schema.build_section(RuntimeParams, raw.get("runtime"), "runtime")
    evaluating = schema.build_section(EvaluateParams, raw.get("evaluate"), "evaluate")

    per_model = raw.get("models")
    per_model = {} if per_model is None else per_model  # `models:` with nothing under it; `[]` is refused below
    if not isinstance(per_model, Mapping):
        raise ParamError("models", per_model, "must be a mapping of architecture name to overrides")
    selected = models.resolve(raw.get("model", "all"))  # raises ParamError naming `model`
    # Overrides of architectures that are not selected are checked too: a typo must not wait
    # for the day that architecture is trained.
    for name in per_model:
        if name not in selected:
            models.resolve(name, key=f"models.{name}")
            model_spec(name, per_model[name], train, run.processes)
    specs = tuple(model_spec(name, per_model.get(name), train, run.processes) for name in selected)
    for spec in specs:
        minimum = models.min_image_size(spec.name)
        if data.image_size < minimum:
            raise ParamError(
                "data.image_size",
                data.image_size,
                f"{spec.name} needs at least {minimum} px (its strided stem and three pools leave "
                f"nothing smaller); raise data.image_size or leave {spec.name} out of `model`",
            )
    return Params(models=specs, data=data, train=train, runtime=run, evaluate=evaluating, raw=raw)


def unchanged(p: Params, stage: str) -> None:
    """StageError when params.yaml no longer says what `p` was read from. A second `dvc exp run` in
    the same workspace writes its -S values into params.yaml before DVC's lock refuses it, while the
    first is still running: the first would then save models trained with one set of params and
    record another. The stages look again before they write what they made. (Params not read from
    a file pass.)"""
    if p.origin is None:
        return
    now = load(*p.origin)
    if now == p:
        return
    before, after = schema.flatten(p.raw), schema.flatten(now.raw)
    changed = [
        f"{k}: {_show(before.get(k))} → {_show(after.get(k))}"
        for k in sorted(before.keys() | after.keys())
        if before.get(k) != after.get(k)
    ]
    raise StageError(
        f"{stage}: params.yaml changed while this stage ran ({'; '.join(changed[:4]) or 'its values'}"
        f"{'; …' if len(changed) > 4 else ''}): another `dvc exp run` in this workspace? Nothing more was saved. "
        "Run experiments one at a time, or queue them (dvc exp run --queue, then dvc queue start): each then runs in "
        "its own copy"
    )


def model_spec(name: str, overrides: Mapping | None, train: TrainParams, processes: int = 1) -> ModelSpec:
    """Split `models.<name>` into training-recipe overrides and builder options, checking both."""
    key = f"models.{name}"
    if overrides is not None and not isinstance(overrides, Mapping):
        raise ParamError(key, overrides, "must be a mapping of option or train key to value")
    overrides = dict(overrides or {})
    recipe = {k: overrides.pop(k) for k in list(overrides) if k in TRAIN_KEYS}
    spec_train = schema.build_section(TrainParams, {**schema.asdict(train), **recipe}, key)
    own = {k: getattr(spec_train, k) for k in sorted(recipe)}  # as checked, before lr is scaled
    spec_train = dataclasses.replace(spec_train, lr=spec_train.lr * spec_train.lr_scale)  # this architecture's rate
    if spec_train.batch_size % processes:
        raise ParamError(
            f"{key}.batch_size" if "batch_size" in recipe else "train.batch_size",
            spec_train.batch_size,
            f"must be divisible by runtime.processes = {processes}: each process takes "
            f"batch_size / {processes} images per step, so that the global batch stays as set",
        )
    options = models.check_options(name, overrides, key=key, also_known=TRAIN_KEYS)
    return ModelSpec(name=name, options=options, train=spec_train, own=own)


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(list(value) if isinstance(value, tuple) else value)
