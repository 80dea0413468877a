"""Stage `evaluate`: each trained model on the test split, every metric through scikit-learn.

Writes, for all the models together:
- metrics.json: the numbers compared across experiments (DVC metrics; see evaluation.results),
- plots/roc.csv (`model,fpr,tpr`) and plots/confusion.csv (`model,actual,predicted,count`): the
  data of dvc.yaml's ROC and confusion-matrix charts, every model on one chart;
and per model results/<model>.json (everything else: per-class metrics, counts, intervals) and three
pictures: plots/images/confusion/<model>.png (counts and row-normalised),
plots/images/most_wrong/<model>.png (the test images it gets most confidently wrong) and
plots/images/gradcam/<model>.png (where it looks, on the same photos for every model and on its mistakes).

Any number of classes: two (Dogs-vs-Cats, the ROC of dog against cat) or more (one-vs-rest macro
averages, top-5 accuracy from six classes up); the classes are those the model file records.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.common import atomic, cli
from pipeline.common.errors import StageError
from pipeline.common.formats import csv_text, read_json
from pipeline.common.progress import Progress, plural
from pipeline.data.layout import EXCLUDED, images_file, verdict_labels_file
from pipeline.evaluation import gradcam, mistakes, pictures, results
from pipeline.evaluation.metrics import classification_metrics, confusion_rows, roc_rows, with_verdicts
from pipeline.models import bf16_ok, modelfile
from pipeline.params import recipes
from pipeline.params.sections import EvaluateParams
from pipeline.runtime.device import Compute, resolve, synchronize
from pipeline.runtime.inference import probabilities
from pipeline.runtime.tensors import Split, load_split

# Grad-CAM's first photos: the first two cats and the first two dogs of the test split (one of each class from three
# classes up)
SAME_PHOTOS = 4


def evaluate_model(
    model,
    meta: dict,
    test: Split,
    batch_size: int,
    progress: Progress | None = None,
    compute: Compute | None = None,
    how: EvaluateParams = EvaluateParams(),
) -> tuple[dict, np.ndarray, np.ndarray]:
    """(result, labels, probabilities) of one trained model (and its model file's `meta`) on the test
    split, computed as `compute` says (default fp32), in eval mode unless `how` asks for the course's
    mistake (a) (evaluation.mistakes), with test-time augmentation if `how.tta`. The result keeps every photo's
    predicted class, in the split's
    order, for paired comparisons (pipeline.compare)."""
    compute = compute or Compute(test.device)
    synchronize(test.device)
    start = time.perf_counter()
    batch_size = how.batch_size or batch_size
    if how.eval_mode:
        proba = probabilities(model, test, batch_size, progress=progress, compute=compute, tta=how.tta).numpy()
    else:
        proba = mistakes.without_eval(model, test, batch_size, order=how.order, compute=compute, tta=how.tta).numpy()
    seconds = time.perf_counter() - start
    labels = test.labels.cpu().numpy()
    result = {
        "model": meta["name"],
        "test": classification_metrics(labels, proba, tuple(meta["classes"])),
        "val": meta["val"],
        "train": {k: meta[k] for k in ("epochs", "kept_epoch", "seconds", "images_per_second")},
        "inference_images_per_second": len(labels) / seconds,
        "inference": compute.describe(),
        "evaluation": {"eval_mode": how.eval_mode, "order": how.order, "batch_size": batch_size, "tta": how.tta},
        "parameters": meta["parameters"],
        "trainable_parameters": meta["trainable_parameters"],
        "image_size": meta["image_size"],
        "channels": meta["channels"],
        "classes": list(meta["classes"]),
        "device": meta["device"],
        "labels": labels.tolist(),  # each test photo's class, in the split's order
        "predicted": proba.argmax(1).tolist(),  # and what the model said
    }
    return result, labels, proba


def write_images(
    folder: Path, name: str, images: np.ndarray, labels: np.ndarray, proba: np.ndarray, classes: tuple[str, ...]
) -> None:
    """The confusion matrix and the most-confidently-wrong grid of one model, as PNG files.
    `images` is the (N, C, S, S) uint8 test split (memory-mapped: only the wrong ones are read)."""
    accuracy = float((proba.argmax(1) == labels).mean())
    title = f"{name}: test accuracy {accuracy:.3f} on {len(labels)} images"
    confusion = pictures.confusion_figure(labels, proba.argmax(1), classes, title=title)
    pictures.save_png(confusion, folder / "confusion" / f"{name}.png")
    wrong = pictures.most_wrong(labels, proba)
    grid = pictures.most_wrong_figure(
        images, labels, proba, wrong, classes, title=f"{name}: the most confidently wrong"
    )
    pictures.save_png(grid, folder / "most_wrong" / f"{name}.png")


def gradcam_photos(labels: np.ndarray, proba: np.ndarray, same: int = SAME_PHOTOS) -> np.ndarray:
    """Test-split indices for the Grad-CAM grid: the first `same` // K photos of each of the K classes,
    one at least (the same for every model, so models can be compared photo by photo), then the
    model's four most confidently wrong."""
    k = proba.shape[1]
    fixed = [i for c in range(k) for i in np.flatnonzero(labels == c)[: max(1, same // k)]]
    wrong = [i for i in pictures.most_wrong(labels, proba, limit=pictures.GRID_COLUMNS) if i not in fixed]
    return np.array(fixed + wrong, dtype=int)


def write_gradcam(
    folder: Path, name: str, model, images: np.ndarray, labels: np.ndarray, proba: np.ndarray, classes: tuple[str, ...]
) -> None:
    """plots/images/gradcam/<model>.png: Grad-CAM of the predicted class over each photo of gradcam_photos."""
    chosen = gradcam_photos(labels, proba)
    device = next(model.parameters()).device
    batch = np.asarray(images[chosen])
    heat = gradcam.gradcam(model, torch.from_numpy(batch).to(device))
    overlays = [gradcam.overlay(image, h) for image, h in zip(batch, heat)]
    captions = []
    for i in chosen:
        said = int(proba[i].argmax())
        mark = "" if said == labels[i] else " (wrong)"
        captions.append(f"#{i}: a {classes[labels[i]]}\nP({classes[said]}) = {proba[i, said]:.2f}{mark}")
    first, then = (
        ("top row", "below") if len(classes) <= pictures.GRID_COLUMNS else ("first, one of each class", "then")
    )
    title = (
        f"{name}: where the evidence for the predicted class lies (Grad-CAM)\n{first}: the same photos for every "
        f"model; {then}: its most confident mistakes"
    )
    pictures.save_png(pictures.picture_grid(overlays, captions, title=title), folder / "gradcam" / f"{name}.png")


def evaluate_all(
    names: list[str],
    data: Path,
    models: Path,
    *,
    compute: Compute,
    batch_size: int,
    results_dir: Path,
    plots: Path,
    how: EvaluateParams = EvaluateParams(),
    recipes_now: dict[str, dict] | None = None,
) -> list[dict]:
    """Every model in `names` on the test split; returns their results in that order, having written
    results/<model>.json and the pictures of each, then the ROC and confusion tables of all.
    `recipes_now`: each model's training recipe as params.yaml gives it now (asdict of its
    TrainParams); a model file trained with another is refused (see trained_with_other)."""
    device = compute.device
    test = load_split(data, "test", device)
    photos = np.load(images_file(data, "test"), mmap_mode="r")  # on the host, wherever `test` is
    data_meta = read_json(data / "meta.json")
    data_classes = len(data_meta["classes"])
    after = (
        np.load(verdict_labels_file(data)) if verdict_labels_file(data).exists() else np.asarray(test.labels.cpu())
    )  # arrays from before verdicts: none
    found, roc, confusion = [], [], []
    for name in names:
        path = models / f"{name}.pt"
        if not path.exists():
            raise StageError(f"{path} is missing: run the train stage first (dvc repro)")
        model, meta = modelfile.load(path, device, compute.format)
        if recipes_now and (changed := trained_with_other(meta.get("train") or {}, recipes_now[name])):
            raise StageError(
                f"{path} was trained with {changed}: params.yaml changed after the train stage ran (another "
                f"`dvc exp run` in this workspace?). Run experiments one at a time, or queue them (dvc exp run --queue)"
            )
        model_compute = compute.for_model(name, bf16_ok(name))  # as it trained: GoogLeNet keeps fp32 under auto
        classes = tuple(meta["classes"])
        if len(classes) != data_classes or meta["channels"] != photos.shape[1]:
            raise StageError(
                f"{path} classifies {len(classes)} classes of {meta['channels']}-channel images, and the test split "
                f"has {data_classes} classes of {photos.shape[1]}: train it again on this data (dvc repro)"
            )
        with Progress(len(test), f"{name} test") as bar:
            result, labels, proba = evaluate_model(model, meta, test, batch_size, bar, model_compute, how)
        result["verdicts"] = data_meta.get("verdicts")  # which verdicts the data took (data.verdicts)
        if (clean := with_verdicts(labels, after, proba, classes, EXCLUDED)) is not None:
            result["test_verdicts"] = clean
        atomic.write_json(results_dir / f"{name}.json", result)
        write_images(plots / "images", name, photos, labels, proba, classes)
        write_gradcam(plots / "images", name, model, photos, labels, proba, classes)
        roc += roc_rows(name, labels, proba)
        confusion += confusion_rows(name, labels, proba, classes)
        t = result["test"]
        print(
            f"evaluate: {name:>12s} test accuracy {t['accuracy']:.3f} "
            f"[{t['accuracy_ci95'][0]:.3f}, {t['accuracy_ci95'][1]:.3f}] AUC {t['roc_auc'] or float('nan'):.3f}",
            flush=True,
        )
        if clean is not None:
            print(
                f"evaluate: {name:>12s} with the verdicts ({plural(clean['excluded'], 'test photo')} excluded, "
                f"{clean['relabelled']} relabelled): "
                f"{clean['accuracy']:.3f} [{clean['accuracy_ci95'][0]:.3f}, {clean['accuracy_ci95'][1]:.3f}]; "
                f"{clean['errors_explained']} of its {clean['errors_as_given']} errors explained",
                flush=True,
            )
        found.append(result)
    atomic.write_text(plots / "roc.csv", csv_text(["model", "fpr", "tpr"], roc))
    atomic.write_text(plots / "confusion.csv", csv_text(["model", "actual", "predicted", "count"], confusion))
    return found


def trained_with_other(trained: dict, now: dict) -> str:
    """'train.seed = 0, and params.yaml says 1' for the first key the two recipes both hold and
    disagree on; "" when they agree."""
    for key in sorted(trained.keys() & now.keys()):
        old, new = (list(v) if isinstance(v, tuple) else v for v in (trained[key], now[key]))
        if old != new:
            return f"train.{key} = {old!r}, and params.yaml says {new!r}"
    return ""


def main() -> None:
    parser = cli.parser(__spec__.name, __doc__)
    parser.add_argument("--data", type=Path, required=True, help="preprocessed tensors")
    parser.add_argument("--models", type=Path, required=True, help="trained models")
    parser.add_argument("--metrics", type=Path, required=True, help="the DVC metrics file to write")
    parser.add_argument("--results", type=Path, required=True, help="folder for each model's full results")
    parser.add_argument("--plots", type=Path, required=True)
    args = parser.parse_args()
    p = recipes.load()
    compute = resolve(p.runtime)
    found = evaluate_all(
        p.model_names,
        args.data,
        args.models,
        compute=compute,
        batch_size=p.train.batch_size,
        results_dir=args.results,
        plots=args.plots,
        how=p.evaluate,
        recipes_now={spec.name: dataclasses.asdict(spec.train) for spec in p.models},
    )
    recipes.unchanged(p, "evaluate")  # the metrics must be those of the params DVC will record
    atomic.write_json(args.metrics, results.tracked(found))


if __name__ == "__main__":
    cli.run(main)
