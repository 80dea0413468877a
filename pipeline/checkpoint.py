"""A trained model on disk: its weights together with everything needed to rebuild and judge it."""

from __future__ import annotations

import copy
import sys
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline import distributed, models
from pipeline.atomic import atomic_path
from pipeline.errors import StageError
from pipeline.files import DOGS_VS_CATS

# Bumped when a model file's content changes meaning (2: `meta` holds the resize policy, which
# `predict` needs to see a photo as the model was trained to; 3: and the classes and channels):
# older files are refused, by name, except format 2's, all of which are Dogs-vs-Cats' RGB models.
MODEL_FORMAT = 3
READABLE = (2, 3)
UNSAID = {"classes": list(DOGS_VS_CATS), "channels": 3}  # what a model file that does not say is for


def save(path: Path, model: nn.Module, *, name: str, options: dict, meta: dict[str, Any]) -> None:
    """Weights (on the CPU, so any machine can load them) plus the builder name and options."""
    state = _cpu(_unwrap(model).state_dict())
    with atomic_path(path) as tmp:
        torch.save({"format": MODEL_FORMAT, "name": name, "options": options, "state_dict": state, "meta": meta}, tmp)


def read(path: Path) -> dict:
    """A model file's content, loaded as data only (`weights_only`: a file from a stranger cannot
    run code); StageError naming the file if it is missing, not a model file, or of another format."""
    if not Path(path).is_file():
        raise StageError(f"{path}: no such model file")
    try:
        with warnings.catch_warnings():  # torch warns about the pickle it is about to refuse: the error says it
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated file, another format, a pickle that wants more than tensors
        raise StageError(f"{path} is not a model file this code can read ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise StageError(f"{path} is not a model file written by this project's train stage")
    if ckpt.get("format") not in READABLE:
        raise StageError(
            f"{path} was written by another version of this code (model format {ckpt.get('format', 1)}, "
            f"this one reads {', '.join(map(str, READABLE))}): train it again (dvc repro -f train)"
        )
    ckpt["meta"] = {**UNSAID, **ckpt["meta"]}
    return ckpt


def load(path: Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the architecture from its recorded options, classes and channels, and load the
    trained weights. Pretrained weights are not fetched again (`pretrained: false`): the checkpoint holds them.
    """
    ckpt = read(path)
    options = dict(ckpt["options"])
    if "pretrained" in models.option_types(ckpt["name"]):
        options["pretrained"] = False
    meta = ckpt["meta"]
    model = models.build(ckpt["name"], num_classes=len(meta["classes"]), in_channels=meta["channels"], **options)
    model.load_state_dict(ckpt["state_dict"])
    model.to(device, memory_format=torch.channels_last)
    return model, {"name": ckpt["name"], "options": ckpt["options"], **meta}


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module under torch.compile's or DistributedDataParallel's wrapper."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


# ---------------------------------------------------------------- progress: resume after any epoch

# Bumped when what a progress file holds changes meaning (2: curves named train_loss, ..., the
# training loss without label smoothing): an older file is not resumed from, its model retrains.
PROGRESS_FORMAT = 2


@dataclass
class Kept:
    """The epoch whose weights the model file keeps: with `keep: last` always the latest one."""

    epoch: int  # 0-based
    val: dict  # its validation loss and accuracy
    state: dict | None  # its weights when they are not the model's current ones (`keep: best`), else None


@dataclass
class Run:
    """What training one model has done so far; saved after every epoch, restored to resume."""

    history: list[dict] = field(default_factory=list)  # one row of curves per finished epoch
    seconds: float = 0.0  # training time, validation excluded
    images: int = 0  # training images seen, over every process
    kept: Kept | None = None

    def add(self, row: dict, *, seconds: float, images: int, keep: str, model: nn.Module) -> None:
        """Record a finished epoch; with `keep: best`, copy its weights if its validation is the best yet."""
        self.history.append(row)
        self.seconds += seconds
        self.images += images
        val = {"loss": row["val_loss"], "accuracy": row["val_accuracy"]}
        if keep == "last" or self.kept is None or val["accuracy"] > self.kept.val["accuracy"]:
            state = copy.deepcopy(model.state_dict()) if keep == "best" else None
            self.kept = Kept(len(self.history) - 1, val, state)


def _cpu(state: dict) -> dict:
    return {k: v.detach().cpu() for k, v in state.items()}


def _snapshot(value):
    """A CPU copy of every tensor in a nested state (training goes on changing the originals)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _snapshot(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_snapshot(v) for v in value)
    return value


class ProgressWriter:
    """Writes resume checkpoints in a background thread: the next epoch trains while the last one's
    state (over 500 MB for AlexNet with AdamW's two moments) goes to disk, so the cores never wait
    on a single-threaded save between epochs. `wait()` before relying on the file."""

    def __init__(self):
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def write(self, path: Path, state: dict) -> None:
        self.wait()
        self._thread = threading.Thread(target=self._write, args=(path, state), name="progress-writer")
        self._thread.start()

    def _write(self, path: Path, state: dict) -> None:
        try:
            with atomic_path(path) as tmp:
                torch.save(state, tmp)
        except BaseException as e:  # re-raised in the training thread by wait()
            self._error = e

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def save_progress(
    path: Path, key: str, run: Run, model: nn.Module, optimizer, generator, *, final: bool, writer: ProgressWriter | None = None
) -> None:
    """Everything needed to continue after this epoch as if never stopped. Once the last epoch is
    done the optimiser state is dropped (it is as large as the weights, twice for AdamW)."""
    kept = run.kept
    current = kept.epoch == len(run.history) - 1  # the kept weights are the current ones: stored once
    state = _snapshot(
        {
            "format": PROGRESS_FORMAT,
            "key": key,
            "history": run.history,
            "seconds": run.seconds,
            "images": run.images,
            "best": {"epoch": kept.epoch, "val": kept.val, "state": None if current else kept.state},
            "model": _unwrap(model).state_dict(),
            "optimizer": None if final else optimizer.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "generator": generator.get_state(),
            },
        }
    )
    if writer is None:  # a one-off save: write it now
        writer = ProgressWriter()
        writer.write(path, state)
        writer.wait()
    else:
        writer.write(path, state)


def load_progress(path: Path, key: str) -> dict | None:
    """The saved progress if it was made with the same key (same model, recipe and data) by this
    version of the format, else None."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated by a full disk or a killed machine, or not ours: start over
        aside = path.with_name(path.name + ".corrupt")
        path.replace(aside)
        print(f"{path}: unreadable ({type(e).__name__}); moved to {aside.name}, this model trains from the start", file=sys.stderr, flush=True)
        return None
    return state if state.get("key") == key and state.get("format") == PROGRESS_FORMAT else None


def epochs_done(path: Path, key: str) -> int:
    """How many epochs the progress file at `path` holds for `key` (0 if none): read from its
    history alone, the tensors memory-mapped, not loaded."""
    if not path.exists():
        return 0
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # unreadable: load_progress sets it aside when training reaches it
        return 0
    return len(state["history"]) if state.get("key") == key and state.get("format") == PROGRESS_FORMAT else 0


def negotiate(path: Path | None, key: str, *, enabled: bool, world: distributed.World, name: str) -> dict | None:
    """The progress every process resumes from, or None for all: process 0 decides, so that all of
    them resume or none does; each then reads the file itself."""
    saved = load_progress(path, key) if path and enabled and world.main else None
    if distributed.from_main(saved is not None) and not world.main:
        saved = load_progress(path, key)
        if saved is None:
            raise StageError(
                f"{name}: process {world.rank} cannot read {path}, which process 0 resumes from: "
                f"on several machines, --progress must be a folder they all see (or set runtime.resume: false)"
            )
    return saved


def restore_progress(state: dict, model: nn.Module, optimizer, generator, device: torch.device) -> Run:
    """Put saved progress back into a freshly built model, optimiser and generators; return the run."""
    model.load_state_dict(state["model"])
    if state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"]["torch"])
    if device.type == "cuda" and state["rng"]["cuda"]:
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    generator.set_state(state["rng"]["generator"])
    best = state["best"]
    best_state = best["state"] if best["state"] is not None else state["model"]
    kept = Kept(best["epoch"], best["val"], {k: v.to(device) for k, v in best_state.items()})
    return Run(history=state["history"], seconds=state["seconds"], images=state["images"], kept=kept)


def replay(run: Run, log) -> None:
    """Hand the curves of the epochs already done to `log` (if any), as if they had just been trained."""
    if log:
        for epoch, row in enumerate(run.history):
            log(epoch, row)
