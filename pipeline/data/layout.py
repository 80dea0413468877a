"""The files the data stages hand each other: the split stage's index files, the preprocess stage's arrays."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from pipeline.common.formats import csv_text, read_json

SPLITS = ("train", "val", "test")
EXCLUDED = -1  # a test photo's label once the verdicts exclude it (data/verdicts.py)


def index_file(folder: Path, split: str) -> Path:
    return Path(folder) / f"{split}.csv"


def images_file(folder: Path, split: str) -> Path:
    return Path(folder) / f"{split}_images.npy"  # (N, C, S, S) uint8, C = data.channels


def labels_file(folder: Path, split: str) -> Path:
    return Path(folder) / f"{split}_labels.npy"  # (N,) int64


def verdict_labels_file(folder: Path) -> Path:
    return (
        Path(folder) / "test_labels_verdicts.npy"
    )  # (N,) int64: the test labels once data.verdicts apply; EXCLUDED: out


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


def verdict_labels(split_dir: Path, members: list[str], labels: np.ndarray, classes_: tuple[str, ...]) -> np.ndarray:
    """The test split's labels once the verdicts apply (the split's summary.json records each test
    photo they change: its class after them, or null when excluded)."""
    after = read_json(Path(split_dir) / "summary.json").get("verdicts", {}).get("test_labels", {})
    index = {name: i for i, name in enumerate(classes_)}
    return np.array(
        [
            label if m not in after else EXCLUDED if after[m] is None else index[after[m]]
            for m, label in zip(members, labels)
        ],
        dtype=np.int64,
    )
