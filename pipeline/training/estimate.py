"""How long training will take, said before anything trains: a few timed steps of each model, so
that a CPU user learns within a minute that a run takes days, and what to change."""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from pipeline.common.progress import about, plural
from pipeline.models import option_types, precomputes
from pipeline.params.recipes import ModelSpec, Params
from pipeline.runtime import distributed
from pipeline.runtime.device import Compute, synchronize
from pipeline.runtime.tensors import Split, batches
from pipeline.training.fit import build, out_of_memory, per_process_batch, train_step
from pipeline.training.optim import make_optimizer
from pipeline.training.resume import epochs_done, file_for

TIMED_STEPS = 3  # training steps timed per model
# A model whose whole training is this few optimiser steps is not timed: timing it (a warm-up and
# TIMED_STEPS steps, on a fresh copy) would take about as long as training it (tests, smoke runs).
FEW_STEPS = 2 * (TIMED_STEPS + 1)


def steps_in_all(train_images: int, batch_size: int, epochs: int) -> int:
    """The optimiser steps of a whole training run (a last partial batch is dropped)."""
    return epochs * max(1, train_images // batch_size)


def not_timed(name: str, steps: int) -> str:
    """The line for a model trained in FEW_STEPS steps or fewer, in place of its estimate."""
    return f"{name:>12s} {plural(steps, 'step')} in all: not timed (timing would take about as long as training)"


def step_seconds(
    spec: ModelSpec,
    train: Split,
    batch_size: int,
    classes: int,
    compute: Compute | None = None,
    steps: int = TIMED_STEPS,
    *,
    thawed: bool = False,
) -> float:
    """Seconds one optimiser step of `spec` takes here, in `compute`'s precision and memory format:
    `steps` of them timed after one warm-up, on a throwaway copy of the model (its own weights,
    optimiser and random stream), never compiled (that would cost the compile time twice).
    `thawed`: a transfer model's step once its backbone has thawed (after `freeze_epochs`)."""
    compute = dataclasses.replace(compute or Compute(train.device), compile=False)
    model = build(spec, train, classes, compute)
    if thawed:
        model.thaw(model.freeze_epochs)
    optimizer = make_optimizer(model, spec.train)
    generator = torch.Generator().manual_seed(0)
    x, y = next(batches(train, min(batch_size, len(train)), shuffle=True, generator=generator))
    criterion = nn.CrossEntropyLoss(label_smoothing=spec.train.label_smoothing)
    train_step(
        model, optimizer, criterion, x, y, spec.train, generator, compute
    )  # warm-up: allocations, cuDNN's choices
    synchronize(train.device)
    start = time.perf_counter()
    for _ in range(steps):
        train_step(model, optimizer, criterion, x, y, spec.train, generator, compute)
    synchronize(train.device)
    return (time.perf_counter() - start) / steps


def seconds_left(
    spec: ModelSpec,
    train_images: int,
    val_images: int,
    batch_size: int,
    epochs_left: int,
    step: Callable[[bool], float],
) -> float:
    """Seconds the last `epochs_left` epochs of `spec` take, `step(thawed)` giving one training step's
    seconds with the backbone as built (frozen, for a transfer model) or thawed. A forward pass
    (validation) counts as a third of a training step. While a whole backbone is frozen, a step is a
    forward pass (no gradient flows into it); with `precompute` those epochs cost the features of the
    training photos (twice with flips) and of the validation photos, computed once, and the head's
    steps on them next to nothing."""
    val_steps = math.ceil(val_images / batch_size)
    steps = max(1, spec.train.shown(train_images) // batch_size)  # train.epoch_images: a small set shown again
    feature_steps = max(1, train_images // batch_size)  # each photo's features once, however often an epoch shows it
    start = spec.train.run_epochs - epochs_left
    o, freeze_epochs = spec.options, spec.options.get("freeze_epochs")
    frozen = (
        "freeze" in option_types(spec.name)
        and o.get("freeze", "backbone") != "none"
        and o.get("pretrained", True)
        and not o.get("requirse_grad")
    )
    thaw_at = (
        (spec.train.run_epochs if freeze_epochs is None else freeze_epochs) if frozen else 0
    )  # the first epoch with nothing frozen
    frozen_left, thawed_left = max(0, thaw_at - start), epochs_left - max(0, thaw_at - start)
    seconds = 0.0
    if frozen_left and precomputes(spec.options):
        seconds += step(False) * ((2 if spec.train.flip else 1) * feature_steps + val_steps)
    elif frozen_left:
        seconds += step(False) * (steps + val_steps / 3) * frozen_left
    if thawed_left:
        seconds += step(thaw_at > 0) * (steps + val_steps / 3) * thawed_left
    return seconds


def timer(time_one: Callable[[bool], float]) -> Callable[[bool], float]:
    """`time_one(thawed)`, timed once for each value asked for."""
    return functools.cache(time_one)


def estimate(
    spec: ModelSpec,
    train: Split,
    val: Split,
    batch_size: int,
    epochs_left: int,
    where: str,
    classes: int,
    compute: Compute | None = None,
) -> tuple[float, str]:
    """(seconds, a line) for the epochs `spec` has left, from a few timed steps (seconds_left)."""
    step = timer(lambda thawed: step_seconds(spec, train, batch_size, classes, compute, thawed=thawed))
    seconds = seconds_left(spec, len(train), len(val), batch_size, epochs_left, step)
    left = "" if epochs_left == spec.train.run_epochs else " left"
    line = (
        f"{spec.name:>12s} {about(seconds / epochs_left)}/epoch, {about(seconds)} for {epochs_left} epochs{left} on "
        f"{where}"
    )
    return seconds, line


def estimates(
    p: Params,
    train: Split,
    val: Split,
    resume: Path,
    keys: dict[str, str],
    where: str,
    world: distributed.World,
    classes: int,
    computes: dict[str, Compute] | None = None,
) -> None:
    """One line per model left to train with the time it will take, and the sum. A model already
    trained with the same key is left out (its own line says so when its turn comes)."""
    total, trained, timed, few = 0.0, 0, 0, 0
    computes = computes or {}
    for spec in p.models:
        compute = computes.get(spec.name)
        done = epochs_done(file_for(resume, spec.name), keys[spec.name]) if p.runtime.resume else 0
        if done >= spec.train.run_epochs:
            trained += 1
            continue
        batch = per_process_batch(spec, world.size)
        if (steps := steps_in_all(spec.train.shown(len(train)), batch, spec.train.run_epochs - done)) <= FEW_STEPS:
            print(not_timed(spec.name, steps), flush=True)
            few += 1
            continue
        try:
            seconds, line = estimate(spec, train, val, batch, spec.train.run_epochs - done, where, classes, compute)
        except torch.cuda.OutOfMemoryError:
            raise out_of_memory(spec, world, train.device) from None
        total += seconds
        timed += 1
        print(line, flush=True)
    if trained == len(p.models):
        print("train: every model is already trained with this recipe and data", flush=True)
    elif timed:
        also = f", {plural(trained, 'model')} already trained" * (trained > 0) + f", {few} of a few steps not timed" * (
            few > 0
        )
        print(
            f"train: {about(total)} in all (estimated from {TIMED_STEPS} timed steps of each model{also})", flush=True
        )
        if any(c.compile for c in computes.values()):
            print(
                "train: the steps were timed eager; compiled, each model's first epoch also compiles (minutes), the "
                "rest run faster",
                flush=True,
            )
    if total > 3600 and train.device.type == "cpu":
        print(
            "train: that is long for a CPU. `python -m pipeline.preset cpu-64` trains ResNet-18 on 64 px "
            "images in minutes; or lower data.image_size, data.max_per_class or train.epochs, or choose "
            "fewer models (-S model=...)",
            flush=True,
        )
