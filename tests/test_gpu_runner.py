"""benchmarks.gpu: the GPU run prepared here. Its rehearsal (the same phases at tiny sizes) passes on
the CPU, a command past its limit is cut off and reported, and `prepare` packs what one command may
carry to the GPU machine."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import zipfile

import pytest

from benchmarks import gpu
from pipeline.data import synthetic
from pipeline.params import recipes
from tests.paths import REPO


@pytest.mark.slow
def test_the_rehearsal_measures_speed_and_reproduces_the_zoo_on_the_cpu_and_brings_back_three_files(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", "run", "--tiny", "--out", str(out), "speed", "zoo"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "gpu.json",
        "log.txt",
        "summary.md",
    ]  # the device returns 8 at most
    phases = json.loads((out / "gpu.json").read_text())["phases"]
    assert list(phases) == ["env", "speed", "zoo"]  # env first, though not named: it installs the kit there
    assert phases["env"]["device"] == "cpu" and phases["env"]["torch"] and phases["env"]["dvc"].startswith("DVC")
    bench = phases["speed"]["resnet18"]
    assert set(bench["training"]["combinations"]) == {
        f"{p}/{m}/eager" for p in ("fp32", "bf16") for m in ("contiguous", "channels_last")
    }
    assert 0 < bench["ratios"]["pipeline/ceiling"]
    stages = ["check", "download", "split", "preprocess", "train", "evaluate", "report", "export"]
    r = phases["zoo"]  # `real` is the same dvc repro with other params (checked below)
    assert r["returncode"] == 0 and r["params"]["data"]["source"] == "synthetic:40"
    assert [line for _, line in r["stages_started"]] == [f"Running stage '{s}':" for s in stages]
    assert any("resnet18" in line for line in r["check_estimate"])
    m = r["models"]["resnet18"]
    low, high = m["accuracy_ci95"]
    assert low <= m["accuracy"] <= high and m["epochs"] == 1 and m["device"].startswith("cpu")
    assert "## zoo: dvc repro exit 0" in (out / "summary.md").read_text()
    assert "Running stage 'train'" in (out / "log.txt").read_text()


@pytest.mark.parametrize("sizes", [gpu.FULL, gpu.TINY], ids=["full", "tiny"])
def test_the_params_each_dvc_phase_sets_are_valid_before_any_device_time_is_spent(sizes, tmp_path):
    photos = tmp_path / "photos.zip"
    synthetic.make_archive(photos, per_class=4, size=32)
    zoo = recipes.load(REPO / "params.yaml", gpu.zoo_params(sizes))
    real = recipes.load(REPO / "params.yaml", gpu.real_params(sizes, photos))
    assert [m.name for m in zoo.models] == list(sizes.zoo_models)
    assert [m.name for m in real.models] == list(sizes.real_models)
    assert set(sizes.compiled) <= set(gpu.COMBINATIONS)
    if sizes is gpu.FULL:
        assert (zoo.data.source, zoo.data.image_size, real.data.image_size) == ("synthetic:25000", 224, 224)
        assert [m.name for m in zoo.models] == gpu.ZOO and "efficientnet_lite0" in sizes.real_models
        resnet50 = next(m for m in real.models if m.name == "resnet50")
        assert resnet50.options["pretrained"] is False and resnet50.train.epochs == 12  # no ResNet weights travel


def test_a_command_past_its_limit_is_cut_off_and_a_phase_without_time_is_skipped_both_reported(tmp_path):
    runner = gpu.Runner(tmp_path, deadline=60, sizes=gpu.TINY, kit=tmp_path / "kit")
    start = time.monotonic()
    ran = runner.run(["sh", "-c", "echo started; sleep 30"], limit=1)
    assert ran["returncode"] is None and time.monotonic() - start < 5 and ran["output"] == "started\n"
    shutil.rmtree(runner.work)
    report = gpu.run(["speed", "zoo"], tmp_path / "out", deadline=30, sizes=gpu.TINY)  # under a minute: none starts
    assert list(report["phases"]) == ["env", "speed", "zoo"] and all("skipped" in r for r in report["phases"].values())
    assert gpu.failures(report) == ["env", "speed", "zoo"]
    report["phases"] = {"speed": {"resnet18": {"training": {}}, "resnet50": {"returncode": 1, "error": "..."}}}
    assert gpu.failures(report) == ["speed resnet50"]
    assert json.loads((tmp_path / "out" / "gpu.json").read_text())["phases"]["zoo"]["skipped"]


def test_prepare_packs_as_many_photos_as_one_command_carries_half_of_each_class_uncompressed(tmp_path):
    kit = tmp_path / "kit"
    (kit / "wheels").mkdir(parents=True)
    (kit / "wheels" / "dvc-0-py3-none-any.whl").write_bytes(bytes(2**20))  # 1 MiB
    photos = tmp_path / "train.zip"
    with zipfile.ZipFile(photos, "w") as z:
        for i in range(200):
            for c in ("cat", "dog"):
                z.writestr(f"train/{c}.{i}.jpg", bytes([i % 256]) * 10_000)
        z.writestr("train/readme.txt", "not a photo")
    checkout = sum(p.stat().st_size for p in gpu.tracked_files())
    travel_mib = (checkout + 2**20 + 2 * 2**20) // 2**20 + 2  # about 1.5 MiB left for photos: ~100 pairs of 20 KB
    made = gpu.prepare(kit, photos, tmp_path / "out", travel_mib=travel_mib)
    with zipfile.ZipFile(tmp_path / "out" / "photos.zip") as z:
        infos = z.infolist()
    pairs = made["photos_per_class"]
    room = travel_mib * 2**20 - checkout - 2**20 - 2 * 2**20
    assert pairs * 20_256 <= room < (pairs + 1) * 20_256  # every pair that fits (and its headers), not one more
    assert [i.filename for i in infos[:4]] == [
        "train/cat.0.jpg",
        "train/dog.0.jpg",
        "train/cat.1.jpg",
        "train/dog.1.jpg",
    ]
    assert len(infos) == 2 * pairs and all(i.compress_type == zipfile.ZIP_STORED for i in infos)
    assert made["travel_mib"] <= travel_mib and (tmp_path / "out" / "wheels" / "dvc-0-py3-none-any.whl").is_file()
