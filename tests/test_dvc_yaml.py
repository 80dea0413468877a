"""dvc.yaml is a contract: every stage lists each project module it runs (its own, and every one it
imports), so that DVC reruns exactly the stages a code change can affect."""

import ast
import re
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO
from tests.importgraph import graph, loaded

DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())
PATHS = DVC["vars"][0]["paths"]


def expand(text: str) -> str:
    return re.sub(r"\$\{paths\.(\w+)\}", lambda m: PATHS[m.group(1)], text)


def module_file(name: str) -> Path:
    path = REPO / Path(*name.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(REPO).as_posix()
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


STAGES = {name: stage for name, stage in DVC["stages"].items()}
# the packages whose __init__ is a docstring: every package but the model zoo, whose __init__ registers the
# architectures, and the top one, whose __init__ tunes the allocator of a command (common.allocator)
DOCSTRING_ONLY = (
    "pipeline.common",
    "pipeline.data",
    "pipeline.params",
    "pipeline.runtime",
    "pipeline.training",
    "pipeline.evaluation",
)


@pytest.mark.parametrize("name", list(STAGES))
def test_every_module_a_stage_runs_is_a_dependency(name):
    stage = STAGES[name]
    module = re.search(r"-m (pipeline\.\w+)", stage["cmd"]).group(1)
    assert module == f"pipeline.{name}"  # a stage, its module and its name are one word
    deps = [expand(d) for d in stage["deps"]]
    needed = {
        m for m in loaded(module, graph()) if m not in DOCSTRING_ONLY
    }  # package inits that run no code (checked below)
    missing = sorted(m for m in needed if not covered(module_file(m), deps))
    assert not missing, f"{name} imports {missing} but dvc.yaml does not list them"


def test_the_data_stages_do_not_depend_on_the_models():
    # editing an architecture must not rerun the download, the split or the preprocessing
    for name in ("download", "split", "preprocess"):
        assert not any("pipeline/models" in d for d in STAGES[name]["deps"])
        assert "params.load()" not in module_file(f"pipeline.{name}").read_text()


def test_stage_params_are_the_keys_each_stage_reads():
    assert STAGES["download"]["params"] == ["data.source"]
    assert set(STAGES["split"]["params"]) == {
        "data.max_per_class",
        "data.val_fraction",
        "data.test_fraction",
        "data.seed",
        "data.train_photos",
        "data.verdicts",
    }
    assert set(STAGES["preprocess"]["params"]) == {"data.image_size", "data.resize", "data.channels"}
    assert set(STAGES["train"]["params"]) == {
        "model",
        "train",
        "runtime",
        "models",
    }  # the data's facts come from meta.json


def test_the_package_inits_that_no_stage_lists_run_no_code():
    # every stage imports them, and none lists them: that is only sound while they hold nothing but a
    # docstring, and at most a lazy __getattr__ (`from pipeline import Classifier`), which runs only
    # when its attribute is asked for, which no stage does
    for name in DOCSTRING_ONLY:
        body = [
            n
            for n in ast.parse(module_file(name).read_text()).body
            if not (isinstance(n, ast.FunctionDef) and n.name == "__getattr__")
        ]
        assert len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant), name
