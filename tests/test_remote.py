"""Sharing results through a DVC remote, with the real `dvc` and `git` CLIs, on data beyond cats
and dogs: `dvc repro` of a team's own 3-class folder zip and `dvc push` in one clone of the project,
`git clone` and `dvc pull` in another, where nothing needs rerunning and every metric is the same;
then the course's setting, Fashion-MNIST in grey (ten classes, from four IDX files generated here in
the official format), run as an experiment in the second clone and shared with `dvc exp push` and
`dvc exp pull` through the git remote both clones use.

One test, one story in order, so that each full run of the pipeline (the slow part) serves every
check that needs it."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.data import fashion_mnist
from pipeline.data.layout import images_file
from pipeline.models import modelfile
from tests.archives import class_folder_members, encode, fashion_mnist_files, write_zip
from tests.helpers import copy_project, dvc, run, set_params

pytestmark = pytest.mark.slow  # `pytest -m "not slow"` leaves these out of a quick loop

UP_TO_DATE = "Data and pipelines are up to date."
FLOWERS = ("daisy", "rose", "tulip")  # sorted, as the split stage orders them
FASHION = tuple(sorted(fashion_mnist.CLASSES))


def new_project(root: Path, archive: Path) -> Path:
    """The project's tracked files in a fresh git repository, set for a run of seconds: one small
    model, one epoch, a 36-photo archive."""
    copy_project(root)
    data = {"source": str(archive), "image_size": 72, "val_fraction": 0.25, "test_fraction": 0.25}
    set_params(root, {"model": "nin", "data": data, "train": {"epochs": 1, "batch_size": 4}})
    run(root, "git", "init", "-q", "-b", "main")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "project")
    return root


def metrics(repo: Path) -> dict:
    return json.loads(dvc(repo, "metrics", "show", "--json").stdout)[""]["data"]


def read(path: Path):
    return json.loads(path.read_text())


def csv_rows(text: str) -> list[dict]:
    return list(csv.DictReader(text.splitlines()))


def test_a_teams_own_classes_and_fashion_mnist_are_shared_through_a_remote(tmp_path: Path):
    # Three classes in folders, 12 photos each and a README beside them: reproduced and pushed by
    # the first clone, pulled by a fresh second one, where nothing needs rerunning.
    members = class_folder_members(list(FLOWERS), 12, root="flowers/") | {"flowers/README.txt": b"photos by us"}
    first = new_project(tmp_path / "first", write_zip(tmp_path / "flowers.zip", members))
    dvc(first, "repro")
    dvc(first, "remote", "add", "--default", "shared", str(tmp_path / "remote"))
    run(first, "git", "add", "-A")
    run(first, "git", "commit", "-qm", "baseline, and the shared remote")
    assert "pushed" in dvc(first, "push").stdout
    assert any((tmp_path / "remote").rglob("*"))  # the cache's content, now in the remote folder
    origin = tmp_path / "origin.git"
    run(tmp_path, "git", "init", "-q", "--bare", "-b", "main", str(origin))  # the team's git server
    run(first, "git", "remote", "add", "origin", str(origin))
    run(first, "git", "push", "-q", "origin", "main")

    second = tmp_path / "second"
    run(tmp_path, "git", "clone", "-q", str(origin), str(second))
    assert not (second / "models").exists()  # git carries dvc.lock and the small results, not the models
    assert metrics(second) == metrics(first)  # metrics.json is in git: no pull needed to read or diff it
    diff = dvc(second, "metrics", "diff", "HEAD")
    assert diff.stdout.strip() == "" and "failed" not in diff.stderr
    dvc(second, "pull")
    assert dvc(second, "status").stdout.strip() == UP_TO_DATE
    repro = dvc(second, "repro").stdout
    assert "Running stage" not in repro and UP_TO_DATE in repro
    assert metrics(second) == metrics(first)
    assert (second / "models" / "nin.pt").read_bytes() == (first / "models" / "nin.pt").read_bytes()
    three_classes_everywhere(first)

    # The best model, as dvc.yaml's artifacts declare it: a version registered with a git tag (GTO's
    # format), then fetched from git and the DVC remote alone.
    run(first, "git", "tag", "-a", "best-model@v1.0.0", "-m", "Registering artifact best-model version v1.0.0")
    run(first, "git", "push", "-q", "origin", "best-model@v1.0.0")
    dvc(tmp_path, "artifacts", "get", str(origin), "best-model", "-o", str(tmp_path / "fetched.pt2"))
    assert (tmp_path / "fetched.pt2").read_bytes() == (first / "exports" / "best.pt2").read_bytes()

    # The course's setting as an experiment in the second clone: `fashion-mnist:<folder>` of
    # generated IDX files, one channel. Its git refs go to `origin`, its outputs to the DVC remote;
    # the first clone lists it there, pulls both, and applies it.
    folder = tmp_path / "fashion-mnist"
    fashion_mnist_files(folder, train_per_class=6, test_per_class=2)
    changes = [f"data.source=fashion-mnist:{folder}", "data.channels=1"]
    dvc(second, "exp", "run", "--name", "fashion", *(arg for change in changes for arg in ("-S", change)))
    dvc(second, "exp", "push", "origin", "fashion")
    assert "fashion" in dvc(first, "exp", "list", "origin", "--name-only").stdout
    dvc(first, "exp", "pull", "origin", "fashion")
    dvc(first, "exp", "apply", "fashion")
    assert dvc(first, "status").stdout.strip() == UP_TO_DATE
    fashion_mnist_in_grey(first, tmp_path)


def check_every_figure(root: Path, classes: tuple[str, ...], test_images: int) -> dict:
    """The shapes of everything evaluate and report write for these classes; returns the results."""
    k = len(classes)
    tracked = read(root / "metrics.json")
    assert list(tracked) == ["acc", "auc", "log_loss", "f1", "train_s", "img_s", "best"]
    assert all(list(tracked[key]) == ["nin"] for key in ("acc", "auc", "log_loss", "f1")) and tracked["best"] == "nin"
    result = read(root / "results" / "nin.json")
    test = result["test"]
    assert result["classes"] == list(classes) and test["images"] == test_images
    assert list(test["confusion"]) == list(classes) and all(
        list(row) == list(classes) for row in test["confusion"].values()
    )
    assert sum(n for row in test["confusion"].values() for n in row.values()) == test_images
    assert all(list(test[key]) == list(classes) for key in ("precision", "recall", "f1"))
    assert set(test["macro"]) == set(test["weighted"]) == {"precision", "recall", "f1"}
    assert 0 <= test["roc_auc"] <= 1 and test["log_loss"] > 0
    assert ("top5_accuracy" in test) == (k > 5)
    assert tracked["acc"]["nin"] == round(test["accuracy"], 4) and tracked["auc"]["nin"] == round(test["roc_auc"], 4)
    with open(root / "plots" / "confusion.csv", newline="") as f:
        confusion = list(csv.DictReader(f))
    assert len(confusion) == k * k and {r["actual"] for r in confusion} == set(classes)
    roc = (root / "plots" / "roc.csv").read_text().splitlines()
    assert roc[1] == "nin,0.0,0.0" and roc[-1] == "nin,1.0,1.0"
    for picture in ("confusion", "most_wrong", "gradcam"):
        assert (root / "plots" / "images" / picture / "nin.png").read_bytes()[:4] == b"\x89PNG"
    page = (root / "reports" / "index.html").read_text()
    assert f"Classic CNNs on {k} classes ({', '.join(classes[:6])}" in page and f"of {k} classes" in page
    assert ("| top-5 |" in (root / "reports" / "leaderboard.md").read_text()) == (k > 5)
    return result


def predict(root: Path, *inputs: str) -> list[dict]:
    return csv_rows(run(root, sys.executable, "-m", "pipeline.predict", *inputs).stdout)


def exported(root: Path) -> tuple[torch.nn.Module, dict]:
    extra = {"meta.json": ""}
    program = torch.export.load(root / "exports" / "best.pt2", extra_files=extra)
    return program.module(), json.loads(extra["meta.json"])


def three_classes_everywhere(first: Path) -> None:
    """A 3-class folder zip through the whole pipeline: every stage's output names its classes."""
    summary = read(first / "data" / "split" / "summary.json")
    assert summary["classes"] == list(FLOWERS) and summary["rejects"] == {"no class in its path": 1}
    assert summary["images"]["test"] == {c: 3 for c in FLOWERS}
    check_every_figure(first, FLOWERS, test_images=9)
    _, meta = modelfile.load(first / "models" / "nin.pt")
    assert meta["classes"] == list(FLOWERS) and meta["channels"] == 3
    rows = predict(first, str(first / "data" / "raw" / "images.zip"))
    assert list(rows[0]) == ["file", "label", "p_daisy", "p_rose", "p_tulip", "error"] and len(rows) == 37
    readable = [r for r in rows if not r["error"]]
    assert len(readable) == 36 and all(r["label"] in FLOWERS for r in readable)
    assert all(abs(sum(float(r[f"p_{c}"]) for c in FLOWERS) - 1) < 1e-3 for r in readable)
    program, info = exported(first)
    assert info["output"]["probabilities"] == list(FLOWERS) and info["input"]["shape"] == ["N", 3, 72, 72]
    assert program(torch.zeros(2, 3, 72, 72, dtype=torch.uint8)).shape == (2, 3)


