"""Sharing results through a DVC remote, with the real `dvc` and `git` CLIs: `dvc repro` and
`dvc push` in one clone of the project, `git clone` and `dvc pull` in another, where nothing needs
rerunning and every metric is the same; then an experiment shared with `dvc exp push` and
`dvc exp pull` through the git remote both clones use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import synthetic
from tests.helpers import copy_project, dvc, run, set_params

pytestmark = pytest.mark.slow  # `pytest -m 'not slow'` leaves these out of a quick loop

UP_TO_DATE = "Data and pipelines are up to date."


def new_project(root: Path, archive: Path) -> Path:
    """The project's tracked files in a fresh git repository, set for a run of seconds: one small
    model, one epoch, a 24-image archive."""
    copy_project(root)
    data = {"source": str(archive), "image_size": 72, "val_fraction": 0.25, "test_fraction": 0.25}
    set_params(root, {"model": "nin", "data": data, "train": {"epochs": 1, "batch_size": 4}})
    run(root, "git", "init", "-q", "-b", "main")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "project")
    return root


def metrics(repo: Path) -> dict:
    return json.loads(dvc(repo, "metrics", "show", "--json").stdout)[""]["data"]


def test_a_pushed_project_pulls_into_a_fresh_clone_with_nothing_to_rerun(tmp_path: Path):
    archive = tmp_path / "train.zip"
    synthetic.make_archive(archive, per_class=12, size=80)
    first = new_project(tmp_path / "first", archive)
    dvc(first, "repro")
    dvc(first, "remote", "add", "--default", "shared", str(tmp_path / "remote"))
    run(first, "git", "add", "-A")
    run(first, "git", "commit", "-qm", "baseline, and the shared remote")
    assert "pushed" in dvc(first, "push").stdout
    assert any((tmp_path / "remote").rglob("*"))  # the cache's content, now in the remote folder
    run(tmp_path, "git", "init", "-q", "--bare", "-b", "main", "origin.git")  # the team's git server
    run(first, "git", "remote", "add", "origin", str(tmp_path / "origin.git"))
    run(first, "git", "push", "-q", "origin", "main")

    second = tmp_path / "second"
    run(tmp_path, "git", "clone", "-q", str(tmp_path / "origin.git"), str(second))
    assert not (second / "models").exists()  # git carries dvc.lock and the small results, not the models
    assert metrics(second) == metrics(first)  # metrics.json is in git: no pull needed to read or diff it
    diff = dvc(second, "metrics", "diff", "HEAD")
    assert diff.stdout.strip() == "" and "failed" not in diff.stderr
    dvc(second, "pull")
    assert dvc(second, "status").stdout.strip() == UP_TO_DATE
    repro = dvc(second, "repro").stdout
    assert "Running stage" not in repro and UP_TO_DATE in repro
    assert metrics(second) == metrics(first)
    assert list(metrics(second)["metrics.json"]["data"]["acc"]) == ["nin"]
    assert json.loads((second / "results" / "nin.json").read_text())["test"]["images"] == 6
    assert (second / "models" / "nin.pt").read_bytes() == (first / "models" / "nin.pt").read_bytes()

    # The best model, as dvc.yaml's artifacts declare it: a version registered with a git tag (GTO's
    # format), then fetched from git and the DVC remote alone.
    run(first, "git", "tag", "-a", "best-model@v1.0.0", "-m", "Registering artifact best-model version v1.0.0")
    run(first, "git", "push", "-q", "origin", "best-model@v1.0.0")
    dvc(tmp_path, "artifacts", "get", str(tmp_path / "origin.git"), "best-model", "-o", str(tmp_path / "fetched.pt2"))
    assert (tmp_path / "fetched.pt2").read_bytes() == (first / "exports" / "best.pt2").read_bytes()

    # An experiment in the second clone, shared: its git refs go to `origin`, its outputs to the
    # DVC remote; the first clone lists it there, pulls both, and applies it.
    dvc(second, "exp", "run", "--name", "two-epochs", "-S", "train.epochs=2")
    dvc(second, "exp", "push", "origin", "two-epochs")
    assert "two-epochs" in dvc(first, "exp", "list", "origin", "--name-only").stdout
    dvc(first, "exp", "pull", "origin", "two-epochs")
    dvc(first, "exp", "apply", "two-epochs")
    assert json.loads((first / "results" / "nin.json").read_text())["train"]["epochs"] == 2
    assert dvc(first, "status").stdout.strip() == UP_TO_DATE
