"""Presets: every shipped one is valid against params.yaml, becomes exactly its `-S` flags, and runs
as a real `dvc exp run` whose experiment records the preset's values."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.common.errors import ParamError
from pipeline.params import presets as preset
from pipeline.params import recipes
from tests.helpers import REPO

SHIPPED = sorted((REPO / "presets").glob("*.yaml"))


def test_there_are_presets_for_the_recipe_yardstick_and_the_cpu_zoo():
    assert {p.stem for p in SHIPPED} >= {"cpu-64", "cpu-zoo"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_preset_is_valid_and_becomes_its_own_flags(path):
    raw = preset.read(path)
    cmd = preset.command(raw, [], base=REPO / "params.yaml")
    assert cmd[:3] == ["dvc", "exp", "run"]
    flags = dict(arg.split("=", 1) for arg in cmd[4::2])
    assert cmd[3::2] == ["-S"] * len(flags)
    # what DVC reads back from each flag (YAML) is the preset's value, key by key
    assert preset.nest({key: yaml.safe_load(text) for key, text in flags.items()}) == raw
    p = recipes.load(REPO / "params.yaml", raw)
    assert p.data.image_size == raw["data"]["image_size"]


def test_a_users_flag_wins_over_the_presets_and_is_checked_with_it():
    raw = {"data": {"image_size": 72}, "train": {"epochs": 8}}
    cmd = preset.command(raw, ["-S", "train.epochs=2", "-n", "mine"], base=REPO / "params.yaml")
    assert cmd == ["dvc", "exp", "run", "-S", "data.image_size=72", "-S", "train.epochs=2", "-n", "mine"]
    with pytest.raises(ParamError) as e:
        preset.command(raw, ["-S", "train.epochs=0"], base=REPO / "params.yaml")
    assert e.value.key == "train.epochs"


def test_a_stale_preset_fails_naming_the_key_before_dvc_runs():
    with pytest.raises(ParamError) as e:
        preset.command({"train": {"epoch": 3}}, [], base=REPO / "params.yaml")
    assert e.value.key == "train.epoch"
    with pytest.raises(ParamError) as e:
        preset.command({"data": {"source": "my photos.zip"}}, [], base=REPO / "params.yaml")
    assert e.value.key == "data.source"  # a value the printed command could not carry as one word


def test_values_are_written_as_yaml_dvc_reads_back():
    cases = {"a": None, "b": True, "c": [0.35, 1.0], "d": 0.001, "e": "resnet18", "f": ["nin", "resnet18"]}
    for key, value in cases.items():
        assert yaml.safe_load(preset.flag_value(key, value)) == value


@pytest.mark.slow
def test_a_preset_runs_as_a_real_dvc_experiment(tmp_path):
    """`python -m pipeline.preset` in a git + DVC repository: the experiment's params are the preset's."""
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "tiny.yaml").write_text("model: nin\ndata:\n  image_size: 72\ntrain:\n  epochs: 2\n")
    write = "python -c \"print('stage ran'); open('out.txt', 'w').write('x')\""
    stage = {"stages": {"echo": {"cmd": write, "params": ["model", "data", "train"], "outs": ["out.txt"]}}}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(stage))
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }

    def run(*args, cwd=tmp_path, both=False):
        result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
        assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
        return (result.stdout, result.stderr) if both else result.stdout

    run("git", "init", "-q", "-b", "main")
    run(sys.executable, "-m", "dvc", "init", "-q")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "project")
    control = tmp_path.parent / "control"
    shutil.copytree(tmp_path, control)  # a fresh clone's first run, in plain DVC: a warning per output
    assert (
        "control/out.txt'. It won't be created"
        in run(sys.executable, "-m", "dvc", "exp", "run", cwd=control, both=True)[1]
    )
    out, err = run(
        sys.executable, "-m", "pipeline.preset", "tiny", "-S", "data.source=synthetic", "-n", "tiny-run", both=True
    )
    assert "No file hash info found for" not in err
    assert out.splitlines()[0] == (
        "dvc exp run -S model=nin -S data.image_size=72 -S train.epochs=2 -S data.source=synthetic -n tiny-run"
    )
    assert "stage ran" in out
    rows = json.loads(run(sys.executable, "-m", "dvc", "exp", "show", "--json"))
    experiment = next(x["revs"][0] for row in rows for x in row.get("experiments") or [])
    assert experiment["name"] == "tiny-run"
    recorded = experiment["data"]["params"]["params.yaml"]["data"]
    assert recorded["model"] == "nin" and recorded["train"]["epochs"] == 2
    assert recorded["data"]["image_size"] == 72 and recorded["data"]["source"] == "synthetic"


def test_values_an_earlier_experiment_left_in_params_yaml_are_named_before_the_next_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    shutil.copy(REPO / "params.yaml", "params.yaml")
    subprocess.run([*git, "add", "params.yaml"], check=True)
    subprocess.run([*git, "commit", "-qm", "params"], check=True)
    assert preset.carried_over(set()) == []
    # what `dvc exp run -S evaluate.eval_mode=false -S train.seed=2` leaves behind in the workspace
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["evaluate"]["eval_mode"], params["train"]["seed"] = False, 2
    Path("params.yaml").write_text(yaml.safe_dump(params))
    assert preset.carried_over(set()) == ["evaluate.eval_mode: True → False", "train.seed: 0 → 2"]
    assert preset.carried_over({"train.seed"}) == [
        "evaluate.eval_mode: True → False"
    ]  # the next experiment sets the seed itself
    monkeypatch.chdir(tmp_path.parent)
    assert (
        preset.carried_over(set(), tmp_path / "params.yaml") == []
    )  # not in a git repository here: nothing to compare
