"""Train one model: `fit(spec, train, val)`, the train stage's loop, top to bottom.

Build the model and its optimiser; resume from the saved state if there is one; then, each epoch:
step through the shuffled batches (the schedule sets each step's rate), evaluate on the validation
split, save the resume state, log the curves. The weights kept are the last epoch's, or with
`train.keep: best` the best on validation; with `train.ema`, those of the weights' moving average
(training.average), which validation then scores.

In a run of several processes (torchrun) every process calls `fit` on its shard of both splits;
DistributedDataParallel averages the gradients, so one step still sees train.batch_size images at
train.lr. Only process 0 prints and saves.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from pipeline import models
from pipeline.common.errors import ParamError, StageError
from pipeline.common.progress import Progress
from pipeline.models import inputs
from pipeline.params.recipes import ModelSpec
from pipeline.params.sections import TrainParams
from pipeline.runtime import distributed
from pipeline.runtime.device import Compute, describe, synchronize
from pipeline.runtime.inference import probabilities
from pipeline.runtime.tensors import Split, augment, batches, shuffled_images
from pipeline.training import precompute
from pipeline.training.average import averaged
from pipeline.training.curves import epoch_line
from pipeline.training.optim import Schedule, make_optimizer, make_scheduler
from pipeline.training.resume import ResumeFile, Run, Writer, negotiate, restore, save

CHECK_EVERY = 50  # steps between looks for a non-finite loss on a GPU: one host-device sync each


def fit(
    spec: ModelSpec,
    train: Split,
    val: Split,
    *,
    classes: int,
    compute: Compute | None = None,
    world: distributed.World = distributed.World(),
    resume: ResumeFile | None = None,
    log: Callable[[int, dict], None] | None = None,
) -> tuple[nn.Module, dict]:
    """Train `spec` for `classes` classes on `train`, validating on `val` after every epoch; returns
    the model holding the weights `train.keep` chooses, and a summary of the run.

    `compute`: the precision, memory format and compilation of every step (default: fp32,
    channels-last, eager, on the splits' device). `resume`: the state after every epoch (weights, optimiser, schedule,
    random generators, curves)
    is saved there, and with `resume.reuse` a file of the same key is continued from: an interrupted
    run ends with the same weights as an uninterrupted one (on the CPU), and a model already trained
    is not trained again. `log(epoch, row)` receives each epoch's curves, the resumed ones first.
    """
    tp, device, compute = spec.train, train.device, compute or Compute(train.device)
    batch_size = per_process_batch(spec, world.size)

    # ---------------------------------------------------------------- build
    torch.manual_seed(tp.seed)  # same seed, same init and dropout masks: runs are comparable
    generator = torch.Generator().manual_seed(tp.seed)  # batch order and augmentation, on the CPU for every device
    model = build(spec, train, classes, compute)
    runner, synced = model, 0  # `runner` is what a step calls; `model` the plain module saved
    if world.size > 1:
        if getattr(model, "freeze_epochs", None) is not None:  # DDP reduces only the gradients that exist when it wraps
            raise StageError(
                f"{spec.name}: freeze_epochs (a backbone that thaws mid-run) trains in one process only; set "
                "runtime.processes: 1"
            )
        if getattr(model, "precompute", False):  # its head steps bypass DDP's gradient reduction
            raise StageError(
                f"{spec.name}: precompute (a head trained on a frozen backbone's features) trains in one process only; "
                "set runtime.processes: 1"
            )
        runner, synced = distributed.parallel(model, device)
        model = runner.module  # its BatchNorm layers now synchronised: validate and save this one
    optimizer = make_optimizer(model, tp)
    repeats = tp.repeats(len(train))  # train.epoch_images: a small training set is shown again within an epoch
    schedule = Schedule.of(tp.shown(len(train)), batch_size, tp)
    scheduler = make_scheduler(optimizer, schedule)
    runner = torch.compile(runner) if compute.compile else runner
    average = averaged(model, tp.ema) if tp.ema else None  # train.ema: the weights' moving average
    kept = average.module if average else model  # what validation scores and the model file keeps
    evaluator = (
        runner if world.size == 1 and average is None else kept
    )  # DDP's forward may broadcast buffers: not on unequal shards
    criterion = nn.CrossEntropyLoss(label_smoothing=tp.label_smoothing)

    # ---------------------------------------------------------------- resume
    run = Run()
    if saved := negotiate(resume, world=world, name=spec.name):
        run = restore(saved, model, optimizer, scheduler, generator, device, average)
        done = len(run.history)
        if world.main:
            said = (
                "already trained with this recipe and data"
                if done == tp.run_epochs
                else f"resumes after epoch {done}/{tp.run_epochs}"
            )
            print(f"{spec.name:>12s} {said} ({resume.path})", flush=True)
        for epoch, row in enumerate(run.history):
            if log:
                log(epoch, row)  # the epochs already done, as if just trained
    step = len(run.history) * schedule.steps_per_epoch  # counted over the whole run
    writer = Writer()  # saves each epoch's state while the next one trains
    # models.<name>.precompute: the frozen backbone's, computed at the first epoch that needs them
    features: precompute.Features | None = None

    try:
        for epoch in range(len(run.history), tp.run_epochs):
            if world.size > 1:
                seed_process(generator, tp.seed, world.rank, epoch)
            synchronize(device)
            start = time.perf_counter()

            if thaw := getattr(model, "thaw", None):  # a transfer model's backbone, after its `freeze_epochs`
                thaw(epoch)
            cached = precompute.applies(model)  # this epoch trains the head on the frozen backbone's features
            if cached and features is None:  # timed as training: the cost of these epochs is almost all here
                features = precompute.training_features(
                    model, train, batch_size, compute, tp, spec.name, enabled=world.main
                )
            source, step_with = (features.train, precompute.head_step) if cached else (train, train_step)

            # ------------------------------------------------------------ train one epoch
            try:
                numbers = train_one_epoch(
                    model if cached else runner,
                    optimizer,
                    scheduler,
                    criterion,
                    source,
                    step_with=step_with,
                    tp=tp,
                    batch_size=batch_size,
                    repeats=repeats,
                    generator=generator,
                    compute=compute,
                    world=world,
                    average=(model, average) if average is not None else None,
                    first_step=step,
                    label=f"{spec.name} epoch {epoch + 1}/{tp.run_epochs}",
                )
            except NonFiniteLoss as bad:
                raise diverged(spec, epoch, bad.step, schedule, resume) from None
            step += numbers.steps
            elapsed = time.perf_counter() - start  # .item() has synchronised

            # ------------------------------------------------------------ evaluate
            if cached and features.val is None:
                with Progress(len(val), f"{spec.name} features of the validation photos", enabled=world.main) as bar:
                    precompute.validation_features(features, model, val, batch_size, compute, bar)
            with Progress(len(val), f"{spec.name} validation", enabled=world.main) as bar:
                scores = (
                    validate(kept, features.val, batch_size, bar, compute, head_only=True)
                    if cached
                    else validate(evaluator, val, batch_size, bar, compute)
                )
            row = {
                "train_loss": numbers.loss,
                "train_accuracy": numbers.accuracy,
                "val_loss": scores["loss"],
                "val_accuracy": scores["accuracy"],
                "lr": numbers.lr,
                "train_loss_spread": numbers.spread,
            }
            run.add(row, seconds=elapsed, images=numbers.images, keep=tp.keep, model=kept)

            # ------------------------------------------------------------ save
            if resume and world.main:
                save(
                    resume,
                    run,
                    model,
                    optimizer,
                    scheduler,
                    generator,
                    final=epoch + 1 == tp.run_epochs,
                    writer=writer,
                    average=average,
                )

            # ------------------------------------------------------------ log
            if log:
                log(epoch, row)
            if world.main:
                print(epoch_line(spec.name, epoch, tp.run_epochs, row, numbers.images / elapsed), flush=True)
    except torch.cuda.OutOfMemoryError:
        raise out_of_memory(spec, world, device) from None
    finally:
        writer.wait()  # the last epoch's state is on disk before anyone reads it

    # ---------------------------------------------------------------- the weights kept, and the run in numbers
    if run.kept.state is not None:
        kept.load_state_dict(run.kept.state)
    return kept, {
        "epochs": tp.run_epochs,
        "kept_epoch": run.kept.epoch + 1,
        "val": run.kept.val,
        "seconds": run.seconds,
        "images_per_second": run.images / run.seconds if run.seconds else 0.0,
        "parameters": sum(p.numel() for p in model.parameters()),
        "averaged_updates": int(average.n_averaged) if average else 0,  # train.ema: the steps the kept average has seen
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "processes": world.size,
        "synchronised_batchnorm_layers": synced,
        "compute": compute.record(),  # the arithmetic these weights came from
    }


class NonFiniteLoss(Exception):
    """The loss at `step` (counted over the run) was NaN or infinite, in this process or another."""

    def __init__(self, step: int):
        super().__init__(f"non-finite loss at step {step}")
        self.step = step


@dataclass(frozen=True)
class EpochNumbers:
    """One epoch of training in numbers, summed over every process: the mean log loss (nats per
    image) and accuracy on the augmented training batches, the step-to-step spread of the loss
    (StepSpread), the rate of the epoch's last step, the images shown and the optimiser steps."""

    loss: float
    accuracy: float
    spread: float
    lr: float
    images: int
    steps: int


