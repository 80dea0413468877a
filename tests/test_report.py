"""The leaderboard: sorted by test accuracy, every model listed, intervals shown; its chart and the
training curves it reads back from DVCLive's files."""

import json
import math

import pytest
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
    assert set(curves["nin"]) == {"train_loss", "val_loss", "train_accuracy", "val_accuracy", "lr", "train_loss_spread"}
    assert curves["nin"]["val_loss"] == ([1, 2, 3], [2.1, 2.2, 2.3])  # CURVES[2], epochs 1-3
    assert curves["resnet18"]["lr"] == ([1, 2, 3], [4.1, 4.2, 4.3])


def test_each_model_is_tested_against_the_next_one_down_on_the_same_photos(tmp_path):
    # helpers.result: the first round(100 × accuracy) photos right. 0.90 against 0.70: 20 photos only
    # the first gets right and none the other way, McNemar p = 2 × 2⁻²⁰; 0.70 against 0.69: one photo, p = 1
    found = [result("vgg11", 0.70, 0.5), result("resnet18", 0.90, 0.3), result("nin", 0.69, 0.6)]
    rows = leaderboard(found)
    first, second, last = (r["versus_next"] for r in rows)
    assert (first["model"], first["a_only"], first["b_only"], first["significant"]) == ("vgg11", 20, 0, True)
    assert first["p_value"] == pytest.approx(2 * 0.5**20) and first["difference"] == pytest.approx(0.20)
    half = 1.959964 * math.sqrt(20 - 20**2 / 100) / 100  # the paired (Wald) interval on the discordant photos
    assert first["difference_ci95"] == pytest.approx([0.20 - half, 0.20 + half], abs=1e-6)
    assert (second["model"], second["a_only"], second["b_only"], second["p_value"], second["significant"]) == (
        "nin",
        1,
        0,
        1.0,
        False,
    )
    assert last is None
    live, plots = fake_run(tmp_path, ["resnet18", "vgg11", "nin"])
    report(found, tmp_path / "reports", live=live, plots=plots)
    md = (tmp_path / "reports" / "leaderboard.md").read_text()
    assert (
        "| better: +0.200 (+0.122 to +0.278), p 1.9e-06 |" in md
        and "| within noise: +0.010 (-0.010 to +0.030), p 1 |" in md
    )
    board = json.loads((tmp_path / "reports" / "leaderboard.json").read_text())
    assert [(p["a"], p["b"], p["significant"]) for p in board["pairs"]] == [
        ("resnet18", "vgg11", True),
        ("resnet18", "nin", True),
        ("vgg11", "nin", False),
    ]
    page = (tmp_path / "reports" / "index.html").read_text()
    assert "<td><b>+0.210, p 9.5e-07</b></td>" in page and "<td>-0.010, p 1</td>" in page  # resnet18 − nin; nin − vgg11


def test_the_report_reads_every_result_evaluate_wrote_and_says_when_there_is_none(tmp_path):
    from pipeline.common.errors import StageError
    from pipeline.evaluation import results

    for found in (result("vgg11", 0.70, 0.5), result("nin", 0.69, 0.6)):
        (tmp_path / f"{found['model']}.json").write_text(json.dumps(found))
    assert [r["model"] for r in results.read_all(tmp_path)] == ["nin", "vgg11"]
    with pytest.raises(StageError, match=r"no results \(<model>.json\) to report; run evaluate first"):
        results.read_all(tmp_path / "empty")


def test_mcnemars_exact_p_value_is_scipys_two_sided_binomial_test():
    from scipy.stats import binomtest

    from pipeline.evaluation.metrics import mcnemar_exact

    for a_only, b_only in [(a, n - a) for n in range(1, 41) for a in range(n + 1)] + [(300, 350), (5, 400)]:
        expected = binomtest(a_only, a_only + b_only, 0.5).pvalue
        assert mcnemar_exact(a_only, b_only) == pytest.approx(expected, rel=1e-12), (a_only, b_only)
    assert mcnemar_exact(0, 0) == 1.0  # no photo on which they differ: nothing against "as good"
    assert mcnemar_exact(10_000, 10_000) == 1.0 and mcnemar_exact(9_000, 11_000) < 1e-40  # 20,000 photos, exactly


def test_models_scored_on_other_photos_are_not_compared():
    other = result("nin", 0.69, 0.6) | {"labels": [1, 0] * 50}
    rows = leaderboard([result("resnet18", 0.90, 0.3), other])
    assert rows[0]["versus_next"] is None


def test_a_small_test_split_says_in_words_what_its_intervals_mean():
    from pipeline import report
    from pipeline.evaluation.metrics import wilson_interval
    from tests.helpers import result

    def scored(name, accuracy, n):
        r = result(name, accuracy, 0.6, ci=wilson_interval(round(accuracy * n), n))
        r["test"]["images"] = n
        return r

    small = [scored(name, acc, 40) for name, acc in (("nin", 0.5), ("resnet18", 0.7))]
    note = report.noise_note(small)
    assert note.startswith(
        "Only 40 test photos: each accuracy is known to about ±15 points, so gaps of up to 30 points"
    )
    assert note in report.summary(small)
    assert report.noise_note([scored("nin", 0.8, 4500)]) is None  # ±1.2 points: the table says enough
