"""Evaluation figures against values worked out by hand on a fixed set of ten predictions."""

import csv
import math

import numpy as np
import pytest

from pipeline.evaluate import test_metrics as metrics_of
from pipeline.evaluate import wilson_interval, write_plots

# Ten test images: 4 cats (label 0), 6 dogs (label 1), and each one's predicted P(dog).
LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
P_DOG = np.array([0.1, 0.3, 0.6, 0.2, 0.9, 0.8, 0.4, 0.7, 0.95, 0.55])
PROBA = np.stack([1 - P_DOG, P_DOG], axis=1)
# Predicted dog when P(dog) > 0.5: cats → cat, cat, DOG, cat; dogs → dog, dog, CAT, dog, dog, dog.
# Confusion (rows actual, columns predicted): cat [3, 1], dog [1, 5].


def test_binary_metrics_match_the_hand_computed_values():
    m = metrics_of(LABELS, PROBA)
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


def test_confusion_plot_data_has_one_actual_predicted_row_per_image(tmp_path):
    write_plots(tmp_path, "alexnet", LABELS, PROBA)
    with open(tmp_path / "confusion" / "alexnet.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10
    assert rows[2] == {"actual": "cat", "predicted": "dog"} and rows[6] == {"actual": "dog", "predicted": "cat"}
    with open(tmp_path / "roc" / "alexnet.csv", newline="") as f:
        roc = [(float(r["fpr"]), float(r["tpr"])) for r in csv.DictReader(f)]
    assert roc[0] == (0.0, 0.0) and roc[-1] == (1.0, 1.0)
