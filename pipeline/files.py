"""The files stages hand each other: split index files and preprocessed arrays (names, formats, digests)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

SPLITS = ("train", "val", "test")
# Dogs-vs-Cats' classes: label 0 is cat, 1 is dog, as in the Kaggle competition's submissions. Any
# other data brings its own classes (the split stage finds them: see `classes`), sorted by name.
DOGS_VS_CATS = ("cat", "dog")
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the zip format's earliest date: a fixed stamp, so equal content gives equal bytes


EPOCHS = "epochs"  # the train stage's table of every model's curves, a DVCLive custom plot


def epochs_file(live: Path) -> Path:
    """Where DVCLive writes the epochs table under the train stage's `live` folder: a JSON list of
    rows {model, epoch (from 1), train_loss, train_accuracy, val_loss, val_accuracy, lr}."""
    return Path(live) / "plots" / "custom" / f"{EPOCHS}.json"


def pipeline_paths(dvc_yaml: Path = Path("dvc.yaml")) -> dict[str, str]:
    """Where the stages read and write, as dvc.yaml's `vars` define them once (`models`, `metrics`,
    ...), for the tools that run beside the pipeline; {} when there is no dvc.yaml here."""
    if not dvc_yaml.is_file():
        return {}
    for block in yaml.safe_load(dvc_yaml.read_text()).get("vars", []):
        if isinstance(block, dict) and "paths" in block:
            return dict(block["paths"])
    return {}


def index_file(folder: Path, split: str) -> Path:
    return Path(folder) / f"{split}.csv"


def images_file(folder: Path, split: str) -> Path:
    return Path(folder) / f"{split}_images.npy"  # (N, C, S, S) uint8, C = data.channels


def labels_file(folder: Path, split: str) -> Path:
    return Path(folder) / f"{split}_labels.npy"  # (N,) int64


def csv_text(header: list[str], rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def index_text(members: list[tuple[str, int]], classes: tuple[str, ...]) -> str:
    """One split's index: `member,label` rows, the label as a class name so the file reads itself."""
    return csv_text(["member", "label"], [(name, classes[label]) for name, label in members])


def read_index(path: Path, classes: tuple[str, ...]) -> tuple[list[str], np.ndarray]:
    """Member names and (N,) int64 labels (indices into `classes`) of one split's index file."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    index = {name: i for i, name in enumerate(classes)}
    return [r["member"] for r in rows], np.array([index[r["label"]] for r in rows], dtype=np.int64)


def classes(split_dir: Path) -> tuple[str, ...]:
    """The classes the split stage found, in label order, from its summary.json (a split made before
    there were other classes than Dogs-vs-Cats' records none: those two)."""
    return tuple(read_json(Path(split_dir) / "summary.json").get("classes", DOGS_VS_CATS))


def read_json(path: Path | str) -> Any:
    return json.loads(Path(path).read_text())


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def zip_entry(name: str) -> zipfile.ZipInfo:
    """A stored (uncompressed) zip member with fixed metadata: JPEGs do not compress, and bytes stay reproducible."""
    info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
    info.compress_type = zipfile.ZIP_STORED
    info.create_system = 3  # Unix, whatever the platform that writes it
    info.external_attr = 0o644 << 16  # rw-r--r--
    return info
