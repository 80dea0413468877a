"""The classification metrics of one model on one split, every metric through scikit-learn: for
two classes (the second, dog, positive) or more (one-vs-rest macro averages, top-5 from six up).
Also the data of dvc.yaml's ROC and confusion charts, one table for every model."""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959964  # two-sided 95% normal quantile
TOP_K = 5  # top-5 accuracy, reported when there are more classes than that


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% confidence interval of an accuracy measured on n images (Wilson score: sound near 0 and 1)."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def classification_metrics(labels: np.ndarray, proba: np.ndarray, classes: tuple[str, ...]) -> dict:
    """The classification metrics for labels (N,) and class probabilities (N, K), K = len(classes).

    Two classes: ROC AUC of the second class (dog) against the first. More: the one-vs-rest ROC AUC
    averaged over the classes (macro), precision, recall and F1 averaged over the classes (`macro`)
    and weighted by their images (`weighted`), and from six classes up the top-5 accuracy. Figures
    that need every class in the split (balanced accuracy, ROC AUC) are None when one is missing.
    """
    from sklearn import metrics as skm  # here, not above: report, compare and the grid read results without it (1.2 s)

    predicted = proba.argmax(1)
    index = list(range(len(classes)))
    precision, recall, f1, _ = skm.precision_recall_fscore_support(labels, predicted, labels=index, zero_division=0)
    confusion = skm.confusion_matrix(labels, predicted, labels=index)  # rows: actual, columns: predicted
    accuracy = skm.accuracy_score(labels, predicted)
    low, high = wilson_interval(int(np.trace(confusion)), len(labels))
    every = len(np.unique(labels)) == len(classes)
    found = {
        "images": int(len(labels)),
        "accuracy": float(accuracy),
        "accuracy_ci95": [low, high],
        "balanced_accuracy": float(skm.balanced_accuracy_score(labels, predicted)) if every else None,
        "precision": {c: float(precision[i]) for i, c in enumerate(classes)},
        "recall": {c: float(recall[i]) for i, c in enumerate(classes)},
        "f1": {c: float(f1[i]) for i, c in enumerate(classes)},
        "f1_macro": float(f1.mean()),
        "roc_auc": roc_auc(labels, proba) if every else None,
        "log_loss": float(skm.log_loss(labels, proba, labels=index)),
        "confusion": {a: {p: int(confusion[i, j]) for j, p in enumerate(classes)} for i, a in enumerate(classes)},
    }
    if len(classes) > 2:  # two classes keep the metrics (and the file) they always had
        for average in ("macro", "weighted"):
            p, r, f, _ = skm.precision_recall_fscore_support(
                labels, predicted, labels=index, average=average, zero_division=0
            )
            found[average] = {"precision": float(p), "recall": float(r), "f1": float(f)}
    if len(classes) > TOP_K:
        found[f"top{TOP_K}_accuracy"] = float(skm.top_k_accuracy_score(labels, proba, k=TOP_K, labels=index))
    return found


def with_verdicts(
    labels: np.ndarray, after: np.ndarray, proba: np.ndarray, classes: tuple[str, ...], excluded: int = -1
) -> dict | None:
    """The metrics on the same test photos once the verdicts apply (`after`: each photo's label then,
    `excluded` for those taken out), or None when they change no label; with the counts of photos
    excluded and relabelled, and how many of the model's errors on the labels as given the verdicts
    explain: errors on photos excluded, or relabelled to the class the model said."""
    if np.array_equal(labels, after):
        return None
    kept = after != excluded
    found = classification_metrics(after[kept], proba[kept], classes)
    predicted = proba.argmax(1)
    wrong = predicted != labels
    found["excluded"] = int((~kept).sum())
    found["relabelled"] = int((kept & (after != labels)).sum())
    found["errors_as_given"] = int(wrong.sum())
    found["errors_explained"] = int((wrong & (~kept | (predicted == after))).sum())
    return found


def roc_auc(labels: np.ndarray, proba: np.ndarray) -> float:
    """ROC AUC: of the second class against the first for two; one-vs-rest, macro-averaged, for more."""
    from sklearn import metrics as skm

    if proba.shape[1] == 2:
        return float(skm.roc_auc_score(labels, proba[:, 1]))
    proba = proba.astype(np.float64)
    proba /= proba.sum(1, keepdims=True)  # float32 softmax rows sum to 1 only within ~1e-7: scikit-learn checks
    return float(
        skm.roc_auc_score(labels, proba, multi_class="ovr", average="macro", labels=list(range(proba.shape[1])))
    )


