"""The one path every prediction takes: validation during training, the test split in `evaluate`,
photos in `predict`.

`probabilities` puts the model in eval mode under `torch.inference_mode()` itself (and restores
its mode after): the course's "forgot model.eval()" accuracy drop cannot happen here. It computes
as `compute` says (bf16 autocast where chosen, the memory format), feeds the network the inputs its
weights were trained on (models.inputs.of), and returns fp32 probabilities; with `tta`, each photo's
averaged with its mirror image's (test-time augmentation: a mirrored cat is still a cat).
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.common.progress import Progress
from pipeline.models import inputs
from pipeline.runtime.device import Compute
from pipeline.runtime.tensors import Split, batches, normalize


def probabilities(
    model: nn.Module,
    split: Split,
    batch_size: int,
    progress: Progress | None = None,
    compute: Compute | None = None,
    *,
    tta: bool = False,
) -> torch.Tensor:
    """Class probabilities (N, classes) float32 on the CPU, in the split's order, in eval mode;
    `compute` defaults to fp32, channels-last, on the split's device. `tta`: the mean of the
    probabilities of each photo and of its horizontal mirror (twice the compute)."""
    compute = compute or Compute(split.device)
    normalization = inputs.of(model)  # the inputs its weights were trained on
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.inference_mode(), compute.autocast():
            for x, _ in batches(split, batch_size, shuffle=False):
                proba = torch.softmax(model(normalize(x, normalization, compute.format)).float(), dim=1)
                if tta:
                    proba = (
                        proba
                        + torch.softmax(model(normalize(x.flip(-1), normalization, compute.format)).float(), dim=1)
                    ) / 2
                out.append(proba)
                if progress is not None:
                    progress.update(len(x))
    finally:
        model.train(was_training)
    return torch.cat(out).cpu()
