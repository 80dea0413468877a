"""The benchmark runs every phase end to end on a small generated archive (figures are not judged:
they belong to the machine), and a missing archive is one error line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipeline.data import synthetic
from tests.helpers import REPO


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.bench", *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_the_benchmark_measures_every_phase_and_writes_them(tmp_path):
    archive, out = tmp_path / "images.zip", tmp_path / "bench.json"
    synthetic.make_archive(archive, per_class=16, size=48)
    size = ["--image-size", "32", "--batch-size", "8", "--steps", "2", "--warmup", "1", "--preprocess-images", "64"]
    only = (
        "--only",
        "fp32/channels_last/eager,bf16/channels_last/compiled",
    )  # one compiled combination: tens of seconds of compiling
    result = bench("--model", "resnet18", *size, *only, "--archive", str(archive), "--device", "cpu", "--out", str(out))
    assert result.returncode == 0, result.stderr
    r = json.loads(out.read_text())
    t = r["training"]
    phases = ["dataloader_baseline", "pipeline", "ceiling", "fp32_eager", "evaluation", "epochs"]
    assert [k for k in t if isinstance(t[k], dict) and "images_per_second" in t[k]] == phases
    assert all(t[phase]["images_per_second"] > 0 and t[phase]["cpu_busy"] > 0 for phase in phases)
    assert list(t["combinations"]) == ["fp32/channels_last/eager", "bf16/channels_last/compiled"]
    compiled = t["combinations"]["bf16/channels_last/compiled"]
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