def roc_rows(name: str, labels: np.ndarray, proba: np.ndarray) -> list[tuple]:
    """`model,fpr,tpr` rows of one model's ROC curve, from (0, 0) to (1, 1): for two classes the second
    (dog) is the positive one; for more, the macro average of the one-vs-rest curves (each class's
    true positive rate interpolated at every false positive rate any of them reaches, then averaged)."""
    from sklearn import metrics as skm

    if proba.shape[1] == 2:
        fpr, tpr, _ = skm.roc_curve(labels, proba[:, 1], pos_label=1)
    else:
        present = [c for c in range(proba.shape[1]) if 0 < (labels == c).sum() < len(labels)]
        fpr, tpr = mean_roc([skm.roc_curve(labels == c, proba[:, c])[:2] for c in present])
    return [(name, f, t) for f, t in zip(fpr.round(6), tpr.round(6))]


def mean_roc(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The pointwise mean of ROC curves (fpr, tpr), exactly: at every false positive rate where any
    curve has a point, the mean of their lowest and of their highest true positive rates there (a
    curve rises vertically where it has several points at one rate). Its area is the mean of their areas."""
    grid = np.unique(np.concatenate([f for f, _ in curves]))
    lows, highs = zip(*(_limits(f, t, grid) for f, t in curves))
    fpr, tpr = np.repeat(grid, 2), np.stack([np.mean(lows, axis=0), np.mean(highs, axis=0)], axis=1).ravel()
    keep = np.r_[True, (np.diff(fpr) != 0) | (np.diff(tpr) != 0)]  # no point twice
    return fpr[keep], tpr[keep]


def _limits(fpr: np.ndarray, tpr: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lowest, highest) tpr of one curve at each rate of `grid` (a superset of its own rates, from 0 to
    1): its first and last point there, or between two of its rates the line from the highest point
    at the one to the lowest at the next."""
    xs, first = np.unique(fpr, return_index=True)
    last = len(fpr) - 1 - np.unique(fpr[::-1], return_index=True)[1]
    low, high = tpr[first], tpr[last]
    j = np.minimum(np.searchsorted(xs, grid), len(xs) - 1)  # the first of its rates ≥ each grid rate
    i = np.maximum(j - 1, 0)
    exact = xs[j] == grid
    between = high[i] + (grid - xs[i]) / np.where(exact, 1, xs[j] - xs[i]) * (low[j] - high[i])
    return np.where(exact, low[j], between), np.where(exact, high[j], between)


def confusion_rows(name: str, labels: np.ndarray, proba: np.ndarray, classes: tuple[str, ...]) -> list[tuple]:
    """`model,actual,predicted,count` rows of one model: every pair of classes, zeros too."""
    from sklearn import metrics as skm

    index = list(range(len(classes)))
    counts = skm.confusion_matrix(labels, proba.argmax(1), labels=index)
    return [(name, classes[a], classes[p], int(counts[a, p])) for a in index for p in index]


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """McNemar's exact two-sided p-value: under "A and B are as good", each of the n = a_only + b_only
    discordant photos is A's alone with probability 1/2, so a_only ~ Binomial(n, 1/2), symmetric, and
    p = 2 P(X <= min(a_only, b_only)), at most 1 (scipy.stats.binomtest(a_only, n, 0.5) gives the same:
    tests/test_report.py; computed here in exact integers, as importing scipy.stats takes 1.2 s)."""
    n = a_only + b_only
    term = tail = 1  # C(n, 0); then C(n, i + 1) = C(n, i) (n - i) / (i + 1), exactly
    for i in range(min(a_only, b_only)):
        term = term * (n - i) // (i + 1)
        tail += term
    return min(1.0, 2 * tail / 2**n)  # int / int: correctly rounded, however large


def paired(a_correct: np.ndarray, b_correct: np.ndarray, z: float = Z95) -> dict:
    """A against B on the same photos (two boolean arrays, True where each is right): the accuracy
    difference A − B with its paired 95% interval (Wald, on the discordant pairs), the discordant
    counts, and McNemar's exact test of them (two-sided binomial test of a_only among a_only + b_only)."""
    a_correct, b_correct = np.asarray(a_correct, bool), np.asarray(b_correct, bool)
    n = len(a_correct)
    a_only, b_only = int((a_correct & ~b_correct).sum()), int((~a_correct & b_correct).sum())
    difference = (a_only - b_only) / n
    half = z * math.sqrt(max(0.0, a_only + b_only - (a_only - b_only) ** 2 / n)) / n
    p = mcnemar_exact(a_only, b_only)
    return {
        "images": n,
        "difference": difference,
        "difference_ci95": [difference - half, difference + half],
        "a_only": a_only,
        "b_only": b_only,
        "p_value": float(p),
    }
