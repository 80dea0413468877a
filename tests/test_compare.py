"""Paired comparisons (pipeline.compare, evaluation.metrics.paired): McNemar's exact test against
hand-computed binomial sums, the paired interval, and the table of experiments."""

import math

import pytest

from pipeline import compare
from pipeline.common.errors import StageError
from pipeline.evaluation.metrics import paired
from tests.helpers import result


def test_mcnemar_is_the_exact_binomial_test_of_the_discordant_photos():
    # 12 photos only A gets right... no: 10 only A, 2 only B, 88 both or neither
    a = [True] * 10 + [False] * 2 + [True] * 50 + [False] * 38
    b = [False] * 10 + [True] * 2 + [True] * 50 + [False] * 38
    found = paired(a, b)
    assert (found["a_only"], found["b_only"], found["images"]) == (10, 2, 100)
    assert found["p_value"] == pytest.approx(2 * (1 + 12 + 66) / 2**12)  # 2 · P(X ≤ 2), X ~ Binomial(12, ½)
    assert found["difference"] == pytest.approx(0.08)
    half = 1.959964 * math.sqrt(12 - 8**2 / 100) / 100
    assert found["difference_ci95"] == pytest.approx([0.08 - half, 0.08 + half])
    same = paired(a, a)
    assert (same["p_value"], same["difference"], same["difference_ci95"]) == (1.0, 0.0, [0.0, 0.0])
    assert paired([True, False], [False, True])["p_value"] == pytest.approx(1.0)  # one each way: no evidence


def with_predictions(name, predicted, labels, seconds=60.0):
    r = result(name, sum(p == y for p, y in zip(predicted, labels)) / len(labels), 0.4, seconds=seconds)
    return r | {"predicted": predicted, "labels": labels}


def test_every_experiment_is_compared_with_the_first_on_the_same_photos():
    labels = [0, 1] * 10
    base = with_predictions("m", labels, labels)  # all 20 right
    worse = with_predictions(
        "m", [1 - y if i < 6 else y for i, y in enumerate(labels)], labels, seconds=120.0
    )  # 6 wrong
    rows = compare.compare(["baseline", "mistake"], [base, worse])
    assert rows[0]["versus_first"] is None
    v = rows[1]["versus_first"]
    assert (v["a_only"], v["b_only"], v["difference"]) == (0, 6, -0.3) and v["p_value"] == pytest.approx(2 / 2**6)
    text = compare.table(rows)
    assert "| mistake | 0.700 (" in text and "| -0.300 (" in text and "| 0 / 6 |" in text and "| 1 min 00 s |" in text
    with pytest.raises(StageError, match="not evaluated on the same test photos"):
        compare.compare(["a", "b"], [base, with_predictions("m", labels[:-2] + [0, 0], labels[:-2] + [0, 0])])
