"""Stage `train`: train every architecture that `model` selects; keep each one's last (or, with
`train.keep: best`, best-validation) weights.

Per epoch: one pass over the shuffled training tensors (augmented on the device), then the
validation split in eval mode. Curves go to DVCLive, one folder of plots per model.

Under `torchrun --nproc_per_node=N` (dvc.yaml launches train.processes of them) each process holds
its shard of both splits and DistributedDataParallel averages the gradients, so one step still sees
train.batch_size images at train.lr; process 0 alone prints and writes models, curves and checkpoints.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from pipeline import checkpoint, distributed, io, models, params, runtime
from pipeline.data import Split, augment, batches, load_split
from pipeline.optim import lr_at, make_optimizer
from pipeline.params import ModelSpec, ParamError, TrainParams

CHECK_EVERY = 50  # steps between looks for a non-finite loss: one host-device sync each


class NonFiniteLoss(Exception):
    def __init__(self, step: int):
        self.step = step  # the first optimiser step, counted over the whole run, whose loss was NaN or ±inf


def train_one_epoch(
    model, optimizer, split: Split, tp: TrainParams, *, batch_size: int, step: int, total: int, warmup: int, generator
):
    """One pass over `split` in batches of `batch_size`; returns (mean loss, accuracy, images seen,
    next step), the first three over every process.

    Sums stay on the device: the host waits for the GPU only every CHECK_EVERY steps, to look
    for a non-finite loss (raising NonFiniteLoss with the first bad step), and at the end.
    """
    model.train()
    criterion = nn.CrossEntropyLoss(label_smoothing=tp.label_smoothing)
    loss_sum = torch.zeros((), device=split.device)
    correct = torch.zeros((), device=split.device, dtype=torch.long)
    first_bad = torch.full((), -1, device=split.device, dtype=torch.long)
    seen = 0
    for i, (x, y) in enumerate(batches(split, batch_size, shuffle=True, generator=generator)):
        scale = lr_at(step, total, warmup, 1.0)
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * scale
        with runtime.autocast(split.device):
            logits = model(augment(x, crop_scale=tp.crop_scale, flip=tp.flip, translate=tp.translate, generator=generator))
            loss = criterion(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss = loss.detach()
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), step, first_bad)
        loss_sum += loss * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        step += 1
        if (i + 1) % CHECK_EVERY == 0 and (bad := first_nonfinite(first_bad)) >= 0:
            raise NonFiniteLoss(bad)
    if (bad := first_nonfinite(first_bad)) >= 0:
        raise NonFiniteLoss(bad)
    loss_sum, correct, seen = distributed.sum_over_processes([loss_sum.item(), correct.item(), seen], split.device)
    return loss_sum / seen, correct / seen, int(seen), step


def first_nonfinite(first_bad: torch.Tensor) -> int:
    """The first step whose loss was NaN or ±inf in any process, or -1: all stop together, or none."""
    never = torch.iinfo(torch.long).max
    step = distributed.min_over_processes(torch.where(first_bad < 0, never, first_bad))
    return -1 if step == never else step


def validate(model: nn.Module, split: Split, batch_size: int) -> dict:
    """Loss and accuracy over the whole split: with several processes, each predicts its shard
    and the sums are added up, so every image counts once, as in a single process."""
    proba = runtime.predict(model, split, batch_size)
    labels = split.labels.cpu()
    loss = nn.functional.nll_loss(torch.log(proba.clamp_min(1e-12)), labels, reduction="sum").item()
    loss, correct, n = distributed.sum_over_processes([loss, (proba.argmax(1) == labels).sum().item(), len(labels)], split.device)
    return {"loss": loss / n, "accuracy": correct / n}


def fingerprint(spec: ModelSpec, data_digest: str, processes: int = 1) -> str:
    """Everything a trained model is a function of: its architecture, its recipe, the data and the
    number of processes that trained it (their shards and random streams differ from one process's).
    Where and how fast it runs (device, compile) and whether to resume are not part of it; nor is
    train.processes itself: the processes actually launched count (torchrun across machines starts more)."""
    recipe = {k: v for k, v in asdict(spec.train).items() if k not in ("device", "compile", "resume", "processes")}
    blob = {"name": spec.name, "options": spec.options, "train": recipe, "data": data_digest}
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


def diverged(spec: ModelSpec, epoch: int, step: int, steps: int, lr: float, kept: Path | None) -> io.StageError:
    tp = spec.train
    where = f"; the last good epoch's state is kept in {kept}" if kept else ""
    return io.StageError(
        f"{spec.name}: the training loss became NaN or infinite at epoch {epoch + 1}, step {step} of {steps} "
        f"(learning rate {lr:.3g}){where}. Lower models.{spec.name}.lr_scale (now {tp.lr_scale:g}, "
        f"a peak of {tp.peak_lr:g}) or lengthen train.warmup_epochs (now {tp.warmup_epochs:g})."
    )


def out_of_memory(spec: ModelSpec, world: distributed.World, device: torch.device) -> io.StageError:
    batch = spec.train.batch_size
    share = f", {batch // world.size} per process" if world.size > 1 else ""
    half = max(world.size, batch // (2 * world.size) * world.size)  # still divisible between the processes
    return io.StageError(
        f"{spec.name}: CUDA ran out of memory at batch size {batch}{share} ({runtime.describe(device)}). "
        f"Set models.{spec.name}.batch_size: {half} (or train.batch_size) and rerun; models already "
        f"trained are not trained again."
    )


def train_model(
    spec: ModelSpec,
    train: Split,
    val: Split,
    *,
    log: Callable[[int, dict], None] | None = None,
    resume_file: Path | None = None,
    key: str = "",
    world: distributed.World = distributed.World(),
):
    """Train one architecture; returns the model holding the weights `train.keep` chooses (the last
epoch's, or the best on validation), and a summary.

    With `resume_file`, the state after every epoch (weights, optimiser, random generators, curves)
    is saved there, and a run whose `key` (see `fingerprint`) matches the file's continues from it
    instead of starting over: an interrupted run ends with the same weights as an uninterrupted
    one (on the CPU), and a model already trained with the same key is not trained again.

    In a `world` of several processes `train` and `val` are this process's shards; every process
    calls this, and only process 0 logs, prints and saves progress.
    """
    tp, device = spec.train, train.device
    batch_size = per_process_batch(spec, world.size)
    torch.manual_seed(tp.seed)  # same seed, same init and dropout masks: runs are comparable
    generator = torch.Generator().manual_seed(tp.seed)  # batch order and augmentation, on the CPU for every device
    model = models.build(spec.name, **spec.options).to(device, memory_format=torch.channels_last)
    runner, synced = model, 0
    if world.size > 1:
        runner, synced = distributed.parallel(model, device)
        model = runner.module  # BatchNorm layers now synchronised: validate and save this one
    optimizer = make_optimizer(model, tp)
    runner = torch.compile(runner) if tp.compile and device.type == "cuda" else runner
    # DDP's forward may broadcast buffers, a collective that unequal validation shards must not meet
    evaluator = runner if world.size == 1 else model

    steps_per_epoch = max(1, len(train) // batch_size) if len(train) >= batch_size else 1
    total = steps_per_epoch * tp.run_epochs
    warmup = min(total, round(tp.warmup_epochs * steps_per_epoch))
    run = {"history": [], "best": None, "seconds": 0.0, "images": 0}
    # Process 0 decides whether to resume, so that all of them do or none; each then reads the file.
    saved = checkpoint.load_progress(resume_file, key) if resume_file and tp.resume and world.main else None
    if distributed.from_main(saved is not None) and not world.main:
        saved = checkpoint.load_progress(resume_file, key)
        if saved is None:
            raise io.StageError(
                f"{spec.name}: process {world.rank} cannot read {resume_file}, which process 0 resumes from: "
                f"on several machines, --progress must be a folder they all see (or set train.resume: false)"
            )
    if saved:
        run = checkpoint.restore_progress(saved, model, optimizer, generator, device)
        if world.main:
            done = len(run["history"])
            state = "already trained with this recipe and data" if done == tp.run_epochs else f"resumes after epoch {done}/{tp.run_epochs}"
            print(f"{spec.name:>12s} {state} ({resume_file})", flush=True)
        for epoch, row in enumerate(run["history"]):
            if log:
                log(epoch, row)
    step = len(run["history"]) * steps_per_epoch
    writer = checkpoint.ProgressWriter()  # saves each epoch's state while the next one trains
    try:
        for epoch in range(len(run["history"]), tp.run_epochs):
            if world.size > 1:
                seed_process(generator, tp.seed, world.rank, epoch)
            runtime.synchronize(device)
            start = time.perf_counter()
            try:
                loss, accuracy, seen, step = train_one_epoch(
                    runner, optimizer, train, tp, batch_size=batch_size, step=step, total=total, warmup=warmup, generator=generator
                )
            except NonFiniteLoss as e:
                in_epoch = e.step - epoch * steps_per_epoch + 1
                lr = tp.peak_lr * lr_at(e.step, total, warmup, 1.0)
                raise diverged(spec, epoch, in_epoch, steps_per_epoch, lr, resume_file if epoch else None) from None
            except torch.cuda.OutOfMemoryError:
                raise out_of_memory(spec, world, device) from None
            elapsed = time.perf_counter() - start  # .item() in train_one_epoch has synchronised
            run["seconds"] += elapsed
            run["images"] += seen
            val_metrics = validate(evaluator, val, batch_size)
            row = {
                "train/loss": loss,
                "train/accuracy": accuracy,
                "val/loss": val_metrics["loss"],
                "val/accuracy": val_metrics["accuracy"],
                "lr": optimizer.param_groups[0]["lr"],
            }
            run["history"].append(row)
            if log:
                log(epoch, row)
            # run["best"] holds the epoch whose weights the model file keeps (with keep: last, always
            # the current one, whose weights need no copy)
            if tp.keep == "last" or run["best"] is None or val_metrics["accuracy"] > run["best"]["val"]["accuracy"]:
                state = copy.deepcopy(model.state_dict()) if tp.keep == "best" else None
                run["best"] = {"epoch": epoch, "val": val_metrics, "state": state}
            if resume_file and world.main:
                checkpoint.save_progress(
                    resume_file, key, run, model, optimizer, generator, final=epoch + 1 == tp.run_epochs, writer=writer
                )
            if world.main:
                print(
                    f"{spec.name:>12s} epoch {epoch + 1}/{tp.run_epochs}: loss {loss:.4f} acc {accuracy:.3f}"
                    f" | val loss {val_metrics['loss']:.4f} acc {val_metrics['accuracy']:.3f} | {seen / elapsed:.0f} img/s",
                    flush=True,
                )
    finally:
        writer.wait()  # the last epoch's checkpoint is complete before anyone reads it
    best = run["best"]
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    summary = {
        "epochs": tp.run_epochs,
        "kept_epoch": best["epoch"] + 1,
        "val": best["val"],
        "seconds": run["seconds"],
        "images_per_second": run["images"] / run["seconds"] if run["seconds"] else 0.0,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "processes": world.size,
        "synchronised_batchnorm_layers": synced,
    }
    return model, summary


def train_all(p: params.Params, data: Path, out: Path, live_dir: Path, progress: Path) -> dict[str, dict]:
    from dvclive import Live

    with distributed.launch(p.train.device) as (world, device):
        models.preflight(p.models, p.data.image_size)
        data_digest = io.read_json(data / "meta.json")["digest"]
        train, val = (load_split(data, name, device, rank=world.rank, processes=world.size) for name in ("train", "val"))
        where = runtime.describe(device) + (f" × {world.size} processes" if world.size > 1 else "")
        images = distributed.sum_over_processes([len(train), len(val)], device)
        if world.main:
            print(f"train: {images[0]:.0f} train / {images[1]:.0f} val images at {p.data.image_size} px on {where}")
            print(p.recipe_table(), flush=True)
        if world.main and world.size < p.train.processes:
            print(f"train: train.processes = {p.train.processes}, but torchrun did not start them: training in {world.size}")
        summaries = {}
        live = Live(str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None) if world.main else None  # process 0's
        with live or contextlib.nullcontext():
            for spec in p.models:

                def log(epoch: int, row: dict, name: str = spec.name) -> None:
                    live.step = epoch
                    for key, value in row.items():
                        live.log_metric(f"{name}/{key}", value)
                    live.next_step()

                resume_file = progress / f"{spec.name.replace(':', '-')}.pt"
                key = fingerprint(spec, data_digest, world.size)
                model, summary = train_model(
                    spec, train, val, log=log if live else None, resume_file=resume_file, key=key, world=world
                )
                summary["device"] = where
                summary["image_size"] = p.data.image_size
                summary["train"] = asdict(spec.train)
                if world.main:
                    checkpoint.save(out / f"{spec.name}.pt", model, name=spec.name, options=spec.options, meta=summary)
                summaries[spec.name] = summary
                del model
    return summaries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="preprocessed tensors")
    parser.add_argument("--out", type=Path, required=True, help="trained models")
    parser.add_argument("--live", type=Path, required=True, help="DVCLive folder")
    parser.add_argument("--progress", type=Path, required=True, help="per-epoch resume checkpoints (not a DVC output)")
    args = parser.parse_args()
    train_all(params.load(), args.data, args.out, args.live, args.progress)


if __name__ == "__main__":
    io.run(main)
