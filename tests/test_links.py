"""No model lost without a word through a shared inode (hostile input, third round, class 1): with
the real `dvc` CLI in a temporary project, each way of writing into a model file, its resume copy
or DVC's cache in place is either noticed and repaired by the next `dvc repro`, or refused, and
never reported as up to date over a damaged model."""

from __future__ import annotations

import shutil

import pytest
import torch

from pipeline.models import build, modelfile
from tests.helpers import committed_project, dvc

pytestmark = pytest.mark.slow

UP_TO_DATE = "Data and pipelines are up to date."


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    params = {
        "model": "resnet18",
        "data": {"image_size": 32, "val_fraction": 0.25, "test_fraction": 0.25},
        "train": {"epochs": 1, "batch_size": 8},
    }
    root = committed_project(tmp_path_factory, "links", params, per_class=12, size=48)
    dvc(root, "repro", "train")  # what follows train plays no part here: up to it, and statuses of it
    return root


def weights(path) -> dict:
    return modelfile.read(path)["state_dict"]


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_write_into_any_name_of_a_model_reaches_no_other_and_the_next_repro_repairs_or_refuses_it(project):
    model_file, copied = project / "models" / "resnet18.pt", project / "resume" / "resnet18.weights.pt"
    trained = weights(model_file)
    cache = {p.stat().st_ino for p in (project / ".dvc" / "cache").rglob("*") if p.is_file()}
    assert (
        model_file.stat().st_ino not in cache
        and copied.stat().st_ino not in cache
        and model_file.stat().st_ino != copied.stat().st_ino
    )
    other = project / "other.pt"  # the same architecture and meta, other weights: a valid model file, not this one
    modelfile.save(
        other,
        build("resnet18"),
        name="resnet18",
        options={"zero_init_residual": False},
        meta=modelfile.read(model_file)["meta"],
    )

    # 1. written into in place: `cp other.pt models/resnet18.pt` (cp opens the existing file), then `truncate -s 1000`
    for damage in ("cp", "truncate"):
        with open(model_file, "r+b") as f:
            f.truncate(0 if damage == "cp" else 1000)
            if damage == "cp":
                f.write(other.read_bytes())
        # noticed: the bytes no longer match dvc.lock
        assert dvc(project, "status", "train").stdout.strip() != UP_TO_DATE
        log = dvc(project, "repro", "train").stdout  # train runs again and takes the weights from its resume copy
        assert "already trained with this recipe and data" in log, log
        assert same(weights(model_file), trained)
        assert dvc(project, "status", "train").stdout.strip() == UP_TO_DATE

    # 2. `cp other.pt resume/resnet18.weights.pt`: the model file and DVC's cache keep their bytes, and
    #    the resume state refuses the copy whose digest changed: the model trains again, not from it
    shutil.copyfile(other, copied)
    assert same(weights(model_file), trained) and dvc(project, "status", "train").stdout.strip() == UP_TO_DATE
    done = dvc(project, "repro", "-f", "-s", "train")
    assert (
        "its weights (resnet18.weights.pt) are missing or changed; this model trains from the start"
        in done.stdout + done.stderr
    )
    assert not same(weights(copied), weights(other))  # the copy is the retrained model's again
    assert (
        "train:" not in dvc(project, "status", "train").stdout
    )  # train's outputs are as recorded; evaluate and export follow them
