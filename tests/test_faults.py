"""When things go wrong: a diverging loss, CUDA out of memory, an interrupted run, a killed stage.
Each case asserts the exact outcome: the message, what is kept, what is not written."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pipeline import params, train
from pipeline.atomic import atomic_path
from pipeline.distributed import World
from pipeline.errors import StageError
from tests.helpers import REPO, toy_split


def spec(name="resnet18", runtime=None, **overrides):
    train_keys = {"epochs": 3, "batch_size": 16, **overrides}
    return params.load(overrides={"model": name, "train": train_keys, "runtime": runtime or {}}).models[0]


def states_equal(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_an_interrupted_run_resumes_and_ends_with_the_same_weights(tmp_path):
    data = toy_split(48), toy_split(16, seed=1)
    whole, whole_summary = train.train_model(spec(), *data, resume_file=tmp_path / "whole.pt", key="k")

    def interrupt_in_epoch_2(epoch, row):
        if epoch == 1:
            raise KeyboardInterrupt  # Ctrl-C after epoch 2 trained, before its checkpoint

    with pytest.raises(KeyboardInterrupt):
        train.train_model(spec(), *data, log=interrupt_in_epoch_2, resume_file=tmp_path / "cut.pt", key="k")
    logged = []
    resumed, summary = train.train_model(spec(), *data, log=lambda e, r: logged.append(e), resume_file=tmp_path / "cut.pt", key="k")
    assert logged == [0, 1, 2]  # epoch 1's curves replayed from the checkpoint, then epochs 2 and 3 trained
    assert states_equal(resumed.state_dict(), whole.state_dict())
    assert summary["val"] == whole_summary["val"] and summary["kept_epoch"] == whole_summary["kept_epoch"]


def test_a_model_trained_with_the_same_key_is_not_trained_again(tmp_path, monkeypatch):
    data = toy_split(32), toy_split(16, seed=1)
    first, _ = train.train_model(spec(epochs=1), *data, resume_file=tmp_path / "m.pt", key="k")
    assert torch.load(tmp_path / "m.pt", weights_only=True)["optimizer"] is None  # finished: no optimiser state kept

    def never(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(train, "train_one_epoch", never)
    again, _ = train.train_model(spec(epochs=1), *data, resume_file=tmp_path / "m.pt", key="k")
    assert states_equal(again.state_dict(), first.state_dict())
    with pytest.raises(AssertionError, match="trained again"):  # another key (params or data changed): a fresh run
        train.train_model(spec(epochs=1), *data, resume_file=tmp_path / "m.pt", key="other")
    with pytest.raises(AssertionError, match="trained again"):  # runtime.resume: false ignores the file
        train.train_model(spec(epochs=1), *data, resume_file=tmp_path / "m.pt", key="k", resume=False)


def test_the_key_changes_with_the_recipe_and_the_data_but_not_the_device():
    base = train.fingerprint(spec(), "data-a")
    assert train.fingerprint(spec(lr=0.01), "data-a") != base
    assert train.fingerprint(spec(), "data-b") != base
    assert train.fingerprint(spec(runtime={"device": "cpu", "compile": True, "resume": False}), "data-a") == base


def test_a_nan_loss_stops_training_naming_model_epoch_and_step_and_keeps_the_last_good_epoch(tmp_path, monkeypatch):
    calls = {"n": 0}
    real_augment = train.augment

    def poisoned(x, **kwargs):  # the 3rd batch of epoch 2 (3 batches of 16 per epoch) turns to NaN
        calls["n"] += 1
        out = real_augment(x, **kwargs)
        return out * float("nan") if calls["n"] == 6 else out

    monkeypatch.setattr(train, "augment", poisoned)
    with pytest.raises(StageError) as e:
        train.train_model(spec(), toy_split(48), toy_split(16, seed=1), resume_file=tmp_path / "m.pt", key="k")
    message = str(e.value)
    assert message.startswith("resnet18: the training loss became NaN or infinite at epoch 2, step 3 of 3")
    assert "models.resnet18.lr_scale" in message and str(tmp_path / "m.pt") in message
    kept = torch.load(tmp_path / "m.pt", weights_only=True)
    assert len(kept["history"]) == 1  # epoch 1, the last good one
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())


def test_cuda_out_of_memory_names_the_batch_size_and_suggests_half(monkeypatch):
    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(train, "augment", oom)
    with pytest.raises(StageError) as e:
        train.train_model(spec(batch_size=16), toy_split(48), toy_split(16, seed=1))
    assert "resnet18: CUDA ran out of memory at batch size 16" in str(e.value)
    assert "models.resnet18.batch_size: 8" in str(e.value)
    p = params.load(overrides={"model": "resnet18", "train": {"batch_size": 16}})
    with pytest.raises(StageError, match="resnet18: CUDA ran out of memory at batch size 16"):  # in the estimate, before training
        train.estimates(p, toy_split(48), toy_split(16, seed=1), Path("no-checkpoints"), {"resnet18": "k"}, "cuda", World())


def test_atomic_path_leaves_nothing_when_the_block_fails(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


KILLED_PREPROCESS = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as on a terminal, even if pytest was started with SIGINT ignored (`&`)
from pathlib import Path
import pipeline.preprocess as pre
from tests.archives import tricky_members, write_zip
from pipeline.split import split
from pipeline.sections import DataParams
root = Path(sys.argv[1])
archive = write_zip(root / "a.zip", tricky_members("kaggle"))
split(archive, root / "split", DataParams("x", 40, "crop", None, 0.2, 0.2, 0), workers=1)
real = pre.load
def slow(*args):
    print("decoding", flush=True)
    time.sleep(0.2)
    return real(*args)
pre.load = slow
pre.preprocess(archive, root / "split", root / "processed", image_size=40, resize="crop", workers=1)
"""


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL])
def test_a_stage_stopped_midway_leaves_no_output_that_looks_finished(tmp_path, how):
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_PREPROCESS, str(tmp_path)],
        cwd=REPO, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert process.stdout.readline().strip() == "decoding"
    time.sleep(0.3)
    process.send_signal(how)
    process.wait(timeout=30)
    left = sorted(p.name for p in (tmp_path / "processed").iterdir())
    assert not [name for name in left if name.endswith(".npy")]  # no array that looks complete
    if how == signal.SIGINT:
        assert left == []  # Ctrl-C: the temporary file is removed too
    else:
        assert all(name.startswith(".") and name.endswith(".tmp") for name in left)  # a kill: only a hidden temp
