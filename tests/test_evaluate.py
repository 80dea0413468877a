"""Evaluation figures against values worked out by hand on a fixed set of ten predictions."""

import math

import numpy as np
import pytest
from PIL import Image

from pipeline.data.images import DOGS_VS_CATS
from pipeline.evaluate import write_images
from pipeline.evaluation import pictures
from pipeline.evaluation.metrics import classification_metrics as metrics_of
from pipeline.evaluation.metrics import confusion_rows, roc_rows, wilson_interval
from pipeline.evaluation.results import tracked
from tests.helpers import result

# Ten test images: 4 cats (label 0), 6 dogs (label 1), and each one's predicted P(dog).
LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
P_DOG = np.array([0.1, 0.3, 0.6, 0.2, 0.9, 0.8, 0.4, 0.7, 0.95, 0.55])
PROBA = np.stack([1 - P_DOG, P_DOG], axis=1)
# Predicted dog when P(dog) > 0.5: cats → cat, cat, DOG, cat; dogs → dog, dog, CAT, dog, dog, dog.
# Confusion (rows actual, columns predicted): cat [3, 1], dog [1, 5].


def test_binary_metrics_match_the_hand_computed_values():
    m = metrics_of(LABELS, PROBA, DOGS_VS_CATS)
    assert m["confusion"] == {"cat": {"cat": 3, "dog": 1}, "dog": {"cat": 1, "dog": 5}}
    assert m["images"] == 10
    assert m["accuracy"] == pytest.approx(8 / 10)
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 5 / 6) / 2)
    assert m["precision"] == pytest.approx({"cat": 3 / 4, "dog": 5 / 6})  # of 4 called cat, 3 were
    assert m["recall"] == pytest.approx({"cat": 3 / 4, "dog": 5 / 6})
    f1_cat, f1_dog = 3 / 4, 5 / 6  # precision == recall, so F1 equals them
    assert m["f1"] == pytest.approx({"cat": f1_cat, "dog": f1_dog})
    assert m["f1_macro"] == pytest.approx((f1_cat + f1_dog) / 2)
    # AUC: of the 4 × 6 (cat, dog) pairs, those where the dog scores higher. Cats score 0.1, 0.3,
    # 0.6, 0.2; every dog beats 0.1, 0.2, 0.3 (18 pairs); above 0.6 are 0.9, 0.8, 0.7, 0.95 (4 more).
    assert m["roc_auc"] == pytest.approx(22 / 24)
    # log loss: mean of -ln P(true class)
    p_true = [0.9, 0.7, 0.4, 0.8, 0.9, 0.8, 0.4, 0.7, 0.95, 0.55]
    assert m["log_loss"] == pytest.approx(-sum(math.log(p) for p in p_true) / 10)
    low, high = m["accuracy_ci95"]
    assert low < 0.8 < high


def test_wilson_interval_matches_the_textbook_figures():
    # 8 of 10: p = 0.8, z = 1.96 → centre (0.8 + z²/20) / (1 + z²/10), half-width z·0.16 / (1 + z²/10)
    low, high = wilson_interval(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)
    # 2,500 test images at 95%: the interval is about ±1.6 points, so a 1-point gap is noise
    low, high = wilson_interval(2375, 2500)
    assert high - low == pytest.approx(0.0171, abs=5e-4)


def test_plot_tables_hold_the_counts_and_the_roc_curve_of_each_model():
    assert confusion_rows("alexnet", LABELS, PROBA, DOGS_VS_CATS) == [
        ("alexnet", "cat", "cat", 3),
        ("alexnet", "cat", "dog", 1),
        ("alexnet", "dog", "cat", 1),
        ("alexnet", "dog", "dog", 5),
    ]
    roc = roc_rows("nin", LABELS, PROBA)
    assert {r[0] for r in roc} == {"nin"}
    assert roc[0][1:] == (0.0, 0.0) and roc[-1][1:] == (1.0, 1.0)
    # by hand: the threshold 0.6 (the highest-scoring cat) has 4 of 6 dogs above or at it, 1 of 4 cats
    assert ("nin", 0.25, round(4 / 6, 6)) in roc
    assert all(a[1] <= b[1] and a[2] <= b[2] for a, b in zip(roc, roc[1:]))  # a curve: never back


