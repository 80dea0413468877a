"""Helpers shared by the test modules (no test module imports another): the repository, a copy of
the project driven by the real git and dvc CLIs, a toy training task, a fake finished run, hostile
inputs, grid cells, and a real headless browser."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import torch
import yaml

from pipeline.common import atomic, schema
from pipeline.common.formats import csv_text
from pipeline.data.images import DOGS_VS_CATS
from pipeline.data.layout import images_file, labels_file
from pipeline.evaluate import write_gradcam, write_images
from pipeline.evaluation.metrics import roc_rows
from pipeline.runtime.device import auto_precision, cpu_features
from pipeline.runtime.tensors import Split
from pipeline.training.curves import CURVES, epochs_file
from tests import archives
from tests.paths import REPO

# The user's documentation: the front page and the pages under docs/, checked by the tests as one text.
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def documentation() -> str:
    return "\n\n".join(path.read_text() for path in DOCS)


PROJECT_FILES = [
    "dvc.yaml",
    "params.yaml",
    ".gitignore",
    "data/.gitignore",
    ".dvc/config",
    ".dvc/.gitignore",
    ".dvc/plots",
    ".dvc/plots.html",
    "pipeline",
    "verdicts",
]


# ---------------------------------------------------------------- a project copy, driven by git and dvc


def run(repo: Path, *args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        # the venv's python and dvc first: stage commands say `python -m pipeline.<stage>`
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
        **(env or {}),
    }
    result = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def dvc(repo: Path, *args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return run(repo, str(Path(sys.executable).parent / "dvc"), *args, check=check, env=env)


def vega_plots(repo: Path, *args: str) -> tuple[dict, list]:
    """{plot id: Vega-Lite spec} of every data chart `dvc plots show|diff --json` renders, and its errors."""
    shown = json.loads(dvc(repo, "plots", *args, "--json").stdout)
    specs = {pid: items[0]["content"] for pid, items in shown["data"].items() if items[0]["type"] == "vega"}
    return specs, shown.get("errors") or []


def set_params(repo: Path, overrides: dict) -> None:
    path = repo / "params.yaml"
    path.write_text(yaml.safe_dump(schema.merge(yaml.safe_load(path.read_text()), overrides), sort_keys=False))


def copy_project(root: Path) -> Path:
    """The project's tracked files (code, dvc.yaml, params.yaml, DVC and git config) under `root`."""
    for name in PROJECT_FILES:
        src, dst = REPO / name, root / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dst)
    return root


def committed_project(
    tmp_path_factory, name: str, params: dict, *, per_class: int, size: int, files: dict[str, str] | None = None
) -> Path:
    """A fresh clone-alike for the real `dvc` CLI: the project's tracked files, `params` set over
    params.yaml with data.source a synthetic archive of `per_class` photos a class at `size` px,
    `files` (relative path → text) added, all committed on main; nothing reproduced."""
    from pipeline.data import synthetic

    root = copy_project(tmp_path_factory.mktemp(name))
    archive = tmp_path_factory.mktemp("downloads") / "train.zip"
    synthetic.make_archive(archive, per_class=per_class, size=size)
    set_params(root, schema.merge(params, {"data": {"source": str(archive)}}))
    for relative, text in (files or {}).items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    run(root, "git", "init", "-q", "-b", "main")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "project")
    return root


# ---------------------------------------------------------------- training

# The precision `runtime.precision: auto` trains in on this CPU: bf16 where it has AMX or AVX-512 BF16,
# else fp32. The compiled tests use it: compiling bf16 that an AVX2-only CPU emulates took longest there.
AUTO_PRECISION = auto_precision(torch.device("cpu"), cpu_features())[0]


def skeleton(name: str, **options) -> torch.nn.Module:
    """`name`'s architecture in uninitialised CPU memory, for a test of shapes and counts, not of values:
    built on the meta device, where no weight is drawn (VGG-11's 133 M weights take a second to draw).
    An architecture with pretrained weights is built as usual: its weights are loaded, not drawn."""
    from pipeline import models

    if "pretrained" in models.option_types(name):
        return models.build(name, **options)
    with torch.device("meta"):
        model = models.build(name, **options)
    return model.to_empty(device="cpu")


