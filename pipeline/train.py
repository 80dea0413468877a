"""Stage `train`: train every architecture that `model` selects; keep each one's best-validation weights.

Per epoch: one pass over the shuffled training tensors (augmented on the device), then the
validation split in eval mode. Curves go to DVCLive, one folder of plots per model.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from pipeline import checkpoint, io, models, params, runtime
from pipeline.data import Split, augment, batches, load_split
from pipeline.params import ModelSpec, TrainParams

WARMUP_START = 0.01  # warm-up starts at 1% of the peak learning rate
CHECK_EVERY = 50  # steps between looks for a non-finite loss: one host-device sync each


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Learning rate before optimiser step `step` (0-based) of `total`: linear warm-up, cosine to 0."""
    if step < warmup:
        return peak * (WARMUP_START + (1 - WARMUP_START) * step / warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


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
    groups = param_groups(model, tp.lr, tp.weight_decay)
    if tp.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=tp.lr, momentum=tp.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=tp.lr, betas=(tp.momentum, 0.999))


class NonFiniteLoss(Exception):
    def __init__(self, step: int):
        self.step = step  # the first optimiser step, counted over the whole run, whose loss was NaN or ±inf


def train_one_epoch(model, optimizer, split: Split, tp: TrainParams, *, step: int, total: int, warmup: int, generator):
    """One pass over `split`; returns (mean loss, accuracy, images seen, next step).

    Sums stay on the device: the host waits for the GPU only every CHECK_EVERY steps, to look
    for a non-finite loss (raising NonFiniteLoss with the first bad step), and at the end.
    """
    model.train()
    criterion = nn.CrossEntropyLoss(label_smoothing=tp.label_smoothing)
    loss_sum = torch.zeros((), device=split.device)
    correct = torch.zeros((), device=split.device, dtype=torch.long)
    first_bad = torch.full((), -1, device=split.device, dtype=torch.long)
    seen = 0
    for i, (x, y) in enumerate(batches(split, tp.batch_size, shuffle=True, generator=generator)):
        scale = lr_at(step, total, warmup, 1.0)
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * scale
        with runtime.autocast(split.device):
            logits = model(augment(x, crop_scale=tp.crop_scale, flip=tp.flip, generator=generator))
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
        if (i + 1) % CHECK_EVERY == 0 and first_bad.item() >= 0:
            raise NonFiniteLoss(first_bad.item())
    if first_bad.item() >= 0:
        raise NonFiniteLoss(first_bad.item())
    return loss_sum.item() / seen, correct.item() / seen, seen, step


def validate(model: nn.Module, split: Split, batch_size: int) -> dict:
    proba = runtime.predict(model, split, batch_size)
    labels = split.labels.cpu()
    loss = nn.functional.nll_loss(torch.log(proba.clamp_min(1e-12)), labels).item()
    return {"loss": loss, "accuracy": (proba.argmax(1) == labels).float().mean().item()}


