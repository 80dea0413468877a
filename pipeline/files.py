"""The files stages hand each other: split index files and preprocessed arrays (names and formats)."""

from __future__ import annotations

import csv
import io as _io
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")
CLASSES = ("cat", "dog")  # label 0 is cat, 1 is dog, as in the Kaggle competition's submissions


def index_file(folder: Path, split: str) -> Path:
    return Path(folder) / f"{split}.csv"


def images_file(folder: Path, split: str) -> Path:
    return Path(folder) / f"{split}_images.npy"  # (N, 3, S, S) uint8


def labels_file(folder: Path, split: str) -> Path:
    return Path(folder) / f"{split}_labels.npy"  # (N,) int64


def csv_text(header: list[str], rows) -> str:
    buffer = _io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def index_text(members: list[tuple[str, int]]) -> str:
    """One split's index: `member,label` rows, the label as a class name so the file reads itself."""
    return csv_text(["member", "label"], [(name, CLASSES[label]) for name, label in members])


def read_index(path: Path) -> tuple[list[str], np.ndarray]:
    """Member names and (N,) int64 labels of one split's index file."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["member"] for r in rows], np.array([CLASSES.index(r["label"]) for r in rows], dtype=np.int64)