def train_one_epoch(
    runner: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    criterion: nn.Module,
    source: Split,
    *,
    tp: TrainParams,
    batch_size: int,
    generator: torch.Generator,
    compute: Compute,
    step_with: Callable | None = None,
    repeats: int = 1,
    world: distributed.World = distributed.World(),
    average: tuple[nn.Module, nn.Module] | None = None,
    first_step: int = 0,
    label: str = "training",
) -> EpochNumbers:
    """One pass over `source` (uint8 images (N, C, S, S) on the device, shown `repeats` times,
    shuffled by `generator`) in batches of `batch_size` per process: each step `step_with` (default
    train_step: augment, forward, loss, backward, update), then the schedule's next rate, then
    `average`'s (model, moving average) update. Raises NonFiniteLoss naming the first step, counted
    from `first_step`, whose loss was NaN or infinite (looked for every CHECK_EVERY steps and at the
    end: all processes stop together).

    Sums stay on the device; the log loss summed is plain cross-entropy on the augmented batches,
    without the label smoothing minimised (whose floor of about 0.2 would make the training curve
    look worse than validation's for no reason)."""
    step_with = step_with or train_step
    device = source.device
    look_every = CHECK_EVERY if device.type == "cuda" else 1  # reading the loss costs a GPU sync, nothing on the CPU
    runner.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    first_bad = torch.full((), -1, device=device, dtype=torch.long)  # the first step with a NaN or ±inf loss
    jumps = StepSpread(device)
    seen, step, lr = 0, first_step, optimizer.param_groups[0]["lr"]
    shown = shuffled_images(len(source) * repeats, batch_size)
    with Progress(shown * world.size, label, enabled=world.main) as bar:
        for i, (x, y) in enumerate(batches(source, batch_size, shuffle=True, generator=generator, repeats=repeats)):
            lr = optimizer.param_groups[0]["lr"]  # this step's rate, set by the schedule
            loss, logits = step_with(runner, optimizer, criterion, x, y, tp, generator, compute)
            scheduler.step()  # the next step's rate
            if average is not None:
                average[1].update_parameters(average[0])
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), step, first_bad)
            batch_loss = nn.functional.cross_entropy(logits, y, reduction="sum")
            loss_sum += batch_loss
            jumps.add(batch_loss / len(y))
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
            step += 1
            if (i + 1) % CHECK_EVERY == 0 and (bad := first_nonfinite(first_bad)) >= 0:
                raise NonFiniteLoss(bad)
            bar.update(len(y) * world.size, **({"loss": loss_sum.item() / seen} if (i + 1) % look_every == 0 else {}))
    if (bad := first_nonfinite(first_bad)) >= 0:
        raise NonFiniteLoss(bad)
    loss_sum, correct, seen, squares, pairs = distributed.sum_over_processes(
        [loss_sum.item(), correct.item(), seen, *jumps.sums()], device
    )
    return EpochNumbers(
        loss=loss_sum / seen,
        accuracy=correct / seen,
        spread=StepSpread.value(squares, pairs),
        lr=lr,
        images=int(seen),
        steps=step - first_step,
    )


