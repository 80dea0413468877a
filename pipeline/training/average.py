"""An exponential moving average of the weights (`train.ema`), as timm's and torchvision's
`--model-ema`: after every optimiser step, average ← decay × average + (1 − decay) × weights, over
the parameters and the BatchNorm statistics alike. Validation scores the average and the model file
keeps it; the optimiser never sees it.

The decay warms up as TensorFlow's ExponentialMovingAverage does with `num_updates`:
min(decay, (1 + n) / (10 + n)) at the n-th update, so that a short run (a few hundred steps on a
CPU) does not keep a large share of its first, untrained weights: with a fixed decay of 0.998 that
share is still half after 350 steps.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def averaged(model: nn.Module, decay: float) -> AveragedModel:
    """A copy of `model` (its module the average; `n_averaged` the updates so far) that
    `update_parameters(model)` moves towards the model's weights after each step. The copy carries
    the model's attributes, its input normalisation included."""

    def average(averages: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
        # n ≥ 1 (AveragedModel counts its first copy as 1), so this update's decay is
        # min(decay, (1 + (n − 1)) / (10 + (n − 1))): a 0-dim tensor on the device, that a GPU step
        # waits for no copy to the host
        if not averages or not torch.is_floating_point(
            averages[0]
        ):  # BatchNorm's batch counters: integers, taken as they are
            torch._foreach_copy_(averages, current)
            return
        weight = (1 - torch.clamp(n / (9 + n), max=decay)).to(averages[0].dtype)
        torch._foreach_mul_(averages, 1 - weight)
        torch._foreach_add_(averages, torch._foreach_mul(current, weight))

    return AveragedModel(model, multi_avg_fn=average, use_buffers=True)
