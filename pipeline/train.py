"""Stage `train`: train every architecture that `model` selects; keep each one's last (or, with
`train.keep: best`, best-validation) weights.

Before anything trains, each model's time is estimated from a few timed steps. Per epoch: one
pass over the shuffled training tensors (augmented on the device), then the validation split in
eval mode, each with a progress bar (plain lines in a log). Every model's curves go to one table,
written through DVCLive: dvclive/plots/custom/epochs.json.

With runtime.processes = N above 1 the stage relaunches itself under `torchrun --nproc_per_node=N`:
each process holds its shard of both splits and DistributedDataParallel averages the gradients, so
one step still sees train.batch_size images at train.lr; process 0 alone prints and writes models,
curves and checkpoints.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from dvclive import Live
from torch import nn

from pipeline import checkpoint, cli, distributed, files, models, params, runtime
from pipeline.data import Split, augment, batches, load_split
from pipeline.errors import ParamError, StageError
from pipeline.files import EPOCHS
from pipeline.optim import lr_factor, make_optimizer
from pipeline.params import ModelSpec
from pipeline.progress import Progress, about
from pipeline.sections import TrainParams

CHECK_EVERY = 50  # steps between looks for a non-finite loss: one host-device sync each
TIMED_STEPS = 3  # training steps timed per model for the estimate printed before training


class NonFiniteLoss(Exception):
    def __init__(self, step: int):
        self.step = step  # the first optimiser step, counted over the whole run, whose loss was NaN or ±inf


def train_one_epoch(
    model, optimizer, split: Split, tp: TrainParams, *, batch_size: int, step: int, schedule: Schedule, generator,
    progress: Progress | None = None, processes: int = 1,
):
    """One pass over `split` in batches of `batch_size`; returns (mean log loss, accuracy, images
    seen, next step), the first three over every process.

    The log loss reported is plain cross-entropy on the (augmented) batches, without the label
    smoothing the optimiser minimises: smoothing puts a floor of about 0.2 under the objective,
    which would make the training curve look worse than validation's for no reason.

    Sums stay on the device: the host waits for the GPU only every CHECK_EVERY steps, to look
    for a non-finite loss (raising NonFiniteLoss with the first bad step), and at the end.
    """
    model.train()
    criterion = nn.CrossEntropyLoss(label_smoothing=tp.label_smoothing)
    loss_sum = torch.zeros((), device=split.device)
    correct = torch.zeros((), device=split.device, dtype=torch.long)
    first_bad = torch.full((), -1, device=split.device, dtype=torch.long)
    seen = 0
    look_every = CHECK_EVERY if split.device.type == "cuda" else 1  # reading the loss costs a GPU sync, nothing on the CPU
    for i, (x, y) in enumerate(batches(split, batch_size, shuffle=True, generator=generator)):
        scale = lr_factor(step, schedule.total, schedule.warmup)
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * scale
        loss, logits = optimiser_step(model, optimizer, criterion, x, y, tp, generator)
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), step, first_bad)
        loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        step += 1
        if (i + 1) % CHECK_EVERY == 0 and (bad := first_nonfinite(first_bad)) >= 0:
            raise NonFiniteLoss(bad)
        if progress is not None:
            shown = {"loss": loss_sum.item() / seen} if (i + 1) % look_every == 0 else {}
            progress.update(len(y) * processes, **shown)
    if (bad := first_nonfinite(first_bad)) >= 0:
        raise NonFiniteLoss(bad)
    loss_sum, correct, seen = distributed.sum_over_processes([loss_sum.item(), correct.item(), seen], split.device)
    return loss_sum / seen, correct / seen, int(seen), step


def optimiser_step(model, optimizer, criterion, x: torch.Tensor, y: torch.Tensor, tp: TrainParams, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One step on a uint8 batch x (B, C, S, S): augment, forward (bf16 on CUDA), backward, update.
    Returns (the loss minimised, the logits as float32), both detached from the graph."""
    with runtime.autocast(x.device):
        logits = model(augment(x, crop_scale=tp.crop_scale, flip=tp.flip, translate=tp.translate, generator=generator))
        loss = criterion(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), logits.detach().float()