def fingerprint(spec: ModelSpec, data_digest: str) -> str:
    """Everything a trained model is a function of: its architecture, its recipe and the data.
    Where and how fast it runs (device, compile) and whether to resume are not part of it."""
    recipe = {k: v for k, v in asdict(spec.train).items() if k not in ("device", "compile", "resume")}
    blob = json.dumps({"name": spec.name, "options": spec.options, "train": recipe, "data": data_digest}, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()


def train_model(
    spec: ModelSpec,
    train: Split,
    val: Split,
    *,
    log: Callable[[int, dict], None] | None = None,
    resume_file: Path | None = None,
    key: str = "",
):
    """Train one architecture; returns the model holding its best-validation weights, and a summary.

    With `resume_file`, the state after every epoch (weights, optimiser, random generators, curves)
    is saved there, and a run whose `key` (see `fingerprint`) matches the file's continues from it
    instead of starting over: an interrupted run ends with the same weights as an uninterrupted
    one (on the CPU), and a model already trained with the same key is not trained again.
    """
    tp, device = spec.train, train.device
    torch.manual_seed(tp.seed)  # same seed, same init and dropout masks: runs are comparable
    generator = torch.Generator().manual_seed(tp.seed)  # batch order and augmentation, on the CPU for every device
    model = models.build(spec.name, **spec.options).to(device, memory_format=torch.channels_last)
    optimizer = make_optimizer(model, tp)
    runner = torch.compile(model) if tp.compile and device.type == "cuda" else model

    steps_per_epoch = max(1, len(train) // tp.batch_size) if len(train) >= tp.batch_size else 1
    total = steps_per_epoch * tp.run_epochs
    warmup = min(total, round(tp.warmup_epochs * steps_per_epoch))
    run = {"history": [], "best": None, "seconds": 0.0, "images": 0}
    saved = checkpoint.load_progress(resume_file, key) if resume_file and tp.resume else None
    if saved:
        run = checkpoint.restore_progress(saved, model, optimizer, generator, device)
        print(f"{spec.name:>12s} resumes after epoch {len(run['history'])}/{tp.run_epochs} ({resume_file})", flush=True)
        for epoch, row in enumerate(run["history"]):
            if log:
                log(epoch, row)
    step = len(run["history"]) * steps_per_epoch
    for epoch in range(len(run["history"]), tp.run_epochs):
        runtime.synchronize(device)
        start = time.perf_counter()
        try:
            loss, accuracy, seen, step = train_one_epoch(
                runner, optimizer, train, tp, step=step, total=total, warmup=warmup, generator=generator
            )
        except NonFiniteLoss as e:
            kept = f"; the last good epoch's state is kept in {resume_file}" if resume_file and epoch else ""
            raise io.StageError(
                f"{spec.name}: the training loss became NaN or infinite at epoch {epoch + 1}, step "
                f"{e.step - epoch * steps_per_epoch + 1} of {steps_per_epoch} (learning rate "
                f"{tp.lr * lr_at(e.step, total, warmup, 1.0):.3g}){kept}. Lower models.{spec.name}.lr "
                f"(now {tp.lr:g}) or lengthen train.warmup_epochs (now {tp.warmup_epochs:g})."
            ) from None
        except torch.cuda.OutOfMemoryError:
            raise io.StageError(
                f"{spec.name}: CUDA ran out of memory at batch size {tp.batch_size} ({runtime.describe(device)}). "
                f"Set models.{spec.name}.batch_size: {max(1, tp.batch_size // 2)} (or train.batch_size) "
                f"and rerun; models already trained are not trained again."
            ) from None
        elapsed = time.perf_counter() - start  # .item() in train_one_epoch has synchronised
        run["seconds"] += elapsed
        run["images"] += seen
        val_metrics = validate(runner, val, tp.batch_size)
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
        if run["best"] is None or val_metrics["accuracy"] > run["best"]["val"]["accuracy"]:
            run["best"] = {"epoch": epoch, "val": val_metrics, "state": copy.deepcopy(model.state_dict())}
        if resume_file:
            checkpoint.save_progress(resume_file, key, run, model, optimizer, generator, final=epoch + 1 == tp.run_epochs)
        print(
            f"{spec.name:>12s} epoch {epoch + 1}/{tp.run_epochs}: loss {loss:.4f} acc {accuracy:.3f}"
            f" | val loss {val_metrics['loss']:.4f} acc {val_metrics['accuracy']:.3f} | {seen / elapsed:.0f} img/s",
            flush=True,
        )
    best = run["best"]
    model.load_state_dict(best["state"])
    summary = {
        "epochs": tp.run_epochs,
        "best_epoch": best["epoch"] + 1,
        "val": best["val"],
        "seconds": run["seconds"],
        "images_per_second": run["images"] / run["seconds"] if run["seconds"] else 0.0,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    return model, summary


def train_all(p: params.Params, data: Path, out: Path, live_dir: Path, progress: Path) -> dict[str, dict]:
    from dvclive import Live

    device = runtime.choose_device(p.train.device)
    models.preflight(p.models, p.data.image_size)
    data_digest = io.read_json(data / "meta.json")["digest"]
    train, val = load_split(data, "train", device), load_split(data, "val", device)
    print(f"train: {len(train)} train / {len(val)} val images at {p.data.image_size} px on {runtime.describe(device)}")
    summaries = {}
    with Live(str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None) as live:
        for spec in p.models:

            def log(epoch: int, row: dict, name: str = spec.name) -> None:
                live.step = epoch
                for key, value in row.items():
                    live.log_metric(f"{name}/{key}", value)
                live.next_step()

            resume_file = progress / f"{spec.name.replace(':', '-')}.pt"
            model, summary = train_model(spec, train, val, log=log, resume_file=resume_file, key=fingerprint(spec, data_digest))
            summary["device"] = runtime.describe(device)
            summary["image_size"] = p.data.image_size
            summary["train"] = asdict(spec.train)
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
