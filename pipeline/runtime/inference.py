"""The one path every prediction takes: validation during training, the test split in `evaluate`,
photos in `predict`.

`probabilities` puts the model in eval mode under `torch.inference_mode()` itself (and restores
its mode after): the course's "forgot model.eval()" accuracy drop cannot happen here. It computes
as `compute` says (bf16 autocast where chosen, the memory format), and returns fp32 probabilities.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.common.progress import Progress
from pipeline.runtime.device import Compute
from pipeline.runtime.tensors import Split, batches, normalize


def probabilities(model: nn.Module, split: Split, batch_size: int, progress: Progress | None = None, compute: Compute | None = None) -> torch.Tensor:
    """Class probabilities (N, classes) float32 on the CPU, in the split's order, in eval mode;
    `compute` defaults to fp32, channels-last, on the split's device."""
    compute = compute or Compute(split.device)
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.inference_mode(), compute.autocast():
            for x, _ in batches(split, batch_size, shuffle=False):
                out.append(torch.softmax(model(normalize(x, compute.format)).float(), dim=1))
                if progress is not None:
                    progress.update(len(x))
    finally:
        model.train(was_training)
    return torch.cat(out).cpu()
