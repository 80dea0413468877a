"""What evaluating the models yields, in the two shapes people read it in.

- results/<model>.json: everything about one model (plain JSON: per-class metrics, confusion
  counts, intervals, balanced accuracy, the epoch kept, the device), read by the report.
- metrics.json: the few numbers people compare across experiments, tracked by DVC as metrics,
  laid out by metric, then model (`acc.resnet18`), so that `dvc exp show`'s first columns are every
  model's test accuracy under short headers; `best` (the leaderboard's top model) comes last.

Few metrics, because `dvc exp show` hides the columns that do not fit the terminal and each
column costs width even when hidden: with six metrics per model, `--only-changed` shows the eight
models' accuracies in 200 columns. Left in results/ only: balanced accuracy (on a stratified split
of balanced classes it equals the accuracy) and the epoch kept (with `train.keep: last`, the
number of epochs, a param already).
"""

from __future__ import annotations

from collections.abc import Callable

# metrics.json's metrics: key → (how to read it off a model's result, decimals kept)
TRACKED: dict[str, tuple[Callable[[dict], float | None], int]] = {
    "acc": (lambda r: r["test"]["accuracy"], 4),  # on the test split
    "auc": (lambda r: r["test"]["roc_auc"], 4),  # ROC AUC: dog the positive class; more classes, one-vs-rest macro
    "log_loss": (lambda r: r["test"]["log_loss"], 4),
    "f1": (lambda r: r["test"]["f1_macro"], 4),  # macro average over the classes
    "train_s": (lambda r: r["train"]["seconds"], 1),  # training time, validation excluded
    "img_s": (lambda r: r["train"]["images_per_second"], 1),  # training throughput
}


def ranked(results: list[dict]) -> list[dict]:
    """Best first: by test accuracy, ties by lower log loss, then by name."""
    return sorted(results, key=lambda r: (-r["test"]["accuracy"], r["test"]["log_loss"], r["model"]))


def tracked(results: list[dict]) -> dict:
    """metrics.json: {"acc": {model: value, ...}, "auc": {...}, ..., "best": name}, models in the
    order given. A metric a model does not have (the ROC AUC of a one-class test split) is left out
    rather than written as null."""
    table: dict = {}
    for key, (read, decimals) in TRACKED.items():
        values = {r["model"]: read(r) for r in results}
        table[key] = {name: round(v, decimals) for name, v in values.items() if v is not None}
    table["best"] = ranked(results)[0]["model"]
    return table
