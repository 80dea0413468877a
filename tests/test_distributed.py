"""Training in several processes: `torchrun --nproc_per_node=2 -m pipeline.train` on the CPU (gloo),
on a small preprocessed set this test writes. Process 0 alone writes, BatchNorm is synchronised,
and the result matches one process's on the same global batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pipeline import models, train
from pipeline.common import cli
from pipeline.common.errors import ParamError
from pipeline.models import modelfile
from pipeline.params import recipes
from pipeline.runtime.device import Compute
from pipeline.runtime.inference import probabilities
from pipeline.runtime.tensors import shard_rows
from pipeline.training import resume
from pipeline.training.fit import per_process_batch
from tests.helpers import REPO, set_params, toy_split, write_processed

EPOCHS = 3
# Both runs learn the toy task (>= 0.9), but not along the same path: two processes shuffle their
# own shards and draw their own crops and flips, so their global batches differ from one process's.
# Their validation accuracies may then differ by a few of the 32 images, no more: 0.1 is 3 images.
TOLERANCE = 0.1


def torchrun_command(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node=2", *args]


ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def torchrun(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    command = torchrun_command(*args)
    result = subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(command)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("distributed")
    write_processed(root / "processed", {"train": toy_split(96), "val": toy_split(32, seed=1)})
    (root / "params.yaml").write_text((REPO / "params.yaml").read_text())
    overrides = {"epochs": EPOCHS, "batch_size": 16}
    set_params(
        root,
        {
            "model": "resnet18",
            "data": {"image_size": 32},
            "train": overrides,
            "runtime": {"device": "cpu", "processes": 2},
        },
    )
    return root


def train_args(run: str) -> list[str]:
    outputs = {"--out": "models", "--live": "dvclive", "--resume": "resume"}
    return ["-m", "pipeline.train", "--data", "processed", *(x for k, v in outputs.items() for x in (k, f"{run}/{v}"))]


@pytest.fixture(scope="module")
def two_processes(project: Path) -> str:
    """The train stage as dvc.yaml runs it, plain `python -m pipeline.train`, which hands itself over
    to torchrun for runtime.processes = 2; run once for the tests that need it; its output. (The
    resume tests below call torchrun directly, as a launch across machines would.)"""
    shown = subprocess.run(
        [sys.executable, *train_args("two")], cwd=project, env=ENV, capture_output=True, text=True, timeout=300
    )
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


@pytest.mark.slow
def test_two_processes_write_once_synchronise_batchnorm_and_match_one_process(project: Path, two_processes: str):
    shown = two_processes
    assert len([line for line in shown.splitlines() if "resnet18 epoch" in line]) == EPOCHS  # process 0 prints, alone
    where = f"cpu ({max(1, cli.cpu_count() // 2)} threads) × 2 processes"  # the cores shared between them
    said = next(
        line
        for line in shown.splitlines()
        if line.startswith("train: 96 train / 32 val images of 2 classes (cat, dog) at 32 px on ")
    )
    assert said.startswith(
        f"train: 96 train / 32 val images of 2 classes (cat, dog) at 32 px on {where.split(' × ')[0]}, "
    ) and said.endswith(" × 2 processes")

    two = project / "two"
    assert [p.name for p in (two / "models").iterdir()] == ["resnet18.pt"]
    model, meta = modelfile.load(two / "models" / "resnet18.pt")
    batchnorms = sum(isinstance(m, nn.BatchNorm2d) for m in models.build("resnet18").modules())
    assert meta["processes"] == 2 and meta["synchronised_batchnorm_layers"] == batchnorms == 20
    assert meta["device"] == where
    rows = json.loads((two / "dvclive" / "plots" / "custom" / "epochs.json").read_text())
    assert [(r["model"], r["epoch"]) for r in rows] == [("resnet18", e) for e in range(1, EPOCHS + 1)]  # written once
    spec = recipes.load(project / "params.yaml").models[0]
    assert torch.load(two / "resume" / "resnet18.pt", weights_only=True)["key"] == resume.key(
        spec, "toy", 2, meta["compute"]["precision"]
    )

    # Each process validated its half; the summed metrics are those of the whole split.
    val = toy_split(32, seed=1)
    proba = probabilities(
        model, val, 16, compute=Compute(torch.device("cpu"), **meta["compute"])
    )  # as the run computed
    assert meta["val"]["accuracy"] == (proba.argmax(1) == val.labels).float().mean().item()
    assert meta["val"]["loss"] == pytest.approx(nn.functional.nll_loss(proba.log(), val.labels).item(), rel=1e-4)

    one = recipes.load(project / "params.yaml", {"runtime": {"processes": 1}})
    single = train.train_all(
        one, project / "processed", project / "one/models", project / "one/dvclive", project / "one/resume"
    )
    assert single["resnet18"]["processes"] == 1 and single["resnet18"]["synchronised_batchnorm_layers"] == 0
    assert meta["val"]["accuracy"] >= 0.9 and single["resnet18"]["val"]["accuracy"] >= 0.9
    assert meta["val"]["accuracy"] == pytest.approx(single["resnet18"]["val"]["accuracy"], abs=TOLERANCE)


@pytest.mark.slow
def test_two_processes_resume_together_from_process_0s_checkpoint(project: Path, two_processes: str):
    shown = torchrun(project, *train_args("two")).stdout
    assert shown.count("resnet18 already trained with this recipe and data") == 1
    assert "resnet18 epoch" not in shown  # finished: restored, not trained again, by either process


@pytest.mark.slow
def test_an_interrupted_two_process_run_resumes_to_the_same_weights(project: Path, two_processes: str):
    """Process 0's resume file is enough: each process derives its random streams from (seed, rank,
    epoch), so a run stopped with Ctrl-C and started again ends with the uninterrupted run's weights."""
    stopped = subprocess.Popen(
        torchrun_command(*train_args("cut")),
        cwd=project,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    state, deadline = project / "cut" / "resume" / "resnet18.pt", time.monotonic() + 120
    while not state.exists() and stopped.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(stopped.pid, signal.SIGINT)  # Ctrl-C, to torchrun and both processes
    stopped.wait(timeout=60)
    assert state.exists() and not (project / "cut" / "models" / "resnet18.pt").exists()  # stopped midway

    assert "resnet18 resumes after epoch" in torchrun(project, *train_args("cut")).stdout
    whole = torch.load(project / "two" / "models" / "resnet18.pt", weights_only=True)["state_dict"]
    resumed = torch.load(project / "cut" / "models" / "resnet18.pt", weights_only=True)["state_dict"]
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)


