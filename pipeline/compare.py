"""Paired comparisons of experiments: `python -m pipeline.compare BASELINE EXPERIMENT ... [--model NAME]`.

Each argument is a DVC experiment's name, a git revision, or `workspace` (the files as they are
here); for each, the evaluate stage's results/<model>.json is read at that revision (through
`dvc.api.read`, from DVC's cache), and every experiment is compared with the first on the same test
photos, photo by photo: the accuracy difference with its paired 95% interval, and McNemar's exact
test of the photos only one of the two gets right. Two accuracies can differ by more than their
intervals suggest, or less: on the same photos the paired test is the one that says.

Prints a Markdown table (and writes it to --out); refuses experiments whose test photos differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.common import atomic, cli
from pipeline.common.errors import StageError
from pipeline.common.progress import duration
from pipeline.evaluation.metrics import paired
from pipeline.evaluation.results import read_json_at, read_result, right


def compare(revs: list[str], results: list[dict]) -> list[dict]:
    """One row per experiment: its accuracy, and the paired comparison with the first (None for it)."""
    base = results[0]
    rows = []
    for rev, r in zip(revs, results):
        if r["labels"] != base["labels"]:
            raise StageError(
                f"{revs[0]} and {rev} were not evaluated on the same test photos: compare experiments of one split"
            )
        t = r["test"]
        per_epoch = r["train"]["seconds"] / r["train"]["epochs"] if r["train"]["epochs"] else 0.0
        rows.append(
            {
                "experiment": rev,
                "model": r["model"],
                "accuracy": t["accuracy"],
                "accuracy_ci95": t["accuracy_ci95"],
                "versus_first": None if r is base else paired(right(r), right(base)),
                "train_seconds_per_epoch": per_epoch,
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    first = rows[0]["experiment"]
    lines = [
        f"| experiment | test accuracy (95% CI) | difference from {first} (paired 95% CI) | McNemar p | right only "
        f"here / only in {first} | train time per epoch |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        low, high = r["accuracy_ci95"]
        v = r["versus_first"]
        if v is None:
            versus, p, counts = "(baseline)", "", ""
        else:
            d, (dl, dh) = v["difference"], v["difference_ci95"]
            versus, p, counts = (
                f"{d:+.3f} ({dl:+.3f} to {dh:+.3f})",
                f"{v['p_value']:.3g}",
                f"{v['a_only']} / {v['b_only']}",
            )
        lines.append(
            f"| {r['experiment']} | {r['accuracy']:.3f} ({low:.3f}–{high:.3f}) | {versus} | {p} | {counts} | "
            f"{duration(r['train_seconds_per_epoch'])} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = cli.parser(__spec__.name, __doc__)
    parser.add_argument(
        "experiments",
        nargs="+",
        help="DVC experiment names or git revisions (the first is the baseline), or `workspace`",
    )
    parser.add_argument("--model", help="which model's results (default: the only one trained, or metrics.json's best)")
    parser.add_argument("--results", default=None, help="the results folder (default: dvc.yaml's)")
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args()
    if len(args.experiments) < 2:
        raise StageError("name two experiments at least: the baseline, then what to compare with it")
    paths = cli.pipeline_paths()
    folder = args.results or paths.get("results", "results")
    model = args.model or default_model(args.experiments[0], paths)
    found = [read_result(rev, f"{folder}/{model}.json") for rev in args.experiments]
    text = table(compare(args.experiments, found))
    if args.out:
        atomic.write_text(args.out, text)
    sys.stdout.write(text)


def default_model(rev: str, paths: dict) -> str:
    """The baseline's best model (its metrics.json's `best`), which is its only one when it trained one."""
    return read_json_at(rev, paths.get("metrics", "metrics.json"))["best"]


if __name__ == "__main__":
    cli.run(main)