class StepSpread:
    """How much the training loss jumps from one step to the next, over an epoch: each batch's log
    loss l_k (nats per image, on the augmented batch), and the spread sqrt(mean((l_k - l_{k-1})^2) / 2).
    For losses that are a smooth trend plus independent noise this is the noise's standard deviation:
    the trend hardly moves it, where the plain standard deviation of the l_k would count a falling
    loss as unstable. Sums stay on the device."""

    def __init__(self, device: torch.device):
        self.previous: torch.Tensor | None = None
        self.squares = torch.zeros((), device=device)
        self.pairs = 0

    def add(self, loss: torch.Tensor) -> None:
        if self.previous is not None:
            self.squares += (loss.detach() - self.previous) ** 2
            self.pairs += 1
        self.previous = loss.detach()

    def sums(self) -> tuple[float, int]:
        return self.squares.item(), self.pairs

    @staticmethod
    def value(squares: float, pairs: int) -> float:
        return math.sqrt(squares / pairs / 2) if pairs else 0.0  # one step per epoch: no jump to measure


def train_step(
    runner: nn.Module,
    optimizer,
    criterion,
    x: torch.Tensor,
    y: torch.Tensor,
    tp: TrainParams,
    generator,
    compute: Compute,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on a uint8 batch x (B, C, S, S), y (B,): augment on the device, forward in
    `compute`'s precision, the loss in fp32, backward, update. Returns (the loss minimised, the
    logits (B, classes) as float32), both detached. The time estimate times this very step."""
    batch = augment(
        x,
        normalization=inputs.of(runner),
        crop_scale=tp.crop_scale,
        flip=tp.flip,
        translate=tp.translate,
        generator=generator,
        memory_format=compute.format,
    )
    with compute.autocast():
        logits = runner(batch)
        loss = criterion(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), logits.detach().float()


def build(spec: ModelSpec, train: Split, classes: int, compute: Compute) -> nn.Module:
    """`spec`'s architecture for `classes` classes and the channels of the `train` images (3 or 1),
    on their device, in `compute`'s memory format."""
    model = models.build(spec.name, num_classes=classes, in_channels=train.images.shape[1], **spec.options)
    return model.to(train.device, memory_format=compute.format)


