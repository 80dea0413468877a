"""dvc.yaml is a contract: every stage lists each project module it runs (its own, and every one it
imports) and no other, so that DVC reruns exactly the stages a code change can affect. The code
lines are derived from the import graph by `python -m pipeline.deps`; these tests hold dvc.yaml to
it, and the derivation to the imports."""

import difflib
from pathlib import Path

import pytest
import yaml

from pipeline import deps
from tests.helpers import REPO

TEXT = (REPO / "dvc.yaml").read_text()
STAGES = yaml.safe_load(TEXT)["stages"]


def test_dvc_yaml_lists_exactly_the_files_each_stage_imports():
    derived = deps.render(TEXT)
    diff = "".join(difflib.unified_diff(TEXT.splitlines(True), derived.splitlines(True), "dvc.yaml", "derived"))
    assert derived == TEXT, f"dvc.yaml's code deps differ from the imports: run python -m pipeline.deps\n{diff}"


@pytest.mark.parametrize("name", list(STAGES))
def test_a_stage_its_module_and_its_name_are_one_word(name):
    assert f"python -m pipeline.{name} " in STAGES[name]["cmd"] + " "
    assert STAGES[name]["deps"].count(f"pipeline/{name}.py") == 1


def copy_tree(tmp_path: Path) -> Path:
    import shutil

    shutil.copytree(REPO / "pipeline", tmp_path / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "dvc.yaml").write_text(TEXT)
    return tmp_path


def test_a_new_import_in_a_stage_is_added_to_its_deps_and_to_no_other_stage(tmp_path, capsys):
    root = copy_tree(tmp_path)
    split = root / "pipeline" / "split.py"
    split.write_text(split.read_text() + "\n\ndef later():\n    from pipeline.evaluation import page\n")
    file = ["--file", str(root / "dvc.yaml")]
    assert deps.main([*file, "--check"]) == 1
    stale = capsys.readouterr().err
    assert "+      - pipeline/evaluation/page.py" in stale and "run python -m pipeline.deps" in stale
    assert (root / "dvc.yaml").read_text() == TEXT  # --check writes nothing
    assert deps.main(file) == 0
    after = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    # page.py imports nothing the split did not already load (pipeline/evaluation/__init__.py is a docstring)
    assert set(after["split"]["deps"]) - set(STAGES["split"]["deps"]) == {"pipeline/evaluation/page.py"}
    assert {name: stage for name, stage in after.items() if name != "split"} == {
        name: stage for name, stage in STAGES.items() if name != "split"
    }
    assert deps.main([*file, "--check"]) == 0


def test_a_package_init_is_a_dependency_only_when_it_runs_code(tmp_path):
    root = copy_tree(tmp_path)
    assert "pipeline/evaluation/__init__.py" not in deps.stage_files("report", root)  # a docstring
    assert "pipeline/models/__init__.py" in deps.stage_files("evaluate", root)  # it registers the zoo
    init = root / "pipeline" / "evaluation" / "__init__.py"
    init.write_text(init.read_text() + "\nTHRESHOLD = 0.5\n")
    assert "pipeline/evaluation/__init__.py" in deps.stage_files("report", root)
    assert "pipeline/evaluation/__init__.py" not in deps.stage_files("split", root)  # nothing of it imported there


def test_the_data_stages_and_the_report_do_not_depend_on_the_models():
    # editing an architecture must not rerun the download, the split or the preprocessing; nor the
    # report, which reads the results evaluate wrote and never imports torch (2 s a run)
    for name in ("download", "split", "preprocess", "report"):
        assert not any(d.startswith("pipeline/models") for d in STAGES[name]["deps"]), name
        assert "params.load()" not in (REPO / "pipeline" / f"{name}.py").read_text()


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
