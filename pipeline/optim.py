"""The optimiser and the learning-rate schedule of the training recipe (params `train`)."""

from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.sections import TrainParams

WARMUP_START = 0.01  # warm-up starts at 1% of the peak learning rate


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Learning rate before optimiser step `step` (0-based) of `total`, as a fraction of each parameter
    group's peak: linear warm-up from WARMUP_START, then cosine decay to 0."""
    if step < warmup:
        return WARMUP_START + (1 - WARMUP_START) * step / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * progress))


def param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """Trainable parameters only (a frozen backbone never reaches the optimiser), and no weight decay
    on biases and normalisation scales (1-d tensors): decaying them only fights the normalisation."""
    base = model.param_groups(lr) if hasattr(model, "param_groups") else [{"params": list(model.parameters()), "lr": lr}]
    groups = []
    for group in base:
        trainable = [p for p in group["params"] if p.requires_grad]
        for decay, chosen in ((weight_decay, [p for p in trainable if p.ndim > 1]), (0.0, [p for p in trainable if p.ndim <= 1])):
            if chosen:
                groups.append({"params": chosen, "lr": group["lr"], "base_lr": group["lr"], "weight_decay": decay})
    return groups


def make_optimizer(model: nn.Module, tp: TrainParams) -> torch.optim.Optimizer:
    groups = param_groups(model, tp.peak_lr, tp.weight_decay)
    if tp.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=tp.peak_lr, momentum=tp.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=tp.peak_lr, betas=(tp.momentum, 0.999))
