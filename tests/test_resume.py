"""Resume state: a key that changes with what the model is a function of and nothing else, and an
unreadable file set aside rather than trusted."""

import pytest
import torch

from pipeline.params import recipes
from pipeline.training.fit import fit
from pipeline.training.resume import FORMAT, ResumeFile, epochs_done, file_for, key, load
from tests.helpers import REPO, toy_split


def spec(name="resnet18", runtime=None, **overrides):
    train_keys = {"epochs": 3, "batch_size": 16, **overrides}
    return recipes.load(overrides={"model": name, "train": train_keys, "runtime": runtime or {}}).models[0]


def test_the_key_changes_with_the_recipe_the_data_and_the_processes_but_not_the_runtime():
    base = key(spec(), "data-a", 1)
    assert key(spec(lr=0.01), "data-a", 1) != base
    assert key(spec(), "data-b", 1) != base
    assert key(spec(runtime={"device": "cpu", "compile": True, "resume": False}), "data-a", 1) == base
    two = recipes.load(REPO / "params.yaml", {"model": "resnet18", "train": {"epochs": 3, "batch_size": 16}, "runtime": {"processes": 2}}).models[0]
    assert key(two, "data-a", 1) == base  # the param alone changes nothing: the processes launched count
    assert key(spec(), "data-a", 2) != base != key(spec(), "data-a", 4)


def test_a_model_name_with_a_colon_is_a_plain_file_name(tmp_path):
    assert file_for(tmp_path, "torchvision:resnet34") == tmp_path / "torchvision-resnet34.pt"


def test_a_truncated_resume_file_is_set_aside_and_its_model_trains_from_the_start(tmp_path, capsys):
    one = spec(epochs=1)
    data = toy_split(32), toy_split(16, seed=1)
    first, _ = fit(one, *data, classes=2, resume=ResumeFile(tmp_path / "m.pt", "k"))
    assert epochs_done(tmp_path / "m.pt", "k") == 1 and epochs_done(tmp_path / "m.pt", "other") == 0
    with open(tmp_path / "m.pt", "r+b") as f:
        f.truncate(5000)
    assert epochs_done(tmp_path / "m.pt", "k") == 0
    again, _ = fit(one, *data, classes=2, resume=ResumeFile(tmp_path / "m.pt", "k"))
    err = capsys.readouterr().err
    assert f"{tmp_path / 'm.pt'}: unreadable (" in err and "moved to m.pt.corrupt, this model trains from the start" in err
    assert (tmp_path / "m.pt.corrupt").stat().st_size == 5000
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))  # the same run again


@pytest.mark.parametrize("saved_format", [None, FORMAT + 1])
def test_a_resume_file_of_another_format_is_not_resumed_from(tmp_path, saved_format):
    data = toy_split(32), toy_split(16, seed=1)
    fit(spec(epochs=1), *data, classes=2, resume=ResumeFile(tmp_path / "m.pt", "k"))
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    assert load(tmp_path / "m.pt", "k") is not None
    state["format"] = saved_format
    torch.save(state, tmp_path / "m.pt")
    assert load(tmp_path / "m.pt", "k") is None
    assert epochs_done(tmp_path / "m.pt", "k") == 0