def toy_split(n, size=32, seed=0):
    """A two-class task a small net must learn: a bright band at the top (cat) or the bottom (dog).
    Up/down, so horizontal flips keep the label's evidence."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = torch.randint(0, 100, (n, 3, size, size), generator=g, dtype=torch.uint8)
    for i, label in enumerate(labels):
        rows = slice(0, size // 3) if label == 0 else slice(size - size // 3, size)
        images[i, :, rows] += 120
    return Split(images=images, labels=labels, device=torch.device("cpu"))


def write_processed(
    folder: Path, splits: dict[str, Split], *, image_size: int | None = None, classes=DOGS_VS_CATS, digest: str = "toy"
) -> Path:
    """Preprocessed uint8 arrays as the preprocess stage names them, and the meta.json the later
    stages read (the image size defaults to the arrays' own)."""
    folder.mkdir(parents=True)
    for name, split in splits.items():
        np.save(images_file(folder, name), split.images.numpy())
        np.save(labels_file(folder, name), split.labels.numpy())
    first = next(iter(splits.values())).images
    meta = {
        "image_size": image_size or first.shape[-1],
        "resize": "crop",
        "channels": first.shape[1],
        "classes": list(classes),
        "digest": digest,
    }
    atomic.write_json(folder / "meta.json", meta)
    return folder


# ---------------------------------------------------------------- what train and evaluate leave for the report


def result(model, accuracy, log_loss, ci=(0.0, 1.0), seconds=90.0):
    """A model's results/<name>.json on 100 test photos: the first round(100 × accuracy) right, the
    rest wrong (so a more accurate model is right wherever a less accurate one is)."""
    labels = [0, 1] * 50
    right = round(100 * accuracy)
    return {
        "model": model,
        "test": {
            "images": 100,
            "accuracy": accuracy,
            "accuracy_ci95": list(ci),
            "balanced_accuracy": accuracy,
            "precision": {"cat": 0.8, "dog": 0.7},
            "recall": {"cat": 0.75, "dog": 0.72},
            "f1": {"cat": 0.77, "dog": 0.71},
            "f1_macro": accuracy,
            "roc_auc": 0.9,
            "log_loss": log_loss,
        },
        "val": {"loss": 0.5, "accuracy": 0.8},
        "train": {"seconds": seconds, "images_per_second": 123.4, "epochs": 2, "kept_epoch": 2},
        "inference_images_per_second": 999.0,
        "parameters": 11_177_538,
        "trainable_parameters": 11_177_538,
        "image_size": 96,
        "channels": 3,
        "classes": ["cat", "dog"],
        "device": "cpu (2 threads)",
        "labels": labels,
        "predicted": [y if i < right else 1 - y for i, y in enumerate(labels)],
    }


def fake_run(root: Path, names: list[str], epochs: int = 3) -> tuple[Path, Path]:
    """What train and evaluate leave for the report: the epochs table (epoch e's value of the k-th
    column of CURVES is k + e / 10, e counted from 1), the ROC table, and each model's pictures.
    Returns (live, plots)."""
    live, plots = root / "dvclive", root / "plots"
    rng = np.random.default_rng(0)
    labels = np.array([0, 0, 1, 1])
    proba = np.stack([1 - (p_dog := np.array([0.2, 0.9, 0.6, 0.3])), p_dog], axis=1)
    rows = [
        {"model": name, "epoch": e, **{c: k + e / 10 for k, c in enumerate(CURVES)}}
        for name in names
        for e in range(1, epochs + 1)
    ]
    atomic.write_json(epochs_file(live), rows)
    roc = [row for name in names for row in roc_rows(name, labels, proba)]
    atomic.write_text(plots / "roc.csv", csv_text(["model", "fpr", "tpr"], roc))
    tiny = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 2),
    )
    for name in names:
        pictures = rng.integers(0, 256, (4, 3, 16, 16), dtype=np.uint8)
        write_images(plots / "images", name, pictures, labels, proba, DOGS_VS_CATS)
        write_gradcam(plots / "images", name, tiny, pictures, labels, proba, DOGS_VS_CATS)
    return live, plots


# ---------------------------------------------------------------- hostile inputs


def jpeg(size=(40, 30), colour=(200, 120, 40)) -> bytes:
    """The hostile-input tests' ordinary photo: a small JPEG of one colour, at Pillow's default quality."""
    return archives.jpeg(colour, size, quality=75)


def tampered(source: Path, target: Path, change) -> Path:
    """A copy of the model file `source` at `target`, its loaded content changed by `change(content)`."""
    content = torch.load(source, weights_only=True)
    change(content)
    torch.save(content, target)
    return target


# ---------------------------------------------------------------- grid cells


def results_of(right: list[bool], accuracy_ci=(0.0, 1.0), seconds=10.0) -> dict:
    """A grid cell's results/<model>.json, in the fields the grid's summary reads: right on the photos
    `right` marks, the labels alternating cat, dog."""
    labels = [i % 2 for i in range(len(right))]
    predicted = [y if ok else 1 - y for y, ok in zip(labels, right)]
    return {
        "labels": labels,
        "predicted": predicted,
        "test": {"accuracy": sum(right) / len(right), "accuracy_ci95": list(accuracy_ci)},
        "train": {"seconds": seconds},
    }


# ---------------------------------------------------------------- a real browser

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


def chromium_dom(page: Path, profile: Path) -> tuple[str, str]:
    """(the DOM after loading `page`, Chromium's log). The background-networking flags matter: without
    them a machine with no network waits on Google's services."""
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=3000",
    ]
    done = subprocess.run([CHROMIUM, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


def console_errors(log: str) -> list[str]:
    """Lines where the page itself complained: console messages and uncaught script errors (the
    rest of Chromium's log is its own noise, D-Bus and GPU probing, on a headless machine)."""
    return [line for line in log.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


class Dom(HTMLParser):
    """Every start tag with its attributes, and the text of the page."""

    def __init__(self, markup: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(markup)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def all(self, tag: str) -> list[dict]:
        return [attrs for t, attrs in self.tags if t == tag]
