"""The sections of params.yaml that need no model registry: `data`, the training recipe `train`, and
`runtime`, where and how training runs (never part of what a trained model is a function of).

Frozen dataclasses, checked by pipeline.schema (types) and by their own __post_init__ (ranges), so a
typo or a bad value fails at once, naming the param, before any work. The data stages read only
`data` (load_data): they import no torch and rerun for nothing a model changes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipeline.common import schema
from pipeline.common.bounds import LIMITS, synthetic_photos
from pipeline.common.errors import ParamError

PARAMS_FILE = Path("params.yaml")
SOURCES = ("microsoft", "kaggle", "fashion-mnist", "synthetic")
TOP_LEVEL = ("model", "data", "train", "runtime", "evaluate", "models")


@dataclass(frozen=True)
class DataParams:
    source: str  # microsoft | kaggle | fashion-mnist[:path] | synthetic[:N] | a path to a .zip or a folder of images
    image_size: int  # px: side of the square uint8 tensors that preprocess writes
    resize: Literal["crop", "squash"]  # crop: shorter side to image_size, centre crop; squash: ignore aspect
    max_per_class: int | None  # cap on images per class before splitting (quick runs); null = all
    val_fraction: float
    test_fraction: float
    seed: int  # split and subsampling seed
    channels: int = 3  # 3: RGB (grey photos replicated) | 1: grey, and every model's first layer takes one channel
    # training photos kept after the split (nested, as even across classes as they allow); null: all
    train_photos: int | None = None
    # a person's verdicts on doubtful labels (keep / exclude / relabel <class>), applied by the split: data/verdicts.py
    verdicts: str = "verdicts/none.yaml"

    def __post_init__(self):
        if self.channels not in (1, 3) or isinstance(self.channels, bool):
            raise ParamError("data.channels", self.channels, "use 3 (RGB) or 1 (grey)")
        _positive("data.image_size", self.image_size)
        _at_most("data.image_size", self.image_size, LIMITS["image_size"])
        _seed("data.seed", self.seed)
        if self.max_per_class is not None:
            _positive("data.max_per_class", self.max_per_class)
        if self.train_photos is not None:
            _positive("data.train_photos", self.train_photos)
        for key in ("val_fraction", "test_fraction"):
            value = getattr(self, key)
            if not 0 < value < 1:
                raise ParamError(f"data.{key}", value, "must be a fraction strictly between 0 and 1")
        if self.val_fraction + self.test_fraction >= 1:
            raise ParamError(
                "data.val_fraction + data.test_fraction",
                round(self.val_fraction + self.test_fraction, 6),
                "must be below 1, so that images are left to train on",
            )
        if not self.verdicts or not self.verdicts.isprintable():
            raise ParamError("data.verdicts", self.verdicts, "the path of a verdict file (verdicts/none.yaml: none)")
        if not self.source:
            raise ParamError("data.source", self.source, f"use one of {', '.join(SOURCES)} or a path")
        synthetic_photos(self.source)  # a count out of bounds fails here, before any stage's work


@dataclass(frozen=True)
class TrainParams:
    """Training recipe; every key may be overridden per architecture under `models.<name>`."""

    epochs: int
    batch_size: int
    # peak learning rate, reached after warm-up, then cosine decay to 0; in a ModelSpec, this architecture's (× its
    # lr_scale)
    lr: float
    schedule: Literal["cosine", "constant"]  # after the warm-up: cosine decay to 0, or lr to the end (the course's)
    optimizer: Literal["sgd", "adamw"]
    momentum: float  # SGD momentum (Nesterov; 0: plain SGD); AdamW's beta1
    weight_decay: float  # decoupled; never applied to biases or normalisation weights
    warmup_epochs: float  # linear warm-up from lr/100; fractions of an epoch allowed
    label_smoothing: float
    crop_scale: tuple[float, float]  # random-resized-crop area range; (1, 1) turns cropping off
    flip: bool  # random horizontal flips
    translate: float  # random shifts up to this fraction of the side (reflected borders); 0 turns them off
    keep: Literal["last", "best"]  # the weights a model file keeps: the last epoch's, or the best on validation
    seed: int  # weight init, batch order and augmentation
    # per-architecture cap, min(epochs, max_epochs): train.epochs still reaches every model
    max_epochs: int | None = None
    lr_scale: float = 1.0  # per-architecture factor on lr: train.lr still reaches every model
    # decay per step of the weights' moving average, which validation scores and the model file keeps; 0: the weights
    # themselves
    ema: float = 0.0
    # at least this many images an epoch: a smaller training set is shown again, reshuffled, within it (timm's epoch
    # repeats); 0: each photo once
    epoch_images: int = 0

    def __post_init__(self):
        if self.epoch_images < 0 or isinstance(self.epoch_images, bool):
            raise ParamError(
                "train.epoch_images",
                self.epoch_images,
                "must be 0 (each photo once an epoch) or a positive number of images",
            )
        _at_most(
            "train.epoch_images", self.epoch_images, (10_000_000, "an epoch of ten million images is days of training")
        )
        for key in ("epochs", "batch_size"):
            _positive(f"train.{key}", getattr(self, key))
            _at_most(f"train.{key}", getattr(self, key), LIMITS[key])
        _seed("train.seed", self.seed)
        if self.max_epochs is not None:
            _positive("train.max_epochs", self.max_epochs)
        for key in ("lr", "lr_scale"):
            if not getattr(self, key) > 0:
                raise ParamError(f"train.{key}", getattr(self, key), "must be a positive number")
        if not 0 <= self.translate < 0.5:
            raise ParamError("train.translate", self.translate, "must be a fraction of the side in [0, 0.5)")
        for key, low, high in (("momentum", 0, 1), ("label_smoothing", 0, 1), ("ema", 0, 1)):
            value = getattr(self, key)
            if not low <= value < high:
                raise ParamError(f"train.{key}", value, f"must be in [{low}, {high})")
        for key in ("weight_decay", "warmup_epochs"):
            if getattr(self, key) < 0:
                raise ParamError(f"train.{key}", getattr(self, key), "must be zero or positive")
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ParamError("train.crop_scale", list(self.crop_scale), "must be [low, high] with 0 < low <= high <= 1")

    @property
    def run_epochs(self) -> int:
        return min(self.epochs, self.max_epochs or self.epochs)

    def repeats(self, photos: int) -> int:
        """How many times an epoch shows each of `photos` training photos (epoch_images)."""
        return max(1, -(-self.epoch_images // max(1, photos)))

    def shown(self, photos: int) -> int:
        """Images an epoch shows from `photos` training photos: each of them `repeats` times."""
        return photos * self.repeats(photos)


TRAIN_KEYS = frozenset(f.name for f in dataclasses.fields(TrainParams))


@dataclass(frozen=True)
class RuntimeParams:
    """Where and how the stage runs. A trained model is the same function of its recipe and data
    whatever these are, up to the arithmetic: so none of these keys is part of the key a model's
    resume state is saved under (training.resume), but the precision `auto` resolves to is, and the
    model file records every choice (runtime.device.Compute)."""

    device: str  # auto (CUDA when available, else CPU) | cpu | cuda | cuda:N
    compile: bool | Literal["auto"]  # torch.compile the model's steps; auto: what is fastest on this kind of device
    resume: bool  # continue from the per-epoch resume state saved with the same model, recipe and data
    processes: int = 1  # training processes on this machine (torchrun --nproc_per_node), one per GPU
    # bf16: autocast (fp32 weights); auto: bf16 where the device computes it natively
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    memory_format: Literal["auto", "channels_last", "contiguous"] = "auto"
    threads: int = 0  # CPU threads for the stage, shared between its processes; 0: every core it may use
    budget_hours: float = 12.0  # check stops a run whose estimated training time is longer; 0: no limit

    def __post_init__(self):
        if not (self.budget_hours >= 0 and math.isfinite(self.budget_hours)) or isinstance(self.budget_hours, bool):
            raise ParamError(
                "runtime.budget_hours", self.budget_hours, "must be 0 (no limit) or a positive number of hours"
            )
        _positive("runtime.processes", self.processes)
        _at_most("runtime.processes", self.processes, LIMITS["processes"])
        if (
            not isinstance(self.device, str)
            or self.device not in ("auto", "cpu", "cuda")
            and not (
                self.device.startswith("cuda:")
                and self.device[5:].isascii()
                and self.device[5:].isdigit()
                and len(self.device) <= 9
            )
        ):  # ASCII digits only: int() reads "١" as 1, torch.device does not
            raise ParamError("runtime.device", self.device, "use auto, cpu, cuda or cuda:N")
        if self.threads < 0 or isinstance(self.threads, bool):
            raise ParamError("runtime.threads", self.threads, "must be 0 (every core) or a positive whole number")
        _at_most("runtime.threads", self.threads, LIMITS["threads"])


@dataclass(frozen=True)
class EvaluateParams:
    """How the evaluate stage predicts the test split. The defaults are right: eval mode, where the
    order and the size of the batches change nothing. `eval_mode: false` reproduces the course's
    mistake (a) on purpose, where both matter (docs/results.md, "The course's three mistakes, measured")."""

    # false: no model.eval(): BatchNorm normalises with each test batch's own statistics, dropout drops
    eval_mode: bool = True
    # the test photos' order in batches: the split's | a seeded shuffle | by class (the course's loader)
    order: Literal["split", "shuffled", "sorted"] = "split"
    batch_size: int | None = None  # test photos per batch; null: train.batch_size
    # test-time augmentation: each photo's probabilities averaged with its mirror image's (twice the compute)
    tta: bool = False

    def __post_init__(self):
        if self.batch_size is not None:
            _positive("evaluate.batch_size", self.batch_size)
            _at_most("evaluate.batch_size", self.batch_size, LIMITS["batch_size"])


def load_evaluate(path: Path | str = PARAMS_FILE) -> EvaluateParams:
    """The evaluate section alone, or its defaults where there is no params file (predict and
    `Classifier` beside a model file from elsewhere): how the test photos were predicted, which
    predicting other photos repeats (`tta`)."""
    if not Path(path).is_file():
        return EvaluateParams()
    raw = schema.read(Path(path))
    return schema.build_section(EvaluateParams, raw.get("evaluate"), "evaluate")


def load_data(path: Path | str = PARAMS_FILE) -> DataParams:
    """The data section alone: the data stages need no model registry (nor a rerun when a model changes)."""
    raw = schema.read(Path(path))
    schema.no_unknown_keys("params.yaml", raw, TOP_LEVEL)
    return schema.build_section(DataParams, raw.get("data"), "data")


def _at_most(key: str, value: int, limit: tuple[int, str]) -> None:
    most, why = limit
    if value > most:
        raise ParamError(key, value, f"must be at most {most:,}: {why}")


def _seed(key: str, value: int) -> None:
    if not 0 <= value < 2**32:  # what numpy and scikit-learn take (torch takes more, the split stage does not)
        raise ParamError(key, value, "must be a whole number from 0 to 4,294,967,295")


def _positive(key: str, value: int) -> None:
    if value <= 0:
        raise ParamError(key, value, "must be a positive whole number")
