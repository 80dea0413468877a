"""Classify photos with a trained model: `python -m pipeline.predict [photo | folder | zip ...]`.

Each photo goes through exactly the test-time path the model was evaluated with: decoded and
resized by the preprocess stage's own function, at the size and with the resize policy recorded in
the model file (not today's params.yaml), normalised as the model file records, then `probabilities`
(eval mode, no gradients), with test-time augmentation as params.yaml's `evaluate.tta` says (or
--tta / --no-tta). So its probabilities are those `evaluate` computed for the same test photo.

Output: CSV on stdout (or --out), one row per input in the input's order (a folder's or a zip's
photos sorted by name): `file,label,p_cat,p_dog,error`, one `p_<class>` column per class the model
knows, in its order (p_cat, p_dog for Dogs-vs-Cats). A photo that cannot be read gets an empty
label and the reason in `error`, and the others go on. `--kaggle test1.zip` writes the competition's
submission instead: `id,label`, rows sorted by id, label the probability of a dog clipped to
[0.005, 0.995] (the competition scored log loss, which one confident mistake would dominate).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

from pipeline.common import atomic, cli
from pipeline.common.errors import StageError
from pipeline.common.formats import csv_text
from pipeline.common.progress import plural
from pipeline.data.images import DOGS_VS_CATS
from pipeline.evaluation.predicting import Photo, Prediction, classify, decode_photo, explanation_names, photos, predict  # noqa: F401 (predict's API)
from pipeline.models import bf16_ok, modelfile
from pipeline.params.sections import RuntimeParams, load_evaluate
from pipeline.runtime.device import Compute, resolve

KAGGLE_CLIP = (0.005, 0.995)


def columns(classes: tuple[str, ...]) -> list[str]:
    """The CSV's header: file, label, p_<class> for each class in the model's order, error."""
    return ["file", "label", *(f"p_{c}" for c in classes), "error"]


def table(predictions: list[Prediction], classes: tuple[str, ...], *, explained: bool = False) -> str:
    """The CSV: file, label, one probability per class to 4 decimals, error; `explained` (--explain):
    and `explanation`, the Grad-CAM picture's file name in the --explain folder."""
    rows = []
    for p in predictions:
        probs = [""] * len(classes) if p.proba is None else [f"{v:.4f}" for v in p.proba]
        rows.append([p.photo.name, p.label, *probs, p.error, *([p.explanation] if explained else [])])
    return csv_text(columns(classes) + (["explanation"] if explained else []), rows, for_people=True)


def kaggle_id(photo: Photo) -> int:
    """The number in a Kaggle test photo's file name: test1/123.jpg → 123."""
    name = (photo.member or photo.source.name).rsplit("/", 1)[-1]
    match = re.fullmatch(r"(\d+)\.[A-Za-z]+", name)
    if not match:
        raise StageError(f"{photo.name}: a Kaggle test photo's name is its id (test1/123.jpg)")
    return int(match.group(1))


def submission(predictions: list[Prediction], classes: tuple[str, ...]) -> str:
    """The competition's file: `id,label`, sorted by id, label = P(dog) clipped; a photo that could
    not be read gets 0.5 (no information), so that every id has its row."""
    if tuple(classes) != DOGS_VS_CATS:
        raise StageError(
            f"--kaggle writes the Dogs-vs-Cats competition's file, and this model's classes are {', '.join(classes)}"
        )
    dog = DOGS_VS_CATS.index("dog")
    rows = []
    for p in predictions:
        p_dog = 0.5 if p.proba is None else float(np.clip(p.proba[dog], *KAGGLE_CLIP))
        rows.append((kaggle_id(p.photo), f"{p_dog:.4f}"))
    ids = [r[0] for r in rows]
    if len(set(ids)) != len(ids):
        raise StageError("two Kaggle test photos have the same id")
    return csv_text(["id", "label"], sorted(rows), for_people=True)


def summary(
    predictions: list[Prediction], name: str, seconds: float, compute: Compute, classes: tuple[str, ...]
) -> str:
    """`predict: 12,500 photos with resnet18: 6,301 cat, 6,199 dog, 0 unreadable; 412 img/s on cpu (2 threads)`"""
    counts = {c: sum(p.label == c for p in predictions) for c in classes}
    failed = sum(p.proba is None for p in predictions)
    by_class = ", ".join(f"{n:,} {c}" for c, n in counts.items())
    return (
        f"predict: {plural(len(predictions), 'photo')} with {name}: {by_class}, {failed:,} unreadable; "
        f"{len(predictions) / seconds:,.0f} img/s on {compute.describe()}"
    )


def check_outputs(out: Path | None, explain: Path | None) -> None:
    """--out must be a file that can be written, --explain a folder (made now); StageError otherwise."""
    if out is not None:
        cli.writable_file(out, "--out")
    if explain is not None:
        if explain.exists() and not explain.is_dir():
            raise StageError(f"--explain {explain} is a file: give a folder for the pictures")
        try:
            explain.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StageError(f"--explain {explain}: cannot make the folder ({e.strerror})") from None
        if not os.access(explain, os.W_OK):
            raise StageError(f"--explain {explain}: not writable here")


def main() -> None:
    parser = cli.parser(__spec__.name, __doc__)
    parser.add_argument("inputs", nargs="*", type=Path, help="image files, folders, zips")
    parser.add_argument(
        "--kaggle", type=Path, metavar="ZIP", help="the competition's test1.zip: write a submission (id,label)"
    )
    parser.add_argument("--model", help="a model name from the models folder, or a model file (default: the best)")
    parser.add_argument("--out", type=Path, help="write the CSV here (default: stdout)")
    parser.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        help=(
            "average each photo's prediction with its mirror image's (default: params.yaml's evaluate.tta, as evaluate "
            "did)"
        ),
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "bf16"),
        help="auto: bf16 where the device computes it natively, as in training",
    )
    parser.add_argument("--explain", type=Path, metavar="DIR", help="write a Grad-CAM overlay of each photo here (PNG)")
    args = parser.parse_args()
    if args.batch_size < 1:
        raise StageError(f"--batch-size {args.batch_size}: must be a positive whole number")
    check_outputs(args.out, args.explain)  # before a photo is read: a bad path must not cost the predictions
    inputs = [*args.inputs, *([args.kaggle] if args.kaggle else [])]
    path = modelfile.find(args.model, cli.pipeline_paths())
    found = photos(inputs)
    compute = resolve(RuntimeParams(device=args.device, compile=False, resume=False, precision=args.precision))
    model, meta = modelfile.load(path, compute.device, compute.format)
    compute = compute.for_model(meta["name"], bf16_ok(meta["name"]))
    start = time.perf_counter()
    tta = load_evaluate().tta if args.tta is None else args.tta
    predictions = predict(
        model, meta, found, compute=compute, batch_size=args.batch_size, tta=tta, explain=args.explain
    )
    classes = tuple(meta["classes"])
    text = (
        submission(predictions, classes) if args.kaggle else table(predictions, classes, explained=bool(args.explain))
    )
    if args.out:
        atomic.write_text(args.out, text)
    else:
        sys.stdout.write(text)
    print(summary(predictions, meta["name"], time.perf_counter() - start, compute, classes), file=sys.stderr)


if __name__ == "__main__":
    cli.run(main)
