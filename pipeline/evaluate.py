"""Stage `evaluate`: each trained model on the test split, every figure through scikit-learn.

Writes, for all the models together:
- metrics.json: the numbers compared across experiments (DVC metrics; see pipeline.results),
- plots/roc.csv (`model,fpr,tpr`) and plots/confusion.csv (`model,actual,predicted,count`): the
  data of dvc.yaml's ROC and confusion-matrix charts, every model on one chart;
and per model results/<model>.json (everything else: per-class figures, counts, intervals) and three
pictures: plots/images/confusion/<model>.png (counts and row-normalised),
plots/images/most_wrong/<model>.png (the test images it gets most confidently wrong) and
plots/images/gradcam/<model>.png (where it looks, on the same photos for every model and on its mistakes).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from sklearn import metrics as skm

from pipeline import atomic, checkpoint, cli, figures, gradcam, params, results, runtime
from pipeline.data import load_split
from pipeline.errors import StageError
from pipeline.files import CLASSES, csv_text, images_file
from pipeline.progress import Progress

Z95 = 1.959964  # two-sided 95% normal quantile
SAME_PHOTOS = 4  # Grad-CAM's first row: the first two cats and the first two dogs of the test split


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


def evaluate_model(model, meta: dict, test, batch_size: int, progress: Progress | None = None) -> tuple[dict, np.ndarray, np.ndarray]:
    """(result, labels, probabilities) of one trained model (and its model file's `meta`) on the test split."""
    runtime.synchronize(test.device)
    start = time.perf_counter()
    proba = runtime.predict(model, test, batch_size, progress=progress).numpy()
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


def roc_rows(name: str, labels: np.ndarray, proba: np.ndarray) -> list[tuple]:
    """`model,fpr,tpr` rows of one model's ROC curve (dog the positive class), from (0, 0) to (1, 1)."""
    fpr, tpr, _ = skm.roc_curve(labels, proba[:, 1], pos_label=1)
    return [(name, f, t) for f, t in zip(fpr.round(6), tpr.round(6))]


def confusion_rows(name: str, labels: np.ndarray, proba: np.ndarray) -> list[tuple]:
    """`model,actual,predicted,count` rows of one model: every pair of classes, zeros too."""
    classes = list(range(len(CLASSES)))
    counts = skm.confusion_matrix(labels, proba.argmax(1), labels=classes)
    return [(name, CLASSES[a], CLASSES[p], int(counts[a, p])) for a in classes for p in classes]


def write_images(folder: Path, name: str, images: np.ndarray, labels: np.ndarray, proba: np.ndarray) -> None:
    """The confusion matrix and the most-confidently-wrong grid of one model, as PNG files.
    `images` is the (N, 3, S, S) uint8 test split (memory-mapped: only the wrong ones are read)."""
    accuracy = float((proba.argmax(1) == labels).mean())
    title = f"{name}: test accuracy {accuracy:.3f} on {len(labels)} images"
    figures.save_png(figures.confusion_figure(labels, proba.argmax(1), title=title), folder / "confusion" / f"{name}.png")
    wrong = figures.most_wrong(labels, proba)
    grid = figures.most_wrong_figure(images, labels, proba, wrong, title=f"{name}: the most confidently wrong")
    figures.save_png(grid, folder / "most_wrong" / f"{name}.png")


def evaluate_all(names: list[str], data: Path, models: Path, *, device, batch_size: int, results_dir: Path, plots: Path) -> list[dict]:
    """Every model in `names` on the test split; returns their results in that order, having written
    results/<model>.json and the pictures of each, then the ROC and confusion tables of all."""
    test = load_split(data, "test", device)
    pictures = np.load(images_file(data, "test"), mmap_mode="r")  # on the host, wherever `test` is
    found, roc, confusion = [], [], []
    for name in names:
        path = models / f"{name}.pt"
        if not path.exists():
            raise StageError(f"{path} is missing: run the train stage first (dvc repro)")
        model, meta = checkpoint.load(path, device)
        with Progress(len(test), f"{name} test") as bar:
            result, labels, proba = evaluate_model(model, meta, test, batch_size, bar)
        atomic.write_json(results_dir / f"{name}.json", result)
        write_images(plots / "images", name, pictures, labels, proba)
        write_gradcam(plots / "images", name, model, pictures, labels, proba)
        roc += roc_rows(name, labels, proba)
        confusion += confusion_rows(name, labels, proba)
        t = result["test"]
        print(f"evaluate: {name:>12s} test accuracy {t['accuracy']:.3f} "
              f"[{t['accuracy_ci95'][0]:.3f}, {t['accuracy_ci95'][1]:.3f}] AUC {t['roc_auc'] or float('nan'):.3f}", flush=True)
        found.append(result)
    atomic.write_text(plots / "roc.csv", csv_text(["model", "fpr", "tpr"], roc))
    atomic.write_text(plots / "confusion.csv", csv_text(["model", "actual", "predicted", "count"], confusion))
    return found


def gradcam_photos(labels: np.ndarray, proba: np.ndarray, same: int = SAME_PHOTOS) -> np.ndarray:
    """Test-split indices for the Grad-CAM grid: the first `same` // 2 photos of each class (the
    same for every model, so models can be compared photo by photo), then the model's four most
    confidently wrong."""
    fixed = [i for c in range(len(CLASSES)) for i in np.flatnonzero(labels == c)[: same // len(CLASSES)]]
    wrong = [i for i in figures.most_wrong(labels, proba, limit=figures.GRID_COLUMNS) if i not in fixed]
    return np.array(fixed + wrong, dtype=int)


def write_gradcam(folder: Path, name: str, model, images: np.ndarray, labels: np.ndarray, proba: np.ndarray) -> None:
    """plots/images/gradcam/<model>.png: Grad-CAM of the predicted class over each photo of gradcam_photos."""
    chosen = gradcam_photos(labels, proba)
    device = next(model.parameters()).device
    batch = np.asarray(images[chosen])
    heat = gradcam.gradcam(model, torch.from_numpy(batch).to(device))
    pictures = [gradcam.overlay(image, h) for image, h in zip(batch, heat)]
    captions = []
    for i in chosen:
        said = int(proba[i].argmax())
        mark = "" if said == labels[i] else " (wrong)"
        captions.append(f"#{i}: a {CLASSES[labels[i]]}\nP({CLASSES[said]}) = {proba[i, said]:.2f}{mark}")
    title = f"{name}: where the evidence for the predicted class lies (Grad-CAM)\ntop row: the same photos for every model; below: its most confident mistakes"
    figures.save_png(figures.picture_grid(pictures, captions, title=title), folder / "gradcam" / f"{name}.png")


def main() -> None:
    parser = cli.parser(__spec__.name, __doc__)
    parser.add_argument("--data", type=Path, required=True, help="preprocessed tensors")
    parser.add_argument("--models", type=Path, required=True, help="trained models")
    parser.add_argument("--metrics", type=Path, required=True, help="the DVC metrics file to write")
    parser.add_argument("--results", type=Path, required=True, help="folder for each model's full results")
    parser.add_argument("--plots", type=Path, required=True)
    args = parser.parse_args()
    p = params.load()
    device = runtime.choose_device(p.runtime.device)
    found = evaluate_all(p.model_names, args.data, args.models, device=device, batch_size=p.train.batch_size,
                         results_dir=args.results, plots=args.plots)  # fmt: skip
    atomic.write_json(args.metrics, results.tracked(found))


if __name__ == "__main__":
    cli.run(main)
