"""The optimiser and its learning-rate schedule (params `train`): AdamW or SGD (Nesterov when it has
momentum), a linear warm-up then a cosine decay to 0 (or, `schedule: constant`, the course's
unchanging rate), stepped once per batch.

One name for the rate, from params.yaml to the optimiser: `lr` is this architecture's peak (train.lr
× models.<name>.lr_scale, resolved by pipeline.params.recipes); each parameter group's `lr` is its
share of it (a transfer model's backbone learns `backbone_lr_scale` times slower), and torch's
LambdaLR moves every group's `lr` along the same schedule, keeping their peaks as `initial_lr`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.params.sections import TrainParams

WARMUP_START = 0.01  # warm-up starts at 1% of the peak learning rate


def lr_factor(step: int, total: int, warmup: int, shape: str = "cosine") -> float:
    """Learning rate before optimiser step `step` (0-based) of `total`, as a fraction of each parameter
    group's peak: linear warm-up from WARMUP_START, then cosine decay to 0 (`shape` "cosine") or the
    peak to the end ("constant")."""
    if step < warmup:
        return WARMUP_START + (1 - WARMUP_START) * step / warmup
    if shape == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class Schedule:
    """The optimiser steps of one run: the rate before step k is lr × lr_factor(k, total, warmup)."""

    steps_per_epoch: int
    total: int
    warmup: int
    shape: str = "cosine"  # after the warm-up: cosine | constant

    @classmethod
    def of(cls, images: int, batch_size: int, tp: TrainParams) -> Schedule:
        # batches() drops a partial last batch, unless it is the only one
        steps_per_epoch = max(1, images // batch_size)
        total = steps_per_epoch * tp.run_epochs
        return cls(steps_per_epoch, total, min(total, round(tp.warmup_epochs * steps_per_epoch)), tp.schedule)

    def factor(self, step: int) -> float:
        return lr_factor(step, self.total, self.warmup, self.shape)


def param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """Trainable parameters only (a frozen backbone never reaches the optimiser, unless it thaws
    later), and no weight decay on biases and normalisation scales (1-d tensors): decaying them
    only fights the normalisation."""
    if hasattr(model, "param_groups"):  # a transfer model says which of its parameters train, now or later
        base, trains = model.param_groups(lr), lambda p: True
    else:
        base, trains = [{"params": list(model.parameters()), "lr": lr}], lambda p: p.requires_grad
    groups = []
    for group in base:
        trainable = [p for p in group["params"] if trains(p)]
        for decay, chosen in (
            (weight_decay, [p for p in trainable if p.ndim > 1]),
            (0.0, [p for p in trainable if p.ndim <= 1]),
        ):
            if chosen:
                groups.append({"params": chosen, "lr": group["lr"], "weight_decay": decay})
    return groups


def make_optimizer(model: nn.Module, tp: TrainParams) -> torch.optim.Optimizer:
    """SGD (Nesterov with momentum; plain, as in the course, with `momentum: 0`), or AdamW in its fused form (one kernel
    over all parameters, on the CPU and CUDA
    alike: a quarter less optimiser time than the per-tensor loops, measured on ResNet-18)."""
    groups = param_groups(model, tp.lr, tp.weight_decay)
    if tp.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=tp.lr, momentum=tp.momentum, nesterov=tp.momentum > 0)
    return torch.optim.AdamW(groups, lr=tp.lr, betas=(tp.momentum, 0.999), fused=True)


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: Schedule) -> torch.optim.lr_scheduler.LambdaLR:
    """Sets every group's rate for step 0 now, and for the next step at each `scheduler.step()`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.factor)
