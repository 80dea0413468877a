"""The check stage: every problem that would stop a run later is found first, and all at once."""

import socket
import subprocess
import sys
import urllib.error

import pytest
import torch
import yaml

from pipeline import check
from pipeline.check import compute_lines
from pipeline.data.sources import MICROSOFT, source_problem
from pipeline.params import recipes
from pipeline.runtime.device import resolve
from tests.helpers import REPO


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No DNS and an empty torch hub cache, as on a machine without network."""

    def no_dns(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    def no_download(url, dst, progress=True):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)


def test_offline_microsoft_source_says_what_it_tried_and_how_to_use_a_local_copy(offline, tmp_path):
    problem = source_problem("microsoft", tmp_path / "downloads")
    assert "download.microsoft.com" in problem and MICROSOFT.url in problem
    assert "data.source=/path/to/kagglecatsanddogs_5340.zip" in problem and "synthetic" in problem


def test_a_verified_download_in_the_cache_needs_no_network(offline, tmp_path):
    cached = tmp_path / MICROSOFT.filename
    with open(cached, "wb") as f:
        f.truncate(MICROSOFT.size)  # sparse: the size is what the cheap check looks at
    assert source_problem("microsoft", tmp_path) is None


def test_local_sources_must_exist(tmp_path):
    assert source_problem("synthetic", tmp_path) is None
    assert "was not found" in source_problem("no/such.zip", tmp_path, base_dir=tmp_path)
    (tmp_path / "photos").mkdir()
    assert source_problem("photos", tmp_path, base_dir=tmp_path) is None


def test_check_reports_the_data_source_and_the_missing_weights_together(offline, tmp_path):
    found = check.problems(recipes.load(REPO / "params.yaml"), tmp_path / "downloads")
    assert len(found) == 2
    assert "download.microsoft.com" in found[0]
    assert "resnet50-11ad3fa6.pth" in found[1] and "pretrained: false" in found[1]


@pytest.mark.slow  # the stage in a fresh interpreter
def test_check_stage_exits_2_with_one_clear_message_and_writes_nothing(tmp_path):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"]["batch_size"] = 0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.check", "--out", "data/params.ok", "--downloads", "data/.downloads"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: params.yaml: train.batch_size = 0: must be a positive whole number"
    assert not (tmp_path / "data").exists()


@pytest.mark.slow  # the stage in a fresh interpreter
def test_check_stage_prints_each_models_recipe_and_what_does_not_follow_train(tmp_path):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"].update(source="synthetic", image_size=96)
    raw["model"] = ["alexnet", "resnet18", "resnet50"]
    raw["models"]["resnet50"]["pretrained"] = False
    raw["train"]["lr"] = 0.01
    raw["models"]["resnet18"] = {"lr": 0.003}  # an absolute rate: train.lr no longer reaches resnet18
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "verdicts").mkdir()
    (tmp_path / "verdicts" / "none.yaml").write_text("{}\n")
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.check", "--out", "data/params.ok", "--downloads", "data/.downloads"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    optimizer, scale = raw["train"]["optimizer"], raw["models"]["alexnet"].get("lr_scale", 1)
    assert lines[1].split()[:3] == ["model", "optimizer", "lr"]
    assert lines[2].split()[:3] == ["alexnet", optimizer, f"{0.01 * scale:.3g}"]
    assert lines[3].split()[:3] == ["resnet18", optimizer, "0.003"]
    assert "warning: resnet18 keeps its own lr = 0.003 (models.resnet18.lr), not train.lr = 0.01" in lines
    assert not any(line.startswith("warning: alexnet") for line in lines)
    # how training will compute here, and why each auto chose as it did
    computes = next(i for i, line in enumerate(lines) if line.startswith("check: training computes on cpu ("))
    precision = compute_lines(
        resolve(recipes.load(tmp_path / "params.yaml").runtime), recipes.load(tmp_path / "params.yaml").runtime
    ).splitlines()
    assert lines[computes : computes + len(precision)] == precision
    assert lines[computes + 1].startswith("  precision ") and any(
        line.startswith("  eager, not compiled: ") for line in precision
    )
    # at 96 px AlexNet's last map is 1×1, and its pool copies it to the 5×5 of the course's 224 px
    assert any(line.startswith("note: at 96 px alexnet's last feature map is 1×1") and "5×5" in line for line in lines)
    assert not any("resnet18's last feature map" in line for line in lines)
    assert (
        "note: resnet50 trains from random weights (pretrained: false): all of it, at the full lr; "
        "freeze and backbone_lr_scale apply to pretrained weights only"
    ) in lines


def test_the_readmes_first_run_passes_the_check_offline(offline, tmp_path):
    """The README's first-run command, as written (with a real local archive for its placeholder)."""
    from pipeline.common import schema
    from pipeline.data import synthetic
    from pipeline.params import presets

    readme = (REPO / "README.md").read_text()
    block = readme[readme.index("**A first run on a CPU**") :].split("```bash\n", 1)[1].split("```", 1)[0]
    words = block.splitlines()[0].split("#")[0].split()
    assert words[:4] == ["python", "-m", "pipeline.preset", "quickstart"]
    overrides = schema.flatten(
        presets.read(presets.preset_file("quickstart", REPO / "presets"))
    ) | presets.user_overrides(words[4:])
    assert overrides["data.source"] == "path/to/train.zip"
    synthetic.make_archive(tmp_path / "train.zip", per_class=4, size=40)
    overrides["data.source"] = str(tmp_path / "train.zip")
    p = recipes.load(REPO / "params.yaml", presets.nest(overrides))
    assert check.problems(p, tmp_path / "downloads") == []  # no download, no ImageNet weights needed
    assert p.model_names == ["alexnet_bn", "nin", "resnet18"]


