"""The leaderboard: sorted by test accuracy, every model listed, intervals shown."""

import json

from pipeline.report import leaderboard, report


def result(model, accuracy, log_loss, ci=(0.0, 1.0)):
    return {
        "model": model,
        "test": {"accuracy": accuracy, "accuracy_ci95": list(ci), "f1_macro": accuracy, "roc_auc": 0.9, "log_loss": log_loss, "images": 100},
        "train": {"seconds": 90.0, "images_per_second": 123.4, "epochs": 2, "best_epoch": 2},
        "inference_images_per_second": 999.0,
        "parameters": 11_177_538,
        "trainable_parameters": 11_177_538,
        "image_size": 96,
        "device": "cpu (2 threads)",
    }


def test_rows_are_sorted_by_accuracy_then_log_loss():
    rows = leaderboard([result("nin", 0.7, 0.6), result("resnet18", 0.9, 0.3), result("vgg11", 0.7, 0.5)])
    assert [(r["rank"], r["model"]) for r in rows] == [(1, "resnet18"), (2, "vgg11"), (3, "nin")]


def test_markdown_and_json_list_every_model(tmp_path):
    rows = report([result("alexnet", 0.61, 0.66, (0.51, 0.70)), result("resnet50", 0.97, 0.1, (0.93, 0.99))], tmp_path)
    md = (tmp_path / "leaderboard.md").read_text()
    assert md.index("| 1 | resnet50 | 0.970 (0.930–0.990)") < md.index("| 2 | alexnet | 0.610 (0.510–0.700)")
    assert "100 test images at 96 px" in md and "| 1 min 30 s |" in md
    board = json.loads((tmp_path / "leaderboard.json").read_text())
    assert board["best"] == "resnet50" and [r["model"] for r in board["models"]] == ["resnet50", "alexnet"]
    assert rows[0]["train_images_per_second"] == 123.4
