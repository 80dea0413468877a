"""The benchmark runs every phase end to end on a small generated archive (figures are not judged:
they belong to the machine), a missing archive is one error line, and the peak it divides by stops
growing its problem where a run gets long."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import torch

from benchmarks import bench as benchmark
from benchmarks.bench import SCALES, growing
from pipeline.data import synthetic
from tests.helpers import AUTO_PRECISION, REPO

COMPILED = f"{AUTO_PRECISION}/channels_last/compiled"  # the combination `auto` would train in here, compiled


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.bench", *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_the_benchmark_measures_every_phase_and_writes_them(tmp_path):
    archive, out = tmp_path / "images.zip", tmp_path / "bench.json"
    synthetic.make_archive(archive, per_class=16, size=48)
    size = ["--image-size", "67", "--batch-size", "8", "--steps", "2", "--warmup", "1", "--preprocess-images", "64"]
    only = ("--only", f"fp32/channels_last/eager,{COMPILED}")  # one compiled combination: tens of seconds of compiling
    # NiN at its smallest size, not ResNet-18: with an empty compile cache (CI's) the test took 51 s
    # on a 2-core Zen 3, against 101 s with ResNet-18 in emulated bf16
    result = bench(
        "--model",
        "nin",
        *size,
        *only,
        "--profile",
        "2",
        "--archive",
        str(archive),
        "--device",
        "cpu",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    r = json.loads(out.read_text())
    t = r["training"]
    phases = ["dataloader_baseline", "pipeline", "ceiling", "fp32_eager", "evaluation", "epochs"]
    assert [k for k in t if isinstance(t[k], dict) and "images_per_second" in t[k]] == phases
    assert all(t[phase]["images_per_second"] > 0 and t[phase]["cpu_busy"] > 0 for phase in phases)
    assert list(t["combinations"]) == ["fp32/channels_last/eager", COMPILED]
    compiled = t["combinations"][COMPILED]
    assert compiled["images_per_second"] > 0 and compiled["compile_seconds"] > 0
    assert all(0 < t[phase]["mfu"] for phase in ("pipeline", "ceiling", "fp32_eager")) and t["flops_per_image"] > 0
    assert t["peak_flops_per_second"]["fp32"] > 0 and t["peak_flops_per_second"]["bf16"] > 0
    assert r["ratios"]["pipeline/ceiling"] == pytest.approx(
        t["pipeline"]["images_per_second"] / t["ceiling"]["images_per_second"]
    )
    assert r["ratios"]["pipeline/fp32_eager"] == pytest.approx(
        t["pipeline"]["images_per_second"] / t["fp32_eager"]["images_per_second"]
    )
    assert r["shipped"].startswith("cpu (") and r["why"]  # the shipped defaults, resolved here, and why
    assert t["epochs"]["images"] == 2 * 32  # two epochs of the 4 batches of 8 it holds
    profile = t["pipeline"]["profile"]  # where a step's time goes: NiN's convolutions lead
    assert profile["steps"] == 2 and 0 < profile["device_busy"] and len(profile["top"]) == 10
    assert any("conv" in e["op"] for e in profile["top"][:3]) and "device busy" in result.stdout
    assert (
        "dataloader_baseline" in result.stdout and "pipeline/fp32_eager" in result.stdout and str(out) in result.stdout
    )


@pytest.mark.slow  # a fresh interpreter
def test_a_missing_archive_is_one_error_line(tmp_path):
    result = bench("--archive", str(tmp_path / "none.zip"))
    assert result.returncode == 2
    assert (
        result.stderr.startswith("error: ")
        and "dvc repro download" in result.stderr
        and "Traceback" not in result.stderr
    )


def simulated(rate: float):
    """Work of 10⁹ × scale³ FLOPs (a matrix product of side 256 × scale, roughly) on a machine doing
    `rate` FLOP/s, timed by a clock that advances by what each run would take: (make, timed, runs),
    runs listing the scale of every run, timed or not."""
    runs: list[int] = []

    def make(scale: int):
        return (lambda: runs.append(scale)), 1e9 * scale**3

    def timed(run) -> float:
        run()
        return 1e9 * runs[-1] ** 3 / rate

    return make, timed, runs


def test_the_peak_grows_to_the_largest_problem_on_a_fast_machine():
    make, timed, runs = simulated(rate=1e12)  # 1 TFLOP/s: even scale 8 (512 GFLOP) takes 0.5 s
    assert growing(make, timed, repeats=3, short=1.0) == pytest.approx(1e12)
    assert runs == [1] * 4 + [2] * 4 + [4] * 4 + [8] * 4  # each scale: one untimed run and three timed


def test_the_peak_stops_growing_at_the_first_long_run_as_on_a_cpu_emulating_bf16():
    # 0.3 GFLOP/s, a Zen 3's bf16 matrix products: scale 1 takes 3.3 s, scale 8 would take 28 minutes
    make, timed, runs = simulated(rate=3e8)
    assert growing(make, timed, repeats=5, short=0.25) == pytest.approx(3e8)
    assert runs == [1, 1]  # the untimed run and one timed: 6.7 s in all, where 6 runs of scale 8 take 2.8 h
    make, timed, runs = simulated(rate=2e10)  # 20 GFLOP/s: scale 1 takes 0.05 s, scale 2 0.4 s
    assert growing(make, timed, repeats=5, short=0.25) == pytest.approx(2e10)
    assert runs == [1] * 6 + [2] * 2


def test_on_a_gpu_the_peak_grows_past_the_cpus_largest_problem_where_a_launch_costs_microseconds():
    # an H100-like 800 TFLOP/s in bf16, 20 µs a launch and its synchronisation; real matrix products (2 n³)
    def gpu(scale_flops):
        runs: list[int] = []

        def make(scale: int):
            return (lambda: runs.append(scale)), scale_flops(scale)

        def timed(run) -> float:
            run()
            return 20e-6 + scale_flops(runs[-1]) / 8e14

        return make, timed

    matmul = lambda scale: 2 * (256 * scale) ** 3  # noqa: E731
    cpu_sized = growing(*gpu(matmul), 5, SCALES["cpu"])
    gpu_sized = growing(*gpu(matmul), 5, SCALES["cuda"])
    assert cpu_sized < 0.6 * 8e14  # 2048 × 2048: 21 µs of work beside 20 µs of launch
    assert gpu_sized > 0.97 * 8e14  # 16384 × 16384: 11 ms


@pytest.mark.parametrize("device, waits", [("cpu", 1 + 5 + 1), ("cuda", 2)])
def test_a_gpu_step_is_timed_over_the_whole_run_not_one_by_one(monkeypatch, device, waits):
    # waiting for the GPU after each step (to time it) would stop the host queuing the next one
    waited = []
    monkeypatch.setattr(benchmark, "synchronize", lambda d: waited.append(d.type))
    batches = iter([(None, torch.zeros(4))] * 8)
    found = benchmark.timed(batches, lambda x, y: time.sleep(0.002), torch.device(device), warmup=2, steps=5)
    assert len(waited) == waits and found["images"] == 20
    assert found["images_per_second"] == pytest.approx(20 / found["seconds"], rel=0.5)
    if device == "cuda":
        assert found["images_per_second"] == found["mean_images_per_second"]
