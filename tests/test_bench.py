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
    return subprocess.run([sys.executable, "-m", "benchmarks.bench", *args], cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_benchmark_measures_every_phase_and_writes_them(tmp_path):
    archive, out = tmp_path / "images.zip", tmp_path / "bench.json"
    synthetic.make_archive(archive, per_class=16, size=48)
    size = ["--image-size", "32", "--batch-size", "8", "--steps", "2", "--warmup", "1", "--preprocess-images", "64"]
    result = bench("--model", "resnet18", *size, "--archive", str(archive), "--device", "cpu", "--out", str(out))
    assert result.returncode == 0, result.stderr
    r = json.loads(out.read_text())
    assert list(r["training"]) == ["dataloader_baseline", "pipeline", "ceiling", "evaluation", "epochs"]
    assert all(phase["images_per_second"] > 0 and phase["cpu_busy"] > 0 for phase in r["training"].values())
    t = r["training"]
    assert r["ratios"]["pipeline/ceiling"] == pytest.approx(t["pipeline"]["images_per_second"] / t["ceiling"]["images_per_second"])
    assert r["training"]["epochs"]["images"] == 2 * 32  # two epochs of the 4 batches of 8 it holds
    assert "dataloader_baseline" in result.stdout and str(out) in result.stdout


@pytest.mark.slow  # a fresh interpreter
def test_a_missing_archive_is_one_error_line(tmp_path):
    result = bench("--archive", str(tmp_path / "none.zip"))
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "dvc repro download" in result.stderr and "Traceback" not in result.stderr
