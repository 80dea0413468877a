"""The leaderboard: sorted by test accuracy, every model listed, intervals shown; its chart and the
training curves it reads back from DVCLive's files."""

import json
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.evaluate import write_images
from pipeline.report import CURVES, leaderboard, read_curves, report


def result(model, accuracy, log_loss, ci=(0.0, 1.0), seconds=90.0):
    return {
        "model": model,
        "test": {
            "images": 100, "accuracy": accuracy, "accuracy_ci95": list(ci), "balanced_accuracy": accuracy,
            "precision": {"cat": 0.8, "dog": 0.7}, "recall": {"cat": 0.75, "dog": 0.72}, "f1": {"cat": 0.77, "dog": 0.71},
            "f1_macro": accuracy, "roc_auc": 0.9, "log_loss": log_loss,
        },
        "val": {"loss": 0.5, "accuracy": 0.8},
        "train": {"seconds": seconds, "images_per_second": 123.4, "epochs": 2, "kept_epoch": 2},
        "inference_images_per_second": 999.0,
        "parameters": 11_177_538,
        "trainable_parameters": 11_177_538,
        "image_size": 96,
        "device": "cpu (2 threads)",
    }  # fmt: skip


def fake_run(root: Path, names: list[str], epochs: int = 3) -> tuple[Path, Path]:
    """What train and evaluate leave for the report: DVCLive TSVs per model (epoch e's value is
    e / 10 + the metric's position in CURVES) and each model's pictures. Returns (live, images)."""
    live, images = root / "dvclive", root / "plots" / "images"
    rng = np.random.default_rng(0)
    labels = np.array([0, 0, 1, 1])
    p_dog = np.array([0.2, 0.9, 0.6, 0.3])
    for name in names:
        for k, metric in enumerate(CURVES):
            path = live / "plots" / "metrics" / name / f"{metric}.tsv"
            path.parent.mkdir(parents=True, exist_ok=True)
            rows = "".join(f"{step}\t{k + step / 10}\n" for step in range(epochs))
            path.write_text(f"step\t{metric.split('/')[-1]}\n{rows}")
        pictures = rng.integers(0, 256, (4, 3, 16, 16), dtype=np.uint8)
        write_images(images, name, pictures, labels, np.stack([1 - p_dog, p_dog], axis=1))
    return live, images


def test_rows_are_sorted_by_accuracy_then_log_loss():
    rows = leaderboard([result("nin", 0.7, 0.6), result("resnet18", 0.9, 0.3), result("vgg11", 0.7, 0.5)])
    assert [(r["rank"], r["model"]) for r in rows] == [(1, "resnet18"), (2, "vgg11"), (3, "nin")]


def test_markdown_json_chart_and_page_list_every_model(tmp_path):
    live, images = fake_run(tmp_path, ["alexnet", "resnet50"])
    results = [result("alexnet", 0.61, 0.66, (0.51, 0.70)), result("resnet50", 0.97, 0.1, (0.93, 0.99), seconds=4000)]
    rows = report(results, tmp_path / "reports", live=live, images=images)
    md = (tmp_path / "reports" / "leaderboard.md").read_text()
    assert md.index("| 1 | resnet50 | 0.970 (0.930–0.990)") < md.index("| 2 | alexnet | 0.610 (0.510–0.700)")
    assert "100 test images at 96 px" in md and "| 1 min 30 s |" in md
    board = json.loads((tmp_path / "reports" / "leaderboard.json").read_text())
    assert board["best"] == "resnet50" and [r["model"] for r in board["models"]] == ["resnet50", "alexnet"]
    assert rows[0]["train_images_per_second"] == 123.4
    with Image.open(tmp_path / "reports" / "accuracy_vs_time.png") as chart:
        assert (chart.format, chart.size) == ("PNG", (800, 500))
    page = (tmp_path / "reports" / "index.html").read_text()
    assert page.index('<section id="resnet50">') < page.index('<section id="alexnet">')


def test_curves_are_read_back_per_epoch_counted_from_one(tmp_path):
    live, _ = fake_run(tmp_path, ["resnet18"], epochs=3)
    curves = read_curves(live, "resnet18")
    assert set(curves) == {"train/loss", "val/loss", "train/accuracy", "val/accuracy", "lr"}
    assert curves["val/loss"] == ([1, 2, 3], [1.0, 1.1, 1.2])  # CURVES[1], steps 0-2
    assert curves["lr"] == ([1, 2, 3], [4.0, 4.1, 4.2])