SYNC_BATCHNORM = """
import sys, torch
import torch.distributed as dist
from torch import nn
from pipeline.runtime import distributed
dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
x, x1 = torch.randn(8, 3, 5, 5) * 3 + 1, torch.randn(8, 6) * 2 - 1  # the global batches
net = nn.ModuleDict({"conv": nn.BatchNorm2d(3), "dense": nn.BatchNorm1d(6)})
for bn in net.values():
    nn.init.uniform_(bn.weight), nn.init.uniform_(bn.bias)
reference = {k: v.clone() for k, v in net.state_dict().items()}
synced = distributed._swap_batchnorm(net)
half = slice(4 * rank, 4 * rank + 4)
xa, xb = x[half].clone().requires_grad_(), x1[half].clone().requires_grad_()
ya, yb = synced["conv"](xa), synced["dense"](xb)
((ya * torch.arange(75.).view(3, 5, 5)).sum() + (yb * torch.arange(6.)).sum()).backward()
for bn in synced.values():  # DDP would average these over the processes; summed here
    dist.all_reduce(bn.weight.grad), dist.all_reduce(bn.bias.grad)
parts = [None, None]
dist.all_gather_object(parts, {"ya": ya.detach(), "yb": yb.detach(), "ga": xa.grad, "gb": xb.grad})
if rank == 0:
    torch.save({"reference": reference, "x": x, "x1": x1, "parts": parts, "state": synced.state_dict(),
                "grads": {n: p.grad for n, p in synced.named_parameters()}}, sys.argv[1])
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_cpu_sync_batchnorm_equals_one_batchnorm_over_the_global_batch(tmp_path: Path):
    """Two processes with half a batch each give the outputs, gradients and running statistics of
    one BatchNorm over the whole batch: independently computed here by PyTorch's own BatchNorm."""
    (tmp_path / "sync.py").write_text(SYNC_BATCHNORM)
    torchrun(tmp_path, "sync.py", str(tmp_path / "out.pt"))
    got = torch.load(tmp_path / "out.pt", weights_only=True)
    net = nn.ModuleDict({"conv": nn.BatchNorm2d(3), "dense": nn.BatchNorm1d(6)})
    net.load_state_dict(got["reference"])
    x, x1 = got["x"].requires_grad_(), got["x1"].requires_grad_()
    ya, yb = net["conv"](x), net["dense"](x1)
    ((ya * torch.arange(75.0).view(3, 5, 5)).sum() + (yb * torch.arange(6.0)).sum()).backward()
    parts = got["parts"]
    close = dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([p["ya"] for p in parts]), ya.detach(), **close)
    torch.testing.assert_close(torch.cat([p["yb"] for p in parts]), yb.detach(), **close)
    torch.testing.assert_close(torch.cat([p["ga"] for p in parts]), x.grad, **close)
    torch.testing.assert_close(torch.cat([p["gb"] for p in parts]), x1.grad, **close)
    for name, value in net.state_dict().items():  # running mean and variance (unbiased), batches tracked
        torch.testing.assert_close(got["state"][name], value, **close)
    for name, p in net.named_parameters():
        torch.testing.assert_close(got["grads"][name], p.grad, **close)