def test_tracked_metrics_are_short_numeric_keys_by_figure_then_model_and_the_best_last():
    a, b = result("alexnet", 0.61, 0.66), result("resnet18", 0.9, 0.3)
    b["test"]["roc_auc"] = None  # a one-class test split has no ROC AUC: left out, not null
    table = tracked([a, b])
    assert list(table) == ["acc", "auc", "log_loss", "f1", "train_s", "img_s", "best"]
    assert table["acc"] == {"alexnet": 0.61, "resnet18": 0.9} and table["best"] == "resnet18"
    assert table["auc"] == {"alexnet": 0.9}
    assert all(
        isinstance(v, (int, float)) for key, by_model in table.items() if key != "best" for v in by_model.values()
    )
    assert tracked([result("vgg11", 0.123456789, 0.5)])["acc"] == {"vgg11": 0.1235}


def test_normalised_confusion_rows_are_each_actual_class_shares():
    counts, shares = pictures.confusion_matrices(LABELS, PROBA.argmax(1), 2)
    assert counts.tolist() == [[3, 1], [1, 5]]
    assert shares == pytest.approx(np.array([[3 / 4, 1 / 4], [1 / 6, 5 / 6]]))
    _, no_cats = pictures.confusion_matrices(np.array([1, 1]), np.array([0, 1]), 2)
    assert no_cats.tolist() == [[0, 0], [0.5, 0.5]]  # a class with no images: zeros, not NaN
    fig = pictures.confusion_figure(LABELS, PROBA.argmax(1), DOGS_VS_CATS, title="alexnet")
    drawn = [[t.get_text() for t in ax.texts] for ax in fig.axes]
    assert drawn == [["3", "1", "1", "5"], ["0.75", "0.25", "0.17", "0.83"]]  # row by row, as in the matrix


def test_most_wrong_is_the_mistakes_by_the_wrong_class_probability_ties_in_split_order():
    labels = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    p_dog = np.array([0.9, 0.2, 0.55, 0.05, 0.3, 0.7, 0.9, 0.4])
    proba = np.stack([1 - p_dog, p_dog], axis=1)
    # wrong: #0 P(dog) .9, #1 P(cat) .8, #2 P(dog) .55, #3 P(cat) .95, #6 P(dog) .9, #7 P(cat) .6; #4, #5 right
    assert pictures.most_wrong(labels, proba).tolist() == [3, 0, 6, 1, 7, 2]
    assert pictures.most_wrong(labels, proba, limit=3).tolist() == [3, 0, 6]
    assert pictures.most_wrong(labels[4:6], proba[4:6]).tolist() == []
    many = np.zeros(40, dtype=int), np.tile([0.2, 0.8], (40, 1))  # 40 cats, all called dog
    assert len(pictures.most_wrong(*many)) == pictures.MAX_WRONG == 16


def test_images_are_pngs_of_the_documented_size_and_the_same_bytes_every_time(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (10, 3, 24, 24), dtype=np.uint8)
    write_images(tmp_path / "a", "alexnet", images, LABELS, PROBA, DOGS_VS_CATS)
    write_images(tmp_path / "b", "alexnet", images, LABELS, PROBA, DOGS_VS_CATS)
    for kind, size in (("confusion", (800, 400)), ("most_wrong", (800, 50 + 225 * 1))):  # 2 mistakes: 1 row
        path = tmp_path / "a" / kind / "alexnet.png"
        with Image.open(path) as image:
            assert (image.format, image.size) == ("PNG", size)
        assert path.read_bytes() == (tmp_path / "b" / kind / "alexnet.png").read_bytes()
    assert sorted(p.name for p in (tmp_path / "a").rglob("*")) == [
        "alexnet.png",
        "alexnet.png",
        "confusion",
        "most_wrong",
    ]
