"""Resume state: what training one model has done, saved after every epoch (resume/<model>.pt), so
that a stopped run continues where it was and a model already trained is not trained again.

A file is used only with the same key: a hash of everything the trained model is a function of
(architecture, recipe, data, processes). Not a DVC output: DVC would delete it before a rerun.
Once a model is finished and its model file written, the state keeps no weights of its own but a
copy of the model file, resume/<model>.weights.pt (`keep_model_file`), its sha256 in the state: one
copy of the weights instead of the three a state holds (the current, the kept and their average).
A copy, not a hardlink: a write into one name (`cp other.pt resume/nin.weights.pt`, a `truncate`)
must not reach the model file or DVC's cache through the other; a copy-on-write clone where the
file system has them, so no disk is spent until one of them changes.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from pipeline.common import files
from pipeline.common.atomic import atomic_path, torch_save
from pipeline.common.errors import StageError
from pipeline.models import inputs, modelfile, weightsfile
from pipeline.models.registry import normalization
from pipeline.params.recipes import ModelSpec
from pipeline.runtime import distributed

# Bumped when what a resume file holds changes meaning: a file of another format is not resumed from.
FORMAT = 1
# Bytes a resume state may hold: the weights, their moving average and the kept epoch's, each up to
# weightsfile.MAX_BYTES.
MAX_STATE_BYTES = 3 * weightsfile.MAX_BYTES


def key(spec: ModelSpec, data_digest: str, processes: int, precision: str = "fp32") -> str:
    """Everything a trained model is a function of: its architecture and the inputs it takes (the
    normalisation of its weights), its recipe (the `train` section as resolved for it, whole), the data, the number of
    processes that trained it (their shards and
    random streams differ from one process's) and the precision it computed in (bf16 and fp32 steps
    give other weights). The `runtime` params are not part of it, by construction: what they resolve
    to counts (the processes torchrun launched, the precision `auto` chose), not what they say."""
    blob = {
        "name": spec.name,
        "input": normalization(spec.name).record(),
        "options": spec.options,
        "train": asdict(spec.train),
        "data": data_digest,
        "processes": processes,
        "precision": precision,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=list).encode()).hexdigest()


def file_for(folder: Path, name: str) -> Path:
    """A model's resume file: `torchvision:resnet34` → folder/torchvision-resnet34.pt."""
    return Path(folder) / f"{name.replace(':', '-')}.pt"


def weights_file(path: Path) -> Path:
    """Where a finished model's resume state finds its weights: resume/nin.pt → resume/nin.weights.pt."""
    return path.with_name(path.stem + ".weights.pt")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ResumeFile:
    path: Path
    key: str  # see `key`
    reuse: bool = True  # runtime.resume: continue from a matching file; false: start over (and overwrite it)


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