def test_shards_are_disjoint_equal_and_balanced_and_validation_covers_every_image():
    labels = np.array([0] * 13 + [1] * 8)
    shards = [shard_rows(labels, rank, 2, equal=True) for rank in range(2)]
    assert len(shards[0]) == len(shards[1]) == 10 and not set(shards[0]) & set(shards[1])
    dogs = [labels[s].sum() for s in shards]
    assert abs(dogs[0] - dogs[1]) <= 1  # each class dealt out evenly (8 dogs: 4 and 4, or 4 and 3 when one is left out)
    assert np.array_equal(shard_rows(labels, 1, 2, equal=True), shards[1])  # seeded: the same every time
    val = [shard_rows(labels, rank, 3, equal=False) for rank in range(3)]
    assert sorted(np.concatenate(val)) == list(range(21))


def test_a_batch_size_not_divisible_by_the_processes_is_refused():
    with pytest.raises(ParamError) as e:
        recipes.load(REPO / "params.yaml", {"train": {"batch_size": 16}, "runtime": {"processes": 3}})
    assert e.value.key == "train.batch_size" and "divisible by runtime.processes = 3" in str(e.value)
    with pytest.raises(ParamError) as e:
        recipes.load(REPO / "params.yaml", {"runtime": {"processes": 2}, "models": {"vgg11": {"batch_size": 9}}})
    assert e.value.key == "models.vgg11.batch_size"
    spec = recipes.load(REPO / "params.yaml", {"model": "resnet18", "train": {"batch_size": 16}}).models[0]
    assert per_process_batch(spec, 4) == 4
    with pytest.raises(ParamError, match="train.batch_size = 16: must be divisible by the 3 processes"):
        per_process_batch(spec, 3)  # torchrun across machines: more processes than runtime.processes


def test_processes_is_one_launch_for_every_model_not_a_per_architecture_key():
    with pytest.raises(ParamError) as e:
        recipes.load(REPO / "params.yaml", {"models": {"resnet18": {"processes": 2}}})
    assert e.value.key == "models.resnet18.processes" and "unknown key" in str(e.value)
    with pytest.raises(ParamError, match="runtime.processes = 0"):
        recipes.load(REPO / "params.yaml", {"runtime": {"processes": 0}})
