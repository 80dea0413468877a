"""The files the data stages hand each other: the split stage's index files, the preprocess stage's arrays."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from pipeline.common.formats import csv_text, read_json

SPLITS = ("train", "val", "test")
MAX_CLASSES = 1000  # ImageNet's count; every class needs photos in three splits and a column in every table
MAX_CLASS_NAME = 100  # characters: a class name is a folder name, printed in every table and figure


def classes_problem(classes: list | tuple) -> str | None:
    """Why these classes cannot go through every later stage (tables, CSVs, figures, the HTML
    report, a model file), or None: 2 to MAX_CLASSES distinct names, each printable text of 1 to
    MAX_CLASS_NAME characters."""
    if not isinstance(classes, (list, tuple)) or not 2 <= len(classes) <= MAX_CLASSES:
        count = len(classes) if isinstance(classes, (list, tuple)) else type(classes).__name__
        return f"{count} classes: a classifier needs 2 to {MAX_CLASSES:,}"
    for name in classes:
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_CLASS_NAME or not name.isprintable():
            return f"the class name {name!r:.120} is not printable text of 1 to {MAX_CLASS_NAME} characters"
    if len(set(classes)) != len(classes):
        return "a class name is given twice"
    return None


def index_file(folder: Path, split: str) -> Path:
    return Path(folder) / f"{split}.csv"


def images_file(folder: Path, split: str) -> Path:
    return Path(folder) / f"{split}_images.npy"  # (N, C, S, S) uint8, C = data.channels


def labels_file(folder: Path, split: str) -> Path:
    return Path(folder) / f"{split}_labels.npy"  # (N,) int64


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
    """The classes the split stage found, in label order, from its summary.json."""
    return tuple(read_json(Path(split_dir) / "summary.json")["classes"])
