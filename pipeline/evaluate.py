"""Stage `evaluate`: each trained model on the test split, every figure through scikit-learn.

Writes, for all the models together:
- metrics.json: the numbers compared across experiments (DVC metrics; see pipeline.results),
- plots/roc.csv (`model,fpr,tpr`) and plots/confusion.csv (`model,actual,predicted,count`): the
  data of dvc.yaml's ROC and confusion-matrix charts, every model on one chart;
and per model results/<model>.json (everything else: per-class figures, counts, intervals) and three
pictures: plots/images/confusion/<model>.png (counts and row-normalised),
plots/images/most_wrong/<model>.png (the test images it gets most confidently wrong) and
plots/images/gradcam/<model>.png (where it looks, on the same photos for every model and on its mistakes).

Any number of classes: two (Dogs-vs-Cats, the ROC of dog against cat) or more (one-vs-rest macro
averages, top-5 accuracy from six classes up); the classes are those the model file records.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from sklearn import metrics as skm

from pipeline import atomic, checkpoint, cli, figures, files, gradcam, params, results, runtime
from pipeline.data import load_split
from pipeline.errors import StageError
from pipeline.files import DOGS_VS_CATS, csv_text, images_file
from pipeline.progress import Progress

Z95 = 1.959964  # two-sided 95% normal quantile
SAME_PHOTOS = 4  # Grad-CAM's first photos: the first two cats and the first two dogs of the test split (one of each class from three classes up)
TOP_K = 5  # top-5 accuracy, reported when there are more classes than that


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% confidence interval of an accuracy measured on n images (Wilson score: sound near 0 and 1)."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def test_metrics(labels: np.ndarray, proba: np.ndarray, classes: tuple[str, ...] = DOGS_VS_CATS) -> dict:
    """The classification figures for labels (N,) and class probabilities (N, K), K = len(classes).

    Two classes: ROC AUC of the second class (dog) against the first. More: the one-vs-rest ROC AUC
    averaged over the classes (macro), precision, recall and F1 averaged over the classes (`macro`)
    and weighted by their images (`weighted`), and from six classes up the top-5 accuracy. Figures
    that need every class in the split (balanced accuracy, ROC AUC) are None when one is missing.
    """
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
    if len(classes) > 2:  # two classes keep the figures (and the file) they always had
        for average in ("macro", "weighted"):
            p, r, f, _ = skm.precision_recall_fscore_support(labels, predicted, labels=index, average=average, zero_division=0)
            found[average] = {"precision": float(p), "recall": float(r), "f1": float(f)}
    if len(classes) > TOP_K:
        found[f"top{TOP_K}_accuracy"] = float(skm.top_k_accuracy_score(labels, proba, k=TOP_K, labels=index))
    return found


def roc_auc(labels: np.ndarray, proba: np.ndarray) -> float:
    """ROC AUC: of the second class against the first for two; one-vs-rest, macro-averaged, for more."""
    if proba.shape[1] == 2:
        return float(skm.roc_auc_score(labels, proba[:, 1]))
    proba = proba.astype(np.float64)
    proba /= proba.sum(1, keepdims=True)  # float32 softmax rows sum to 1 only within ~1e-7: scikit-learn checks
    return float(skm.roc_auc_score(labels, proba, multi_class="ovr", average="macro", labels=list(range(proba.shape[1]))))


def evaluate_model(model, meta: dict, test, batch_size: int, progress: Progress | None = None) -> tuple[dict, np.ndarray, np.ndarray]:
    """(result, labels, probabilities) of one trained model (and its model file's `meta`) on the test split."""
    runtime.synchronize(test.device)
    start = time.perf_counter()
    proba = runtime.predict(model, test, batch_size, progress=progress).numpy()
    seconds = time.perf_counter() - start
    labels = test.labels.cpu().numpy()
    result = {
        "model": meta["name"],
        "test": test_metrics(labels, proba, tuple(meta["classes"])),
        "val": meta["val"],
        "train": {k: meta[k] for k in ("epochs", "kept_epoch", "seconds", "images_per_second")},
        "inference_images_per_second": len(labels) / seconds,
        "parameters": meta["parameters"],
        "trainable_parameters": meta["trainable_parameters"],
        "image_size": meta["image_size"],
        "device": meta["device"],
    }
    if tuple(meta["classes"]) != DOGS_VS_CATS or meta["channels"] != 3:  # Dogs-vs-Cats' RGB results keep their keys
        result |= {"classes": list(meta["classes"]), "channels": meta["channels"]}
    return result, labels, proba


def roc_rows(name: str, labels: np.ndarray, proba: np.ndarray) -> list[tuple]:
    """`model,fpr,tpr` rows of one model's ROC curve, from (0, 0) to (1, 1): for two classes the second
    (dog) is the positive one; for more, the macro average of the one-vs-rest curves (each class's
    true positive rate interpolated at every false positive rate any of them reaches, then averaged)."""
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
    index = list(range(len(classes)))
    counts = skm.confusion_matrix(labels, proba.argmax(1), labels=index)
    return [(name, classes[a], classes[p], int(counts[a, p])) for a in index for p in index]


def write_images(folder: Path, name: str, images: np.ndarray, labels: np.ndarray, proba: np.ndarray, classes: tuple[str, ...]) -> None:
    """The confusion matrix and the most-confidently-wrong grid of one model, as PNG files.
    `images` is the (N, C, S, S) uint8 test split (memory-mapped: only the wrong ones are read)."""
    accuracy = float((proba.argmax(1) == labels).mean())
    title = f"{name}: test accuracy {accuracy:.3f} on {len(labels)} images"
    confusion = figures.confusion_figure(labels, proba.argmax(1), classes, title=title)
    figures.save_png(confusion, folder / "confusion" / f"{name}.png")
    wrong = figures.most_wrong(labels, proba)
    grid = figures.most_wrong_figure(images, labels, proba, wrong, classes, title=f"{name}: the most confidently wrong")
    figures.save_png(grid, folder / "most_wrong" / f"{name}.png")


def evaluate_all(names: list[str], data: Path, models: Path, *, device, batch_size: int, results_dir: Path, plots: Path) -> list[dict]:
    """Every model in `names` on the test split; returns their results in that order, having written
    results/<model>.json and the pictures of each, then the ROC and confusion tables of all."""
    test = load_split(data, "test", device)
    pictures = np.load(images_file(data, "test"), mmap_mode="r")  # on the host, wherever `test` is
    data_classes = len(files.read_json(data / "meta.json").get("classes", DOGS_VS_CATS))
    found, roc, confusion = [], [], []
    for name in names:
        path = models / f"{name}.pt"
        if not path.exists():
            raise StageError(f"{path} is missing: run the train stage first (dvc repro)")
        model, meta = checkpoint.load(path, device)
        classes = tuple(meta["classes"])
        if len(classes) != data_classes or meta["channels"] != pictures.shape[1]:
            raise StageError(
                f"{path} classifies {len(classes)} classes of {meta['channels']}-channel images, and the test split "
                f"has {data_classes} classes of {pictures.shape[1]}: train it again on this data (dvc repro)"
            )
        with Progress(len(test), f"{name} test") as bar:
            result, labels, proba = evaluate_model(model, meta, test, batch_size, bar)
        atomic.write_json(results_dir / f"{name}.json", result)
        write_images(plots / "images", name, pictures, labels, proba, classes)
        write_gradcam(plots / "images", name, model, pictures, labels, proba, classes)
        roc += roc_rows(name, labels, proba)
        confusion += confusion_rows(name, labels, proba, classes)
        t = result["test"]
        print(f"evaluate: {name:>12s} test accuracy {t['accuracy']:.3f} "
              f"[{t['accuracy_ci95'][0]:.3f}, {t['accuracy_ci95'][1]:.3f}] AUC {t['roc_auc'] or float('nan'):.3f}", flush=True)
        found.append(result)
    atomic.write_text(plots / "roc.csv", csv_text(["model", "fpr", "tpr"], roc))
    atomic.write_text(plots / "confusion.csv", csv_text(["model", "actual", "predicted", "count"], confusion))
    return found


def gradcam_photos(labels: np.ndarray, proba: np.ndarray, same: int = SAME_PHOTOS) -> np.ndarray:
    """Test-split indices for the Grad-CAM grid: the first `same` // K photos of each of the K classes,
    one at least (the same for every model, so models can be compared photo by photo), then the
    model's four most confidently wrong."""
    k = proba.shape[1]
    fixed = [i for c in range(k) for i in np.flatnonzero(labels == c)[: max(1, same // k)]]
    wrong = [i for i in figures.most_wrong(labels, proba, limit=figures.GRID_COLUMNS) if i not in fixed]
    return np.array(fixed + wrong, dtype=int)


def write_gradcam(folder: Path, name: str, model, images: np.ndarray, labels: np.ndarray, proba: np.ndarray, classes: tuple[str, ...]) -> None:
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
        captions.append(f"#{i}: a {classes[labels[i]]}\nP({classes[said]}) = {proba[i, said]:.2f}{mark}")
    first, then = ("top row", "below") if len(classes) <= figures.GRID_COLUMNS else ("first, one of each class", "then")
    title = f"{name}: where the evidence for the predicted class lies (Grad-CAM)\n{first}: the same photos for every model; {then}: its most confident mistakes"
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