def first_nonfinite(first_bad: torch.Tensor) -> int:
    """The first step whose loss was NaN or ±inf in any process, or -1: all stop together, or none."""
    never = torch.iinfo(torch.long).max
    step = distributed.min_over_processes(torch.where(first_bad < 0, never, first_bad))
    return -1 if step == never else step


def validate(model: nn.Module, split: Split, batch_size: int, progress: Progress | None = None) -> dict:
    """Loss and accuracy over the whole split: with several processes, each predicts its shard
    and the sums are added up, so every image counts once, as in a single process."""
    proba = runtime.predict(model, split, batch_size, progress=progress)
    labels = split.labels.cpu()
    loss = nn.functional.nll_loss(torch.log(proba.clamp_min(1e-12)), labels, reduction="sum").item()
    loss, correct, n = distributed.sum_over_processes([loss, (proba.argmax(1) == labels).sum().item(), len(labels)], split.device)
    return {"loss": loss / n, "accuracy": correct / n}


def fingerprint(spec: ModelSpec, data_digest: str, processes: int = 1) -> str:
    """Everything a trained model is a function of: its architecture, its recipe (the `train` section
    as resolved for it, whole), the data, and the number of processes that trained it (their shards
    and random streams differ from one process's). `runtime` is not part of it, by construction; nor
    is runtime.processes itself: the processes actually launched count (torchrun across machines starts more)."""
    blob = {"name": spec.name, "options": spec.options, "train": asdict(spec.train), "data": data_digest}
    if processes > 1:  # one process keeps the keys it always had: its checkpoints stay valid
        blob["processes"] = processes
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=list).encode()).hexdigest()


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
    derived from (seed, rank, epoch) alone: a resumed run needs only process 0's checkpoint."""
    derived = int.from_bytes(hashlib.sha256(f"{seed} {rank} {epoch}".encode()).digest()[:8], "little")
    generator.manual_seed(derived)
    torch.manual_seed(derived)


def diverged(spec: ModelSpec, epoch: int, step: int, steps: int, lr: float, kept: Path | None) -> StageError:
    tp = spec.train
    where = f"; the last good epoch's state is kept in {kept}" if kept else ""
    return StageError(
        f"{spec.name}: the training loss became NaN or infinite at epoch {epoch + 1}, step {step} of {steps} "
        f"(learning rate {lr:.3g}){where}. Lower models.{spec.name}.lr_scale (now {tp.lr_scale:g}, "
        f"a peak of {tp.peak_lr:g}) or lengthen train.warmup_epochs (now {tp.warmup_epochs:g})."
    )