def test_check_estimates_each_models_training_time_before_any_download(tmp_path):
    from pipeline.data import synthetic
    from pipeline.runtime.device import Compute

    synthetic.make_archive(tmp_path / "train.zip", per_class=50, size=40)
    data = {"source": str(tmp_path / "train.zip"), "image_size": 72, "val_fraction": 0.1, "test_fraction": 0.5}
    p = recipes.load(
        REPO / "params.yaml", {"model": ["resnet18", "nin"], "data": data, "train": {"epochs": 5, "batch_size": 16}}
    )
    seconds, lines = check.training_estimate(p, Compute(torch.device("cpu")))
    assert [line.split()[1] for line in lines[:2]] == ["nin", "resnet18"]  # the registry's order
    assert all(
        "for 5 epochs of ~40 photos on cpu" in line for line in lines[:2]
    )  # 100 photos, 40% of them train: 10 steps
    assert lines[-1].startswith("check: training ") and seconds > 0
    shown = recipes.load(
        REPO / "params.yaml",
        {"model": "nin", "data": data, "train": {"epochs": 5, "batch_size": 16, "epoch_images": 100}},
    )
    _, (line, _) = check.training_estimate(shown, Compute(torch.device("cpu")))
    assert "for 5 epochs of 120 images (~40 photos, shown again) on cpu" in line  # each photo 3 times: at least 100
    few = recipes.load(REPO / "params.yaml", {"model": "nin", "data": data, "train": {"epochs": 4, "batch_size": 16}})
    assert check.training_estimate(few, Compute(torch.device("cpu"))) == (
        0.0,
        ["check:          nin 8 steps in all: not timed (timing would take about as long as training)"],
    )


def test_a_run_over_the_budget_is_stopped_naming_the_key_and_what_fits():
    p = recipes.load(REPO / "params.yaml", {"runtime": {"budget_hours": 2}})
    assert check.over_budget(p, 3600) is None
    message = check.over_budget(p, 3 * 86400 + 7200)
    assert "more than runtime.budget_hours = 2: raise it (-S runtime.budget_hours=74, or 0 for no limit)" in message
    assert all(name in message for name in ("cpu-64", "cpu-zoo", "cpu-transfer"))
    assert check.over_budget(recipes.load(REPO / "params.yaml", {"runtime": {"budget_hours": 0}}), 10**9) is None
    from pipeline.common.errors import ParamError

    with pytest.raises(ParamError, match="runtime.budget_hours"):
        recipes.load(REPO / "params.yaml", {"runtime": {"budget_hours": -1}})


def test_check_notes_a_pretrained_network_fed_another_size_and_what_precompute_leaves_out():
    at = {
        size: recipes.load(
            REPO / "params.yaml", {"model": ["resnet18", "efficientnet_lite0"], "data": {"image_size": size}}
        )
        for size in (160, 224)
    }
    notes = check.pretrained_inputs(at[160])
    assert notes[0] == (
        "note: efficientnet_lite0's ImageNet weights (75.1% top-1) were trained at 224 px; this run feeds them 160 px "
        "(a frozen backbone's features suffer most from the difference: docs/results.md, Transfer learning)"
    )
    assert notes[1].startswith("note: efficientnet_lite0 computes its frozen backbone's features once (precompute)")
    assert "training photo and its mirror image, without train.translate or crop_scale" in notes[1]
    assert check.pretrained_inputs(at[224]) == notes[1:]  # its native size: nothing to say about it


def test_the_estimate_of_a_precomputed_probe_is_its_features_not_three_epochs_of_steps(tmp_path, monkeypatch):
    from pipeline.data import synthetic
    from pipeline.runtime.device import Compute
    from pipeline.training import estimate

    monkeypatch.setattr(
        estimate, "step_seconds", lambda *args, thawed=False, **kwargs: 0.5
    )  # a frozen step: half a second
    synthetic.make_archive(tmp_path / "train.zip", per_class=100, size=40)
    data = {"source": str(tmp_path / "train.zip"), "image_size": 64}
    cached, plain = (
        recipes.load(
            REPO / "params.yaml",
            {
                "model": "efficientnet_lite0",
                "data": data,
                "train": {"batch_size": 16},
                "models": {"efficientnet_lite0": {"precompute": p}},
            },
        )
        for p in (True, False)
    )
    cpu = Compute(torch.device("cpu"))
    # 160 training photos (10 steps of 16) and 20 validation photos (2 batches), 3 epochs: the features
    # of each training photo and its mirror image and of each validation photo, once: 2 × 10 + 2 frozen steps;
    # without precompute, each epoch's 10 steps and a third of a step per validation batch
    assert check.training_estimate(cached, cpu)[0] == pytest.approx(0.5 * (2 * 10 + 2))
    assert check.training_estimate(plain, cpu)[0] == pytest.approx(0.5 * 3 * (10 + 2 / 3))