def fashion_mnist_in_grey(clone: Path, tmp_path: Path) -> None:
    """Ten grey classes from IDX files, the official split kept, through the whole pipeline."""
    summary = read(clone / "data" / "split" / "summary.json")
    assert summary["classes"] == list(FASHION) and summary["test"] == "the archive's own test/ folder"
    assert summary["images"]["test"] == {c: 2 for c in FASHION}  # the t10k file, whole
    # validation: a quarter of the 60 training images, stratified; the rest train
    assert sum(summary["images"]["val"].values()) == 15 and sum(summary["images"]["train"].values()) == 45
    assert np.load(images_file(clone / "data" / "processed", "train"), mmap_mode="r").shape == (45, 1, 72, 72)
    check_every_figure(clone, FASHION, test_images=20)
    model, meta = modelfile.load(clone / "models" / "nin.pt")
    assert meta["channels"] == 1 and next(model.parameters()).shape[1] == 1  # the first conv reads one channel
    photo = tmp_path / "coat.png"
    photo.write_bytes(encode(Image.new("L", (28, 28), 40), "PNG"))
    assert list(predict(clone, str(photo))[0])[2:-1] == [f"p_{c}" for c in FASHION]
    program, info = exported(clone)
    assert info["input"]["shape"] == ["N", 1, 72, 72] and info["input"]["channels"] == "grey"
    assert program(torch.zeros(3, 1, 72, 72, dtype=torch.uint8)).shape == (3, 10)
