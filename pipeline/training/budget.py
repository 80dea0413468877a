"""How long training a params file's models will take here, before any photo is read: what `check`
prints first and what the learning-curve grid (`pipeline.grid`) adds up before it queues its cells.
Apart from training.estimate, which the train stage uses, so that the train stage does not depend
on the data sources' code."""

from __future__ import annotations

import torch

from pipeline.common.progress import about, plural
from pipeline.data import sources
from pipeline.models import bf16_ok
from pipeline.params.recipes import Params
from pipeline.runtime.device import Compute
from pipeline.runtime.tensors import Split
from pipeline.training import estimate

TIMED_IMAGES = 16  # photos per timed step of check's estimate on a CPU


def training_estimate(p: Params, compute: Compute, timers: dict | None = None) -> tuple[float, list[str]]:
    """(seconds, one line per model and the sum): how long training the selected models will take
    here, before any download: a few timed steps of each (training.estimate.step_seconds) on random
    photos of the configured size, times the steps of an epoch at the number of photos the source
    holds (photos_at_most, split by data.val_fraction and data.test_fraction), times the epochs. An
    upper bound: models the resume state already holds are not trained again."""
    photos = sources.photos_at_most(p.data.source, p.data.max_per_class)
    train_n = max(1, round(photos * (1 - p.data.val_fraction - p.data.test_fraction)))
    train_n = min(train_n, p.data.train_photos or train_n)  # data.train_photos: fewer, after the split
    val_n = max(1, round(photos * p.data.val_fraction))
    where = compute.describe() + (f" × {p.runtime.processes} processes" if p.runtime.processes > 1 else "")
    total, lines, few = 0.0, [], 0
    for spec in p.models:
        batch = spec.train.batch_size // p.runtime.processes
        if (
            steps := estimate.steps_in_all(
                spec.train.shown(train_n) // p.runtime.processes, batch, spec.train.run_epochs
            )
        ) <= estimate.FEW_STEPS:
            lines.append(f"check: {estimate.not_timed(spec.name, steps)}")
            few += 1
            continue
        # on a CPU a step's time grows with the batch in proportion: timing TIMED_IMAGES and scaling
        # keeps the whole estimate near a minute even for VGG at 224 px; a GPU is timed at the full batch
        timed = batch if compute.device.type == "cuda" else min(batch, TIMED_IMAGES)
        own = compute.for_model(spec.name, bf16_ok(spec.name))
        generator = torch.Generator().manual_seed(0)
        shape = (timed, p.data.channels, p.data.image_size, p.data.image_size)
        sample = Split(
            torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator).to(compute.device),
            torch.arange(timed).remainder(2).to(compute.device),
            compute.device,
        )
        key = (spec.name, repr(sorted(spec.options.items())), p.data.image_size, p.data.channels, batch, own.precision)
        step = (timers if timers is not None else {}).setdefault(
            key,
            estimate.timer(
                lambda thawed: (
                    estimate.step_seconds(spec, sample, timed, 2, own, steps=1, thawed=thawed) * batch / timed
                )
            ),
        )  # noqa: B023 (used in this iteration)
        seconds = estimate.seconds_left(spec, train_n, val_n, spec.train.batch_size, spec.train.run_epochs, step)
        total += seconds
        shown = spec.train.shown(train_n)  # train.epoch_images: a small set shown again within an epoch
        of = f"~{train_n:,} photos" if shown == train_n else f"{shown:,} images (~{train_n:,} photos, shown again)"
        lines.append(
            f"check: {spec.name:>12s} {about(seconds / spec.train.run_epochs)}/epoch, {about(seconds)} for "
            f"{plural(spec.train.run_epochs, 'epoch')} of {of} on {where}"
        )
    if few < len(p.models):
        lines.append(
            f"check: training {about(total)} in all (one timed step of {TIMED_IMAGES} photos of each model, after one "
            "untimed: on a CPU an upper bound, since a small batch runs less efficiently; the train stage times them "
            "again at the full batch)"
        )
    return total, lines
