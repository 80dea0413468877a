"""Find a learning rate: `python -m pipeline.lr_find --model NAME` (fastai's `lr_find`).

Trains a fresh `NAME` with its recipe from params.yaml on the preprocessed training photos while the
rate grows from 1e-7 to 10 over `--steps` steps, plots the smoothed loss against the rate
(`--out`, default lr_find-<model>.png) and prints the rate at the steepest descent, with the
`-S train.lr=...` that gives it to this model (its lr_scale taken into account). Needs the
preprocessed data: `dvc repro preprocess` first. Nothing it does is a DVC output.
"""

from __future__ import annotations

import math
from pathlib import Path

from pipeline import models
from pipeline.common import cli
from pipeline.common.errors import StageError
from pipeline.common.formats import read_json
from pipeline.evaluation import pictures
from pipeline.models import bf16_ok
from pipeline.params import recipes
from pipeline.runtime.device import resolve
from pipeline.runtime.tensors import load_split
from pipeline.training.lr_range import range_test


def main() -> None:
    parser = cli.parser(__spec__.name, __doc__)
    parser.add_argument("--model", required=True, help="an architecture name, with its recipe from params.yaml")
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(cli.pipeline_paths().get("processed", "data/processed")),
        help="the preprocessed tensors",
    )
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--start", type=float, default=1e-7)
    parser.add_argument("--end", type=float, default=10.0)
    parser.add_argument("--out", type=Path, help="the plot (PNG)")
    args = parser.parse_args()
    if not 5 <= args.steps <= 100_000:
        raise StageError(f"--steps {args.steps}: from 5 to 100,000 (each is a training step)")
    if not (math.isfinite(args.start) and math.isfinite(args.end) and 0 < args.start < args.end <= 1e6):
        raise StageError(f"--start {args.start} and --end {args.end}: need 0 < start < end <= 1e6, finite numbers")
    out = args.out or Path(f"lr_find-{args.model.replace(':', '-')}.png")
    cli.writable_file(out, "--out")
    p = recipes.load(overrides={"model": args.model})
    spec = p.models[0]
    if not (args.data / "meta.json").is_file():
        raise StageError(f"no preprocessed data in {args.data}: run `dvc repro preprocess` first")
    meta = read_json(args.data / "meta.json")
    models.preflight(p.models, meta["image_size"], meta["channels"])  # a size the model cannot take: one line, now
    compute = resolve(p.runtime)
    compute = compute.for_model(spec.name, bf16_ok(spec.name))
    train = load_split(args.data, "train", compute.device)
    found = range_test(
        spec, train, classes=len(meta["classes"]), compute=compute, start=args.start, end=args.end, steps=args.steps
    )
    pictures.save_png(
        pictures.lr_find_figure(
            found.rates, found.losses, found.suggested, title=f"{spec.name}: loss against learning rate"
        ),
        out,
    )
    scale = spec.train.lr_scale
    print(
        f"lr_find: {spec.name}, {len(found.rates)} steps of {spec.train.optimizer} at batch {spec.train.batch_size} on "
        f"{compute.describe()}{' (stopped when the loss ran away)' if found.stopped_early else ''}; plot: {out}"
    )
    print(
        f"lr_find: steepest descent at {found.suggested:.2g}, minimum at {found.minimum:.2g}: try "
        f"-S train.lr={found.suggested / scale:.2g}"
        + (f" (× models.{spec.name}.lr_scale {scale:g} = {found.suggested:.2g})" if scale != 1 else "")
        + f"; now train.lr = {spec.train.lr / scale:g}"
    )


if __name__ == "__main__":
    cli.run(main)
