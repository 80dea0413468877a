"""The learning-rate range test (Leslie Smith's, fastai's `lr_find`): train from the model's own
initial weights for a few steps while the rate grows geometrically from `start` to `end`, record
each step's loss, and stop once the loss has run away. The rate to train at sits on the steepest
stretch of the descent, before the minimum, where the loss still falls fastest per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.params.recipes import ModelSpec
from pipeline.runtime.device import Compute
from pipeline.runtime.tensors import Split, batches
from pipeline.training.fit import build, train_step
from pipeline.training.optim import make_optimizer

SMOOTHING = 0.98  # the exponential moving average of the loss fastai plots (bias-corrected)
DIVERGED = 4.0  # stop when the smoothed loss exceeds this many times its minimum


@dataclass(frozen=True)
class RangeTest:
    rates: list[float]  # each step's peak rate (the architecture's: train.lr × lr_scale scaled the same way)
    losses: list[float]  # the smoothed training loss after that step
    suggested: float  # the rate at the steepest descent of the smoothed loss
    minimum: float  # the rate at its minimum (train below it: at the minimum the loss is about to rise)
    stopped_early: bool  # the loss ran away before the last rate


def range_test(
    spec: ModelSpec,
    train: Split,
    *,
    classes: int,
    compute: Compute,
    start: float = 1e-7,
    end: float = 10.0,
    steps: int = 100,
) -> RangeTest:
    """`steps` optimiser steps of `spec`'s recipe on `train` (its optimiser, weight decay, augmentation
    and batch size; no schedule, no warm-up), the rate before step k being start·(end/start)^(k/(steps−1))."""
    torch.manual_seed(spec.train.seed)
    generator = torch.Generator().manual_seed(spec.train.seed)
    model = build(spec, train, classes, compute)
    optimizer = make_optimizer(model, spec.train)
    peaks = [group["lr"] for group in optimizer.param_groups]  # a transfer backbone's share stays in proportion
    criterion = nn.CrossEntropyLoss(label_smoothing=spec.train.label_smoothing)
    factor = (end / start) ** (1 / max(1, steps - 1))
    rates, losses, average, best = [], [], 0.0, math.inf
    model.train()
    step = 0
    while step < steps:
        for x, y in batches(train, spec.train.batch_size, shuffle=True, generator=generator):
            rate = start * factor**step
            for group, peak in zip(optimizer.param_groups, peaks):
                group["lr"] = rate * peak / spec.train.lr
            loss, _ = train_step(model, optimizer, criterion, x, y, spec.train, generator, compute)
            value = loss.item()
            average = SMOOTHING * average + (1 - SMOOTHING) * value
            smoothed = average / (1 - SMOOTHING ** (step + 1))
            rates.append(rate)
            losses.append(smoothed)
            step += 1
            best = min(best, smoothed)
            if not math.isfinite(smoothed) or smoothed > DIVERGED * best:
                return _result(rates, losses, stopped=True)
            if step == steps:
                break
    return _result(rates, losses, stopped=False)


def _result(rates: list[float], losses: list[float], *, stopped: bool) -> RangeTest:
    finite = [i for i, v in enumerate(losses) if math.isfinite(v)]
    lowest = min(finite, key=lambda i: losses[i])
    # steepest descent: the most negative slope of loss against log(rate), up to the minimum
    slopes = (
        [(losses[i + 1] - losses[i]) / (math.log(rates[i + 1]) - math.log(rates[i])) for i in range(max(1, lowest))]
        if lowest > 0
        else [0.0]
    )
    steepest = min(range(len(slopes)), key=lambda i: slopes[i])
    return RangeTest(rates, losses, suggested=rates[steepest], minimum=rates[lowest], stopped_early=stopped)
