"""A frozen backbone's features computed once, and the head trained on them: fastai's
`precompute=True` (models.<name>.precompute).

While the whole backbone of a transfer model is frozen, every epoch would run it forward on every
photo again (in eval mode, no dropout: to the same result, up to the augmentation), and on a CPU
that forward pass is nearly all of a step's cost. With `precompute`, the backbone's pooled features
of every training photo and of its mirror image (with `train.flip`), and of every validation photo,
are computed once; the head then trains on them, each step taking each photo's features or its
mirror image's at random, as the flip augmentation would. Shifts and crops (`train.translate`,
`train.crop_scale`) cannot move features, so these epochs train without them. Once the backbone
thaws (`freeze_epochs`), training goes on from the photos, the usual way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pipeline.common.progress import Progress
from pipeline.models import inputs
from pipeline.params.sections import TrainParams
from pipeline.runtime.device import Compute
from pipeline.runtime.tensors import Split, batches, normalize, to_device


def applies(model: nn.Module) -> bool:
    """The model asks for precomputed features and its whole backbone is frozen, now."""
    return bool(getattr(model, "precompute", False)) and getattr(model, "frozen", None) == [""]


@dataclass
class Features:
    train: Split  # images: (N, V, F) float32 features, V = 2 (each photo and its mirror image) or 1 (no flips)
    # (N, 1, F), computed at the first validation that reads them (timed as validation, not training)
    val: Split | None = None


def extract(
    model: nn.Module,
    split: Split,
    batch_size: int,
    compute: Compute,
    *,
    mirrored: bool,
    progress: Progress | None = None,
) -> Split:
    """The frozen backbone's features of every photo of `split` (and of its mirror image), in
    `compute`'s precision, kept as float32 (N, V, F) on the split's device, with the split's labels."""
    backbone, normalization = model.backbone, inputs.of(model)
    was_training = backbone.training
    backbone.eval()
    out = []
    try:
        with torch.inference_mode(), compute.autocast():
            for x, _ in batches(split, batch_size, shuffle=False):
                views = (x, x.flip(-1)) if mirrored else (x,)
                out.append(
                    torch.stack([backbone(normalize(v, normalization, compute.format)).float() for v in views], dim=1)
                )
                if progress is not None:
                    progress.update(len(x) * len(views))
    finally:
        backbone.train(was_training)
    return Split(
        images=torch.cat(out).clone(), labels=split.labels, device=split.device
    )  # clone: out of inference mode, so steps may index it


def training_features(
    model: nn.Module,
    train: Split,
    batch_size: int,
    compute: Compute,
    tp: TrainParams,
    name: str,
    *,
    enabled: bool = True,
) -> Features:
    """The training photos' features (and their mirror images' with `train.flip`), with a progress bar."""
    views = 2 if tp.flip else 1
    with Progress(
        len(train) * views,
        f"{name} features of the training photos{' and their mirror images' * (views == 2)}",
        enabled=enabled,
    ) as bar:
        return Features(extract(model, train, batch_size, compute, mirrored=tp.flip, progress=bar))


def validation_features(
    features: Features,
    model: nn.Module,
    val: Split,
    batch_size: int,
    compute: Compute,
    progress: Progress | None = None,
) -> Split:
    """The validation photos' features, computed on the first call."""
    if features.val is None:
        features.val = extract(model, val, batch_size, compute, mirrored=False, progress=progress)
    return features.val


def head_step(
    model: nn.Module,
    optimizer,
    criterion,
    x: torch.Tensor,
    y: torch.Tensor,
    tp: TrainParams,
    generator,
    compute: Compute,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step of the head on a batch of features x (B, V, F): each photo's own or its
    mirror image's at random (the flip augmentation's draw), then as training.fit.train_step."""
    b = len(x)
    flipped = (
        torch.rand(b, generator=generator, device=generator.device) < 0.5
        if x.shape[1] == 2
        else torch.zeros(b, dtype=torch.bool)
    )
    chosen = x[torch.arange(b, device=x.device), to_device(flipped.long(), x.device)]  # (B, F): no wait for the GPU
    with compute.autocast():
        logits = model.head(chosen)
        loss = criterion(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), logits.detach().float()


def probabilities(
    model: nn.Module, split: Split, batch_size: int, progress: Progress | None = None, compute: Compute | None = None
) -> torch.Tensor:
    """runtime.inference.probabilities on features (N, 1, F): the head alone, in eval mode."""
    compute = compute or Compute(split.device)
    head, out = model.head, []
    was_training = head.training
    head.eval()
    try:
        with torch.inference_mode(), compute.autocast():
            for x, _ in batches(split, batch_size, shuffle=False):
                out.append(torch.softmax(head(x[:, 0]).float(), dim=1))
                if progress is not None:
                    progress.update(len(x))
    finally:
        head.train(was_training)
    return torch.cat(out).cpu()