def _snapshot(value):
    """A CPU copy of every tensor in a nested state (training goes on changing the originals)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _snapshot(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_snapshot(v) for v in value)
    return value


class Writer:
    """Writes resume files in a background thread: the next epoch trains while the last one's
    state (over 500 MB for AlexNet with AdamW's two moments) goes to disk, so the cores never wait
    on a single-threaded save between epochs. `wait()` before relying on the file."""

    def __init__(self):
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def write(self, path: Path, state: dict) -> None:
        self.wait()
        self._thread = threading.Thread(target=self._write, args=(path, state), name="resume-writer")
        self._thread.start()

    def _write(self, path: Path, state: dict) -> None:
        try:
            torch_save(state, path)
        except BaseException as e:  # re-raised in the training thread by wait()
            self._error = e

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def save(
    to: ResumeFile,
    run: Run,
    model: nn.Module,
    optimizer,
    scheduler,
    generator,
    *,
    final: bool,
    writer: Writer,
    average=None,
) -> None:
    """Everything needed to continue after this epoch as if never stopped, the moving average of
    the weights included (`average`, train.ema). Once the last epoch is done the optimiser state is
    dropped (it is as large as the weights, twice for AdamW)."""
    kept = run.kept
    current = (
        kept.epoch == len(run.history) - 1
    )  # the kept weights are the current ones (the average's with train.ema): stored once
    state = {
        "format": FORMAT,
        "key": to.key,
        "history": run.history,
        "seconds": run.seconds,
        "images": run.images,
        "kept": {"epoch": kept.epoch, "val": kept.val, "state": None if current else kept.state},
        "model": inputs.unwrap(model).state_dict(),
        "average": None
        if average is None
        else {"state": average.module.state_dict(), "updates": int(average.n_averaged)},
        "optimizer": None if final else optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "generator": generator.get_state(),
        },
    }
    with contextlib.suppress(OSError):  # a read-only link Windows will not delete: harmless, never read again
        weights_file(to.path).unlink(missing_ok=True)  # an earlier finished run's: this state has weights of its own
    writer.write(to.path, _snapshot(state))


def keep_model_file(path: Path, model_file: Path) -> bool:
    """Replace the weights of a finished model's resume state at `path` by a copy of its model file
    (files.clone), which holds the same tensors: the kept ones (the only ones a finished run still
    needs). False, and the state left whole, where the copy cannot be made."""
    if not path.is_file():
        return False
    copied = weights_file(path)
    try:
        with atomic_path(copied) as temporary:
            files.clone(model_file, temporary)
    except (OSError, StageError):
        return False
    state = torch.load(
        path, map_location="cpu", weights_only=True, mmap=True
    )  # the weights, about to be dropped, never read
    state["model"] = state["kept"]["state"] = state["average"] = None
    state = _snapshot(
        state
    )  # what is left (schedule, random streams) copied: the mapping closes before the file is replaced
    state["weights"] = {"file": copied.name, "sha256": sha256(copied)}
    torch_save(state, path)
    return True


def ours(state, key: str) -> bool:
    """A resume state made with this key (same model, recipe and data) in this format."""
    return isinstance(state, dict) and state.get("key") == key and state.get("format") == FORMAT


def load(path: Path, key: str) -> dict | None:
    """The saved state if it was made with the same key (same model, recipe and data) in this
    format, else None. An unreadable file (cut short by a full disk or a killed machine) is set aside."""
    if not os.path.lexists(path):
        return None
    try:
        state = weightsfile.load(path, "resume state", MAX_STATE_BYTES)
    except StageError as e:
        aside = path.with_name(path.name + ".corrupt")
        path.replace(aside)
        print(
            f"{path}: unreadable ({e}); moved to {aside.name}, this model trains from the start",
            file=sys.stderr,
            flush=True,
        )
        return None
    if not ours(state, key):
        return None
    if shared := state.get("weights"):
        copied = weights_file(path)
        if (
            not isinstance(shared, dict) or shared.get("file") != copied.name
        ):  # only its own neighbour: never a path out of resume/
            print(
                f"{path}: its weights are recorded as {str(shared)[:120]!r}, not {copied.name}; this model trains from "
                "the start",
                file=sys.stderr,
                flush=True,
            )
            return None
        if not copied.is_file() or sha256(copied) != shared.get("sha256"):
            print(
                f"{path}: its weights ({copied.name}) are missing or changed; this model trains from the start",
                file=sys.stderr,
                flush=True,
            )
            return None
        try:
            state["model"] = modelfile.read(copied)["state_dict"]  # the kept weights, checked against the architecture
        except StageError as e:
            print(
                f"{path}: its weights cannot be used ({e}); this model trains from the start",
                file=sys.stderr,
                flush=True,
            )
            return None
        state["kept"]["state"] = None
    return state


def epochs_done(path: Path, key: str) -> int:
    """How many epochs the resume file at `path` holds for `key` (0 if none): read from its history
    alone, the tensors memory-mapped, not loaded."""
    if not path.is_file():  # nothing, or not a regular file (`load` sets that aside)
        return 0
    try:
        weightsfile.check(path, "resume state", MAX_STATE_BYTES)  # `load`'s bounds, before a byte is unpickled
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # unreadable: `load` sets it aside when training reaches it
        return 0
    if not ours(state, key):
        return 0
    if (shared := state.get("weights")) and not (
        isinstance(shared, dict) and shared.get("file") == weights_file(path).name and weights_file(path).is_file()
    ):
        return 0  # the weights are gone, or recorded elsewhere: it trains again
    return len(state["history"])


def negotiate(resume: ResumeFile | None, *, world: distributed.World, name: str) -> dict | None:
    """The state every process resumes from, or None for all: process 0 decides, so that all of
    them resume or none does; each then reads the file itself."""
    usable = resume is not None and resume.reuse
    saved = load(resume.path, resume.key) if usable and world.main else None
    if distributed.from_main(saved is not None) and not world.main:
        saved = load(resume.path, resume.key)
        if saved is None:
            raise StageError(
                f"{name}: process {world.rank} cannot read {resume.path}, which process 0 resumes from: "
                f"on several machines, --resume must be a folder they all see (or set runtime.resume: false)"
            )
    return saved


def restore(state: dict, model: nn.Module, optimizer, scheduler, generator, device: torch.device, average=None) -> Run:
    """Put saved state back into a freshly built model, its moving average (train.ema), optimiser,
    schedule and generators; return the run. A finished run's state holds neither its weights nor
    their average: its model file's (the kept ones) come back as the model's."""
    model.load_state_dict(state["model"])
    if average is not None and state.get("average") is not None:
        average.module.load_state_dict(state["average"]["state"])
        average.n_averaged.fill_(state["average"]["updates"])
    if state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    if device.type == "cuda" and state["rng"]["cuda"]:
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    generator.set_state(state["rng"]["generator"])
    kept = state["kept"]
    current = state["average"]["state"] if state.get("average") is not None else state["model"]
    kept_state = kept["state"] if kept["state"] is not None else current
    return Run(
        history=state["history"],
        seconds=state["seconds"],
        images=state["images"],
        kept=Kept(kept["epoch"], kept["val"], {k: v.to(device) for k, v in kept_state.items()}),
    )