def out_of_memory(spec: ModelSpec, world: distributed.World, device: torch.device) -> StageError:
    batch = spec.train.batch_size
    share = f", {batch // world.size} per process" if world.size > 1 else ""
    half = max(world.size, batch // (2 * world.size) * world.size)  # still divisible between the processes
    return StageError(
        f"{spec.name}: CUDA ran out of memory at batch size {batch}{share} ({runtime.describe(device)}). "
        f"Set models.{spec.name}.batch_size: {half} (or train.batch_size) and rerun; models already "
        f"trained are not trained again."
    )


@dataclass(frozen=True)
class Schedule:
    """The optimiser steps of one run: the learning rate at each follows lr_factor(step, total, warmup)."""

    steps_per_epoch: int
    total: int
    warmup: int

    @classmethod
    def of(cls, images: int, batch_size: int, tp: TrainParams) -> Schedule:
        steps_per_epoch = max(1, images // batch_size)  # batches() drops a partial last batch, unless it is the only one
        total = steps_per_epoch * tp.run_epochs
        return cls(steps_per_epoch, total, min(total, round(tp.warmup_epochs * steps_per_epoch)))


def build(spec: ModelSpec, train: Split, num_classes: int) -> nn.Module:
    """`spec`'s architecture for `num_classes` classes and the channels of the `train` images (3 or 1),
    on their device, channels-last."""
    model = models.build(spec.name, num_classes=num_classes, in_channels=train.images.shape[1], **spec.options)
    return model.to(train.device, memory_format=torch.channels_last)


def prepare(spec: ModelSpec, train: Split, world: distributed.World, compile: bool, num_classes: int):
    """(model, runner, evaluator, optimizer, synchronised BatchNorm layers): `model` is the plain
    module whose weights are saved, `runner` what a training step calls (wrapped for DDP, compiled),
    `evaluator` what validation calls."""
    device = train.device
    model = build(spec, train, num_classes)
    runner, synced = model, 0
    if world.size > 1:
        runner, synced = distributed.parallel(model, device)
        model = runner.module  # BatchNorm layers now synchronised: validate and save this one
    optimizer = make_optimizer(model, spec.train)
    runner = torch.compile(runner) if compile and device.type == "cuda" else runner
    # DDP's forward may broadcast buffers, a collective that unequal validation shards must not meet
    evaluator = runner if world.size == 1 else model
    return model, runner, evaluator, optimizer, synced


@contextlib.contextmanager
def explained(spec: ModelSpec, world: distributed.World, device: torch.device, epoch: int, schedule: Schedule, kept: Path | None):
    """Turn a diverged loss or an exhausted GPU inside an epoch into a StageError that says what to change."""
    try:
        yield
    except NonFiniteLoss as e:
        in_epoch = e.step - epoch * schedule.steps_per_epoch + 1
        lr = spec.train.peak_lr * lr_factor(e.step, schedule.total, schedule.warmup)
        raise diverged(spec, epoch, in_epoch, schedule.steps_per_epoch, lr, kept if epoch else None) from None
    except torch.cuda.OutOfMemoryError:
        raise out_of_memory(spec, world, device) from None


def train_model(
    spec: ModelSpec,
    train: Split,
    val: Split,
    *,
    log: Callable[[int, dict], None] | None = None,
    resume_file: Path | None = None,
    key: str = "",
    world: distributed.World = distributed.World(),
    resume: bool = True,
    compile: bool = False,
    num_classes: int = 2,
):
    """Train one architecture for `num_classes` classes; returns the model holding the weights `train.keep` chooses (the last
epoch's, or the best on validation), and a summary.

    With `resume_file`, the state after every epoch (weights, optimiser, random generators, curves)
    is saved there, and with `resume` a run whose `key` (see `fingerprint`) matches the file's
    continues from it instead of starting over: an interrupted run ends with the same weights as an
    uninterrupted one (on the CPU), and a model already trained with the same key is not trained again.

    In a `world` of several processes `train` and `val` are this process's shards; every process
    calls this, and only process 0 logs, prints and saves progress.
    """
    tp, device = spec.train, train.device
    batch_size = per_process_batch(spec, world.size)
    torch.manual_seed(tp.seed)  # same seed, same init and dropout masks: runs are comparable
    generator = torch.Generator().manual_seed(tp.seed)  # batch order and augmentation, on the CPU for every device
    model, runner, evaluator, optimizer, synced = prepare(spec, train, world, compile, num_classes)
    schedule = Schedule.of(len(train), batch_size, tp)
    run = checkpoint.Run()
    if saved := checkpoint.negotiate(resume_file, key, enabled=resume, world=world, name=spec.name):
        run = checkpoint.restore_progress(saved, model, optimizer, generator, device)
        if world.main:
            done = len(run.history)
            state = f"resumes after epoch {done}/{tp.run_epochs}"
            if done == tp.run_epochs:
                state = "already trained with this recipe and data"
            print(f"{spec.name:>12s} {state} ({resume_file})", flush=True)
        checkpoint.replay(run, log)
    step = len(run.history) * schedule.steps_per_epoch
    writer = checkpoint.ProgressWriter()  # saves each epoch's state while the next one trains
    try:
        for epoch in range(len(run.history), tp.run_epochs):
            if world.size > 1:
                seed_process(generator, tp.seed, world.rank, epoch)
            runtime.synchronize(device)
            start = time.perf_counter()
            desc = f"{spec.name} epoch {epoch + 1}/{tp.run_epochs}"
            images = schedule.steps_per_epoch * batch_size * world.size
            with explained(spec, world, device, epoch, schedule, resume_file), Progress(images, desc, enabled=world.main) as bar:
                loss, accuracy, seen, step = train_one_epoch(
                    runner, optimizer, train, tp, batch_size=batch_size, step=step, schedule=schedule, generator=generator,
                    progress=bar, processes=world.size,
                )  # fmt: skip
            elapsed = time.perf_counter() - start  # .item() in train_one_epoch has synchronised
            with Progress(len(val), f"{spec.name} validation", enabled=world.main) as bar:
                scores = validate(evaluator, val, batch_size, bar)
            row = curves(loss, accuracy, scores, optimizer)
            run.add(row, seconds=elapsed, images=seen, keep=tp.keep, model=model)
            if log:
                log(epoch, row)
            if resume_file and world.main:
                final = epoch + 1 == tp.run_epochs
                checkpoint.save_progress(resume_file, key, run, model, optimizer, generator, final=final, writer=writer)
            if world.main:
                line = f"{spec.name:>12s} epoch {epoch + 1}/{tp.run_epochs}: {epoch_line(row, seen / elapsed)}"
                print(line, flush=True)
    finally:
        writer.wait()  # the last epoch's checkpoint is complete before anyone reads it
    return model, summarise(model, run, tp, world, synced)


def step_seconds(spec: ModelSpec, train: Split, batch_size: int, steps: int = TIMED_STEPS, num_classes: int = 2) -> float:
    """Seconds one optimiser step of `spec` takes here: `steps` of them timed after one warm-up, on
    a throwaway copy of the model (its own weights, optimiser and random stream)."""
    device = train.device
    model = build(spec, train, num_classes)
    optimizer = make_optimizer(model, spec.train)
    generator = torch.Generator().manual_seed(0)
    x, y = next(batches(train, min(batch_size, len(train)), shuffle=True, generator=generator))
    criterion = nn.CrossEntropyLoss(label_smoothing=spec.train.label_smoothing)
    optimiser_step(model, optimizer, criterion, x, y, spec.train, generator)  # warm-up: allocations, cuDNN's choices
    runtime.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        optimiser_step(model, optimizer, criterion, x, y, spec.train, generator)
    runtime.synchronize(device)
    return (time.perf_counter() - start) / steps


def estimate(spec: ModelSpec, train: Split, val: Split, batch_size: int, epochs_left: int, where: str, num_classes: int = 2) -> tuple[float, str]:
    """(seconds, a line) for the epochs `spec` has left, from a few timed steps: a forward pass (validation)
    counted as a third of a training step."""
    per_step = step_seconds(spec, train, batch_size, num_classes=num_classes)
    per_epoch = per_step * (max(1, len(train) // batch_size) + math.ceil(len(val) / batch_size) / 3)
    left = "" if epochs_left == spec.train.run_epochs else " left"
    line = f"{spec.name:>12s} {about(per_epoch)}/epoch, {about(per_epoch * epochs_left)} for {epochs_left} epochs{left} on {where}"
    return per_epoch * epochs_left, line


def estimates(
    p: params.Params, train: Split, val: Split, progress: Path, keys: dict[str, str], where: str, world: distributed.World,
    num_classes: int = 2,
) -> None:
    """Before anything trains: one line per model left to train with the time it will take, and the
    sum, so that a CPU user learns within a minute that a run takes days, and what to change. A
    model already trained with the same key is left out (its own line says so when its turn comes)."""
    total, done_models = 0.0, 0
    for spec in p.models:
        done = checkpoint.epochs_done(progress / f"{progress_name(spec.name)}.pt", keys[spec.name]) if p.runtime.resume else 0
        if done >= spec.train.run_epochs:
            done_models += 1
            continue
        try:
            batch_size, epochs_left = per_process_batch(spec, world.size), spec.train.run_epochs - done
            seconds, line = estimate(spec, train, val, batch_size, epochs_left, where, num_classes)
        except torch.cuda.OutOfMemoryError:
            raise out_of_memory(spec, world, train.device) from None
        total += seconds
        print(line, flush=True)
    trained = f", {done_models} model{'s' * (done_models > 1)} already trained" if done_models else ""
    if done_models == len(p.models):
        print("train: every model is already trained with this recipe and data", flush=True)
    else:
        print(f"train: {about(total)} in all (estimated from {TIMED_STEPS} timed steps of each model{trained})", flush=True)
    if total > 3600 and train.device.type == "cpu":
        print(
            "train: that is long for a CPU. `python -m pipeline.preset cpu-64` trains ResNet-18 on 64 px "
            "images in minutes; or lower data.image_size, data.max_per_class or train.epochs, or choose "
            "fewer models (-S model=...)", flush=True,
        )  # fmt: skip


def progress_name(name: str) -> str:
    """A model's resume file name: `torchvision:resnet34` → torchvision-resnet34."""
    return name.replace(":", "-")


class EpochLog:
    """Every model's per-epoch curves in one long table, one row per (model, epoch), epochs counted
    from 1: `dvclive/plots/custom/epochs.json`, rewritten through DVCLive after each epoch, so it
    can be watched during a run. One table for every model is what lets one chart of dvc.yaml's
    `plots:` draw them all, whichever models `model` selects."""

    def __init__(self, live: Live):
        self.live = live
        self.rows: list[dict] = []

    def add(self, name: str, epoch: int, row: dict) -> None:
        self.rows.append({"model": name, "epoch": epoch + 1, **row})
        self.live.log_plot(EPOCHS, self.rows, x="epoch", y="val_accuracy", template="by_model")


def curves(loss: float, accuracy: float, val: dict, optimizer) -> dict:
    """One epoch's row of curves: the columns of the epochs table (files.epochs_file) that
    dvc.yaml's plots draw. Both losses are plain log loss: train's on augmented batches in train
    mode, val's on the clean validation images in eval mode."""
    lr = optimizer.param_groups[0]["lr"]
    return {"train_loss": loss, "train_accuracy": accuracy, "val_loss": val["loss"], "val_accuracy": val["accuracy"], "lr": lr}


def epoch_line(row: dict, images_per_second: float) -> str:
    train = f"loss {row['train_loss']:.4f} acc {row['train_accuracy']:.3f}"
    val = f"val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.3f}"
    return f"{train} | {val} | {images_per_second:.0f} img/s"


def summarise(model: nn.Module, run: checkpoint.Run, tp: TrainParams, world: distributed.World, synced: int) -> dict:
    """Load the kept epoch's weights into `model` (if not its current ones); the run in figures."""
    if run.kept.state is not None:
        model.load_state_dict(run.kept.state)
    return {
        "epochs": tp.run_epochs,
        "kept_epoch": run.kept.epoch + 1,
        "val": run.kept.val,
        "seconds": run.seconds,
        "images_per_second": run.images / run.seconds if run.seconds else 0.0,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "processes": world.size,
        "synchronised_batchnorm_layers": synced,
    }


def writable_folder(folder: Path, what: str) -> None:
    """Create `folder` if needed and make sure files can be written in it, before hours of training
    depend on it: else one StageError naming it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise StageError(f"{folder}: cannot write {what} there ({e.strerror or type(e).__name__}); fix its permissions or free space") from None


def train_all(p: params.Params, data: Path, out: Path, live_dir: Path, progress: Path) -> dict[str, dict]:
    writable_folder(progress, "the resume checkpoints")
    writable_folder(out, "the trained models")
    with distributed.launch(p.runtime.device) as (world, device):
        data_meta = files.read_json(data / "meta.json")
        classes, channels = data_meta.get("classes", files.DOGS_VS_CATS), data_meta.get("channels", 3)
        models.preflight(p.models, p.data.image_size, channels)
        data_digest = data_meta["digest"]
        train, val = (load_split(data, name, device, rank=world.rank, processes=world.size) for name in ("train", "val"))
        where = runtime.describe(device) + (f" × {world.size} processes" if world.size > 1 else "")
        images = distributed.sum_over_processes([len(train), len(val)], device)
        if world.main:
            kind = ("" if channels == 3 else " grey") + ("" if tuple(classes) == files.DOGS_VS_CATS else f" of {len(classes)} classes")
            print(f"train: {images[0]:.0f} train / {images[1]:.0f} val{kind} images at {p.data.image_size} px on {where}")
            print(p.recipe_table(), flush=True)
        if world.main and world.size < p.runtime.processes:
            print(f"train: runtime.processes = {p.runtime.processes}, but torchrun did not start them: training in {world.size}")
        keys = {spec.name: fingerprint(spec, data_digest, world.size) for spec in p.models}
        if world.main:
            estimates(p, train, val, progress, keys, where, world, len(classes))
        summaries = {}
        live = Live(str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None) if world.main else None  # process 0's
        with live or contextlib.nullcontext():
            epochs = EpochLog(live) if live else None
            for spec in p.models:

                def log(epoch: int, row: dict, name: str = spec.name) -> None:
                    epochs.add(name, epoch, row)

                model, summary = train_model(
                    spec, train, val, log=log if live else None, resume_file=progress / f"{progress_name(spec.name)}.pt",
                    key=keys[spec.name], world=world, resume=p.runtime.resume, compile=p.runtime.compile,
                    num_classes=len(classes),
                )
                summary["device"] = where
                summary["image_size"] = p.data.image_size
                summary["resize"] = data_meta["resize"]  # how a photo became the model's input: predict repeats it
                summary["channels"] = channels
                summary["classes"] = list(classes)  # what each output means, in order
                summary["train"] = asdict(spec.train)
                if world.main:
                    checkpoint.save(out / f"{spec.name}.pt", model, name=spec.name, options=spec.options, meta=summary)
                summaries[spec.name] = summary
                del model
    return summaries


def main() -> None:
    parser = cli.parser(__spec__.name, __doc__)
    parser.add_argument("--data", type=Path, required=True, help="preprocessed tensors")
    parser.add_argument("--out", type=Path, required=True, help="trained models")
    parser.add_argument("--live", type=Path, required=True, help="DVCLive folder")
    parser.add_argument("--progress", type=Path, required=True, help="per-epoch resume checkpoints (not a DVC output)")
    args = parser.parse_args()
    p = params.load()
    if p.runtime.processes > 1 and "LOCAL_RANK" not in os.environ:
        sys.exit(relaunch_under_torchrun(p.runtime.processes))
    train_all(p, args.data, args.out, args.live, args.progress)


def relaunch_under_torchrun(processes: int) -> int:
    """This same command in `processes` processes on this machine (torchrun --standalone); its exit
    status. One process needs no rendezvous, so the stage runs plain `python -m pipeline.train` and
    only hands over to torchrun for several; the count comes from params.yaml, not the shell."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    return subprocess.run([*command, "-m", __spec__.name, *sys.argv[1:]]).returncode


if __name__ == "__main__":
    cli.run(main)