def validate(
    model: nn.Module,
    split: Split,
    batch_size: int,
    progress: Progress | None = None,
    compute: Compute | None = None,
    *,
    head_only: bool = False,
) -> dict:
    """Log loss and accuracy over the whole split: with several processes, each predicts its shard
    and the sums are added up, so every image counts once, as in a single process. `head_only`:
    the split holds a frozen backbone's features (training.precompute), which the head alone reads."""
    proba = (precompute.probabilities if head_only else probabilities)(
        model, split, batch_size, progress=progress, compute=compute
    )
    labels = split.labels.cpu()
    loss = nn.functional.nll_loss(torch.log(proba.clamp_min(1e-12)), labels, reduction="sum").item()
    loss, correct, n = distributed.sum_over_processes(
        [loss, (proba.argmax(1) == labels).sum().item(), len(labels)], split.device
    )
    return {"loss": loss / n, "accuracy": correct / n}


def first_nonfinite(first_bad: torch.Tensor) -> int:
    """The first step whose loss was NaN or ±inf in any process, or -1: all stop together, or none."""
    never = torch.iinfo(torch.long).max
    step = distributed.min_over_processes(torch.where(first_bad < 0, never, first_bad))
    return -1 if step == never else step


def per_process_batch(spec: ModelSpec, processes: int) -> int:
    """Each process's share of the batch: the global batch (and so the learning rate) stays as set."""
    if spec.train.batch_size % processes:
        raise ParamError(
            "train.batch_size",
            spec.train.batch_size,
            f"must be divisible by the {processes} processes that train {spec.name}: each takes an equal "
            f"share of every step (models.{spec.name}.batch_size sets it for {spec.name} alone)",
        )
    return spec.train.batch_size // processes


def seed_process(generator: torch.Generator, seed: int, rank: int, epoch: int) -> None:
    """Process `rank`'s random streams for one epoch (its batch order, augmentation and dropout),
    derived from (seed, rank, epoch) alone: a resumed run needs only process 0's resume file."""
    derived = int.from_bytes(hashlib.sha256(f"{seed} {rank} {epoch}".encode()).digest()[:8], "little")
    generator.manual_seed(derived)
    torch.manual_seed(derived)


def diverged(spec: ModelSpec, epoch: int, bad: int, schedule: Schedule, resume: ResumeFile | None) -> StageError:
    """What to change when the loss at step `bad` (counted over the run) was NaN or infinite."""
    tp = spec.train
    where = f"; the last good epoch's state is kept in {resume.path}" if resume and epoch else ""
    return StageError(
        f"{spec.name}: the training loss became NaN or infinite at epoch {epoch + 1}, step "
        f"{bad - epoch * schedule.steps_per_epoch + 1} of {schedule.steps_per_epoch} (learning rate "
        f"{tp.lr * schedule.factor(bad):.3g}){where}. Lower models.{spec.name}.lr_scale (now {tp.lr_scale:g}, "
        f"a peak of {tp.lr:g}) or lengthen train.warmup_epochs (now {tp.warmup_epochs:g})."
    )


def out_of_memory(spec: ModelSpec, world: distributed.World, device: torch.device) -> StageError:
    batch = spec.train.batch_size
    share = f", {batch // world.size} per process" if world.size > 1 else ""
    half = max(world.size, batch // (2 * world.size) * world.size)  # still divisible between the processes
    return StageError(
        f"{spec.name}: CUDA ran out of memory at batch size {batch}{share} ({describe(device)}). "
        f"Set models.{spec.name}.batch_size: {half} (or train.batch_size) and rerun; models already "
        f"trained are not trained again."
    )
