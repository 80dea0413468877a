"""The leaderboard: sorted by test accuracy, every model listed, intervals shown; its chart and the
training curves it reads back from DVCLive's files."""

import json

from PIL import Image

from pipeline.report import leaderboard, read_curves, report
from tests.helpers import fake_run, result


def test_rows_are_sorted_by_accuracy_then_log_loss():
    rows = leaderboard([result("nin", 0.7, 0.6), result("resnet18", 0.9, 0.3), result("vgg11", 0.7, 0.5)])
    assert [(r["rank"], r["model"]) for r in rows] == [(1, "resnet18"), (2, "vgg11"), (3, "nin")]


def test_markdown_json_chart_and_page_list_every_model(tmp_path):
    live, plots = fake_run(tmp_path, ["alexnet", "resnet50"])
    results = [result("alexnet", 0.61, 0.66, (0.51, 0.70)), result("resnet50", 0.97, 0.1, (0.93, 0.99), seconds=4000)]
    rows = report(results, tmp_path / "reports", live=live, plots=plots)
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


def test_curves_are_read_back_per_model_per_epoch_counted_from_one(tmp_path):
    live, _ = fake_run(tmp_path, ["resnet18", "nin"], epochs=3)
    curves = read_curves(live)
    assert set(curves) == {"resnet18", "nin"}
    assert set(curves["nin"]) == {"train_loss", "val_loss", "train_accuracy", "val_accuracy", "lr"}
    assert curves["nin"]["val_loss"] == ([1, 2, 3], [2.1, 2.2, 2.3])  # CURVES[2], epochs 1-3
    assert curves["resnet18"]["lr"] == ([1, 2, 3], [4.1, 4.2, 4.3])
