"""Stage `evaluate`: each trained model on the test split, every figure through scikit-learn.

Writes metrics/<model>.json (DVC metrics: `dvc metrics show|diff`), and per model the plot data
plots/confusion/<model>.csv (one `actual,predicted` row per test image), plots/roc/<model>.csv, and
two pictures: plots/images/confusion/<model>.png (counts and row-normalised) and
plots/images/most_wrong/<model>.png (the test images it gets most confidently wrong).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
from sklearn import metrics as skm

from pipeline import atomic, checkpoint, cli, figures, params, runtime
from pipeline.data import load_split
from pipeline.errors import StageError
from pipeline.files import CLASSES, csv_text, images_file

Z95 = 1.959964  # two-sided 95% normal quantile


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% confidence interval of an accuracy measured on n images (Wilson score: sound near 0 and 1)."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def test_metrics(labels: np.ndarray, proba: np.ndarray) -> dict:
    """The binary-classification figures for labels (N,) and class probabilities (N, 2)."""
    predicted = proba.argmax(1)
    classes = list(range(len(CLASSES)))
    precision, recall, f1, _ = skm.precision_recall_fscore_support(labels, predicted, labels=classes, zero_division=0)
    confusion = skm.confusion_matrix(labels, predicted, labels=classes)  # rows: actual, columns: predicted
    accuracy = skm.accuracy_score(labels, predicted)
    low, high = wilson_interval(int(np.trace(confusion)), len(labels))
    both = len(np.unique(labels)) == len(classes)
    return {
        "images": int(len(labels)),
        "accuracy": float(accuracy),
        "accuracy_ci95": [low, high],
        "balanced_accuracy": float(skm.balanced_accuracy_score(labels, predicted)) if both else None,
        "precision": {c: float(precision[i]) for i, c in enumerate(CLASSES)},
        "recall": {c: float(recall[i]) for i, c in enumerate(CLASSES)},
        "f1": {c: float(f1[i]) for i, c in enumerate(CLASSES)},
        "f1_macro": float(f1.mean()),
        "roc_auc": float(skm.roc_auc_score(labels, proba[:, 1])) if both else None,
        "log_loss": float(skm.log_loss(labels, proba, labels=classes)),
        "confusion": {a: {p: int(confusion[i, j]) for j, p in enumerate(CLASSES)} for i, a in enumerate(CLASSES)},
    }


def evaluate_model(model_path: Path, test, batch_size: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """(metrics, labels, probabilities) of one checkpoint on the test split."""
    model, meta = checkpoint.load(model_path, test.device)
    runtime.synchronize(test.device)
    start = time.perf_counter()
    proba = runtime.predict(model, test, batch_size).numpy()
    seconds = time.perf_counter() - start
    labels = test.labels.cpu().numpy()
    result = {
        "model": meta["name"],
        "test": test_metrics(labels, proba),
        "val": meta["val"],
        "train": {k: meta[k] for k in ("epochs", "kept_epoch", "seconds", "images_per_second")},
        "inference_images_per_second": len(labels) / seconds,
        "parameters": meta["parameters"],
        "trainable_parameters": meta["trainable_parameters"],
        "image_size": meta["image_size"],
        "device": meta["device"],
    }
    return result, labels, proba


def write_plots(plots: Path, name: str, labels: np.ndarray, proba: np.ndarray) -> None:
    predicted = proba.argmax(1)
    rows = [(CLASSES[a], CLASSES[p]) for a, p in zip(labels, predicted)]
    atomic.write_text(plots / "confusion" / f"{name}.csv", csv_text(["actual", "predicted"], rows))
    fpr, tpr, _ = skm.roc_curve(labels, proba[:, 1], pos_label=1)
    atomic.write_text(plots / "roc" / f"{name}.csv", csv_text(["fpr", "tpr"], zip(fpr.round(6), tpr.round(6))))


def write_images(folder: Path, name: str, images: np.ndarray, labels: np.ndarray, proba: np.ndarray) -> None:
    """The confusion matrix and the most-confidently-wrong grid of one model, as PNG files.
    `images` is the (N, 3, S, S) uint8 test split (memory-mapped: only the wrong ones are read)."""
    accuracy = float((proba.argmax(1) == labels).mean())
    title = f"{name}: test accuracy {accuracy:.3f} on {len(labels)} images"
    figures.save_png(figures.confusion_figure(labels, proba.argmax(1), title=title), folder / "confusion" / f"{name}.png")
    wrong = figures.most_wrong(labels, proba)
    grid = figures.most_wrong_figure(images, labels, proba, wrong, title=f"{name}: the most confidently wrong")
    figures.save_png(grid, folder / "most_wrong" / f"{name}.png")


def main() -> None:
    parser = cli.parser(__spec__.name, __doc__)
    parser.add_argument("--data", type=Path, required=True, help="preprocessed tensors")
    parser.add_argument("--models", type=Path, required=True, help="trained models")
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--plots", type=Path, required=True)
    args = parser.parse_args()
    p = params.load()
    device = runtime.choose_device(p.runtime.device)
    test = load_split(args.data, "test", device)
    pictures = np.load(images_file(args.data, "test"), mmap_mode="r")  # on the host, wherever `test` is
    for name in p.model_names:
        path = args.models / f"{name}.pt"
        if not path.exists():
            raise StageError(f"{path} is missing: run the train stage first (dvc repro)")
        result, labels, proba = evaluate_model(path, test, p.train.batch_size)
        atomic.write_json(args.metrics / f"{name}.json", result)
        write_plots(args.plots, name, labels, proba)
        write_images(args.plots / "images", name, pictures, labels, proba)
        t = result["test"]
        print(f"evaluate: {name:>12s} test accuracy {t['accuracy']:.3f} "
              f"[{t['accuracy_ci95'][0]:.3f}, {t['accuracy_ci95'][1]:.3f}] AUC {t['roc_auc'] or float('nan'):.3f}")


if __name__ == "__main__":
    cli.run(main)
