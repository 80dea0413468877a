"""What evaluating the models yields, in the two shapes people read it in.

- results/<model>.json: everything about one model (plain JSON: per-class metrics, confusion
  counts, intervals, balanced accuracy, the epoch kept, the device), read by the report.
- the paired comparisons of the report (`pairwise`, `ALPHA`): every two models scored on the same
  test photos, photo by photo (metrics.paired: McNemar's exact test and the paired interval).
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
from pathlib import Path

import numpy as np

from pipeline.common import formats
from pipeline.common.errors import StageError
from pipeline.evaluation.metrics import paired

# metrics.json's metrics: key → (how to read it off a model's result, decimals kept)
TRACKED: dict[str, tuple[Callable[[dict], float | None], int]] = {
    "acc": (lambda r: r["test"]["accuracy"], 4),  # on the test split
    "acc_verdicts": (
        lambda r: (r.get("test_verdicts") or {}).get("accuracy"),
        4,
    ),  # the same photos once data.verdicts apply: only when they change some
    "auc": (lambda r: r["test"]["roc_auc"], 4),  # ROC AUC: dog the positive class; more classes, one-vs-rest macro
    "log_loss": (lambda r: r["test"]["log_loss"], 4),
    "f1": (lambda r: r["test"]["f1_macro"], 4),  # macro average over the classes
    "train_s": (lambda r: r["train"]["seconds"], 1),  # training time, validation excluded
    "img_s": (lambda r: r["train"]["images_per_second"], 1),  # training throughput
}


def read_all(folder: Path) -> list[dict]:
    """Every model's result in `folder`, evaluate's results/ (one <model>.json a model): exactly the
    models params.yaml selects, since DVC empties the folder before evaluate writes it. Reading the
    folder, not params.yaml, keeps torch out of the readers of results (the model registry imports it)."""
    found = [formats.read_json(path) for path in sorted(Path(folder).glob("*.json"))]
    if not found:
        raise StageError(f"{folder}: no results (<model>.json) to report; run evaluate first (dvc repro evaluate)")
    return found


def ranked(results: list[dict]) -> list[dict]:
    """Best first: by test accuracy, ties by lower log loss, then by name."""
    return sorted(results, key=lambda r: (-r["test"]["accuracy"], r["test"]["log_loss"], r["model"]))


def tracked(results: list[dict]) -> dict:
    """metrics.json: {"acc": {model: value, ...}, "auc": {...}, ..., "best": name}, models in the
    order given. A metric a model does not have (the ROC AUC of a one-class test split, the accuracy
    with verdicts that change no test photo) is left out rather than written as null."""
    table: dict = {}
    for key, (read, decimals) in TRACKED.items():
        values = {r["model"]: read(r) for r in results}
        if kept := {name: round(v, decimals) for name, v in values.items() if v is not None}:
            table[key] = kept
    table["best"] = ranked(results)[0]["model"]
    return table


ALPHA = 0.05  # a pair's McNemar p below this: the difference is significant (not corrected for the number of pairs)


def right(result: dict) -> np.ndarray:
    """(N,) bool: which test photos the model classified correctly, in the split's order."""
    return np.asarray(result["predicted"]) == np.asarray(result["labels"])


def pairwise(results: list[dict]) -> dict[str, dict[str, dict]]:
    """For every two models evaluated on the same test photos (the same labels, in the same order),
    `pairs[a][b]` = metrics.paired(a, b) with `significant` added: a − b, its paired 95% interval,
    the photos only a (a_only) or only b (b_only) gets right, McNemar's exact p. Models scored on
    other photos are not compared (absent from each other's row)."""
    pairs: dict[str, dict[str, dict]] = {r["model"]: {} for r in results}
    for i, a in enumerate(results):
        for b in results[i + 1 :]:
            if a["labels"] != b["labels"]:
                continue
            ab = paired(right(a), right(b))
            ba = ab | {
                "difference": -ab["difference"],
                "difference_ci95": [-ab["difference_ci95"][1], -ab["difference_ci95"][0]],
                "a_only": ab["b_only"],
                "b_only": ab["a_only"],
            }
            pairs[a["model"]][b["model"]] = ab | {"significant": ab["p_value"] < ALPHA}
            pairs[b["model"]][a["model"]] = ba | {"significant": ab["p_value"] < ALPHA}
    return pairs


WORKSPACE = "workspace"  # the revision that means the files here, not a commit or an experiment


def read_result(rev: str, path: str) -> dict:
    """results/<model>.json at `rev` (an experiment, a git revision, or the workspace), with what a
    comparison reads in it: else a StageError naming what is missing."""
    found = read_json_at(rev, path)
    try:
        ok = (
            isinstance(found["labels"], list)
            and isinstance(found["predicted"], list)
            and len(found["labels"]) == len(found["predicted"])
            and isinstance(found["test"]["accuracy"], (int, float))
            and len(found["test"]["accuracy_ci95"]) == 2
            and isinstance(found["train"]["seconds"], (int, float))
            and isinstance(found["train"]["epochs"], int)
            and isinstance(found["model"], str)
        )
    except (KeyError, TypeError) as e:
        raise StageError(f"{path} at {rev!r} is not a results file of this pipeline: it has no {e}") from None
    if not ok:
        raise StageError(
            f"{path} at {rev!r} is not a results file of this pipeline: its labels, predictions or figures are not "
            "what evaluate writes"
        )
    return found


def read_json_at(rev: str, path: str) -> dict:
    """A JSON file at `rev` (an experiment, a git revision, or the workspace); StageError naming
    both when that revision has no such file, or the revision does not exist."""
    if rev == WORKSPACE:
        if not Path(path).is_file():
            raise StageError(f"{path}: not in the workspace; run `dvc repro` (or name an experiment)")
        return formats.read_json(path)
    import dvc.api

    try:
        text = dvc.api.read(path, rev=rev)
    except Exception as e:  # an unknown revision, a path that revision did not write, no DVC repository
        raise StageError(
            f"{path} at {rev!r}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
        ) from None
    return formats.parse_json(text, f"{path} at {rev!r}")
