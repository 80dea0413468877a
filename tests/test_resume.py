"""Resume state: a key that changes with what the model is a function of and nothing else, an
unreadable file set aside rather than trusted, and a finished model's weights shared with its model
file (one copy on disk), trusted only while they are the same bytes."""

import pytest
import torch

from pipeline.models import modelfile
from pipeline.params import recipes
from pipeline.training.fit import fit
from pipeline.training.resume import FORMAT, ResumeFile, epochs_done, file_for, keep_model_file, key, load, weights_file
from tests.helpers import REPO, toy_split


def spec(name="resnet18", runtime=None, **overrides):
    train_keys = {"epochs": 3, "batch_size": 16, **overrides}
    return recipes.load(overrides={"model": name, "train": train_keys, "runtime": runtime or {}}).models[0]


def test_the_key_changes_with_the_recipe_the_data_and_the_processes_but_not_the_runtime():
    base = key(spec(), "data-a", 1)
    assert key(spec(lr=0.01), "data-a", 1) != base
    assert key(spec(), "data-b", 1) != base
    assert key(spec(runtime={"device": "cpu", "compile": True, "resume": False}), "data-a", 1) == base
    two = recipes.load(
        REPO / "params.yaml",
        {"model": "resnet18", "train": {"epochs": 3, "batch_size": 16}, "runtime": {"processes": 2}},
    ).models[0]
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
    assert (
        f"{tmp_path / 'm.pt'}: unreadable (" in err and "moved to m.pt.corrupt, this model trains from the start" in err
    )
    assert (tmp_path / "m.pt.corrupt").stat().st_size == 5000
    assert all(
        torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values())
    )  # the same run again


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


def finished(tmp_path, epochs=2, keep="best"):
    """A model trained to the end with its resume state, then saved as the train stage does (the
    model file, then its weights copied for the resume state)."""
    one = spec(epochs=epochs, keep=keep)
    data = toy_split(32), toy_split(16, seed=1)
    (tmp_path / "resume").mkdir(exist_ok=True)
    (tmp_path / "models").mkdir(exist_ok=True)
    state = ResumeFile(file_for(tmp_path / "resume", "resnet18"), "k")
    model, _ = fit(one, *data, classes=2, resume=state)
    whole = state.path.stat().st_size
    model_file = tmp_path / "models" / "resnet18.pt"
    meta = {"image_size": 32, "resize": "crop", "channels": 3, "classes": ["cat", "dog"]}
    modelfile.save(model_file, model, name="resnet18", options=one.options, meta=meta)
    assert keep_model_file(state.path, model_file)
    return one, data, state, model, model_file, whole


def test_a_finished_models_resume_state_keeps_one_copy_of_its_weights_sharing_nothing_with_the_model_file(
    tmp_path, capsys
):
    one, data, state, model, model_file, whole = finished(tmp_path)
    copied = weights_file(state.path)
    assert copied.read_bytes() == model_file.read_bytes() and copied.stat().st_ino != model_file.stat().st_ino
    with open(model_file, "r+b") as f:  # a write into the model file, in place, does not reach the copy
        f.truncate(100)
    assert load(state.path, "k") is not None
    assert state.path.stat().st_size < whole / 20  # the state itself: curves, schedule, random streams
    model_file.unlink()  # what DVC does to a stage's outputs before it reruns the stage
    capsys.readouterr()
    again, _ = fit(one, *data, classes=2, resume=state)  # from the shared weights: not trained again
    assert "already trained with this recipe and data" in capsys.readouterr().out
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_shared_weights_that_are_gone_or_changed_train_the_model_again(tmp_path, capsys):
    one, data, state, model, model_file, _ = finished(tmp_path, epochs=1, keep="last")
    linked = weights_file(state.path)
    assert epochs_done(state.path, "k") == 1
    other = tmp_path / "other.pt"
    modelfile.save(
        other,
        fit(spec(epochs=1, seed=5), *data, classes=2)[0],
        name="resnet18",
        options=one.options,
        meta={"image_size": 32, "resize": "crop", "channels": 3, "classes": ["cat", "dog"]},
    )
    linked.unlink()
    other.replace(linked)  # the same architecture, other weights: caught by the digest
    assert load(state.path, "k") is None
    assert (
        "its weights (resnet18.weights.pt) are missing or changed; this model trains from the start"
        in capsys.readouterr().err
    )
    linked.unlink()
    assert epochs_done(state.path, "k") == 0 and load(state.path, "k") is None
    again, _ = fit(one, *data, classes=2, resume=state)  # trains, and its new state has weights of its own
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values())
    )  # the same run again
    assert load(state.path, "k")["model"] is not None and "weights" not in load(state.path, "k")
