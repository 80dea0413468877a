"""What pretraining buys, measured: one grid of experiments, regime × training photos × seed, every
cell scored on the same test photos, so that any two cells compare photo by photo.

    python -m pipeline.grid run NAME -S data.source=path/to/train.zip [--photos 40,400,4000,all] [--seeds 3]
    python -m pipeline.grid summary NAME [--out reports/grid]

A regime is a preset, presets/grid-<regime>.yaml: `scratch` (the best from-scratch network with the
shipped recipe), `probe` (the pretrained network frozen, one linear layer on its features) and
`finetune` (the pretrained network trained whole). The presets agree on the split (the same source,
`max_per_class`, fractions and seed, checked before anything is queued); a cell adds
`data.train_photos` (drawn after the split, nested: the 40 photos are among the 400, and the
validation and test photos never change) and `train.seed`.

`run` queues one DVC experiment per cell (`NAME-<regime>-<photos>-s<seed>`, up to the evaluate
stage: the report and the export of each cell would only cost time), skips the cells `dvc exp show`
already holds (a stopped grid resumes where it was), and runs DVC's queue with one worker. Why the
queue and not a `matrix` stage: each cell is then an ordinary experiment, with its params, metrics
and plots in `dvc exp show` and `dvc exp diff`, runnable and inspectable alone; the price is DVC's
start-up for each (about 20 s on a 2-core CPU: the split and the arrays come from its run cache).

`summary` reads each cell's results (through `dvc.api`, at the experiment) and writes, under
`--out`: grid.md (the table, the paired tests and the verdicts), grid.json (every number), grid.png
(accuracy against training photos, one line per regime) and grid.html (all of it on one page
that opens offline).
"""

from __future__ import annotations

import itertools
import re
import shlex
import statistics
import subprocess
import sys
from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np

from pipeline.common import atomic, cli, queue, schema
from pipeline.common.errors import StageError
from pipeline.common.progress import about
from pipeline.evaluation import page, pictures
from pipeline.evaluation.metrics import paired
from pipeline.evaluation.results import read_json_at, read_result
from pipeline.params import presets, recipes
from pipeline.runtime.device import resolve
from pipeline.training.budget import training_estimate

REGIMES = ("scratch", "probe", "finetune")
PHOTOS = ("40", "400", "4000", "all")
SPLIT_KEYS = ("data.max_per_class", "data.val_fraction", "data.test_fraction", "data.seed", "data.source")
MAX_CELLS = 300  # each is a whole training run
MAX_SEEDS = 100


@dataclass(frozen=True)
class Cell:
    regime: str
    photos: str  # a number, or "all"
    seed: int

    def name(self, grid: str) -> str:
        return f"{grid}-{self.regime}-{self.photos}-s{self.seed}"


def cells(regimes: list[str], photos: list[str], seeds_: list[int]) -> list[Cell]:
    """Every cell, the cheapest first within a seed (a stopped grid has then its small cells of every regime)."""
    return [Cell(r, n, s) for s in seeds_ for n in photos for r in regimes]


def regime_file(regime: str) -> Path:
    return presets.preset_file(f"grid-{regime}")


def check_regimes(regimes: list[str], extra: list[str]) -> dict[str, dict]:
    """{regime: its preset, flattened}, once every preset exists and they agree on the split (the
    test photos must be the same photos in every cell); `extra`'s -S values count for all."""
    given = presets.user_overrides(extra)
    found = {r: {**schema.flatten(presets.read(regime_file(r))), **given} for r in regimes}
    first = regimes[0]
    for r in regimes[1:]:
        differ = [k for k in SPLIT_KEYS if found[r].get(k) != found[first].get(k)]
        if differ:
            raise StageError(
                f"presets/grid-{r}.yaml and grid-{first}.yaml split the photos differently ({', '.join(differ)}): "
                "every cell must be scored on the same test photos"
            )
    return found


def queue_commands(grid: str, chosen: list[Cell], extra: list[str]) -> list[list[str]]:
    """One `pipeline.preset grid-<regime> --queue` per cell, up to the evaluate stage."""
    extra = queue.absolute_source(extra)
    return [
        [
            "pipeline.preset",
            f"grid-{c.regime}",
            "--queue",
            "-n",
            c.name(grid),
            "-S",
            f"data.train_photos={'null' if c.photos == 'all' else c.photos}",
            "-S",
            f"train.seed={c.seed}",
            *extra,
            "evaluate",
        ]
        for c in chosen
    ]


# DVC's start-up for one queued cell on the 2-core CPU (the split and arrays from its run cache): measured
DVC_SECONDS = 30


def estimate(found: dict[str, dict], photos: list[str], seeds_count: int) -> tuple[float, list[str]]:
    """(seconds, lines): `check`'s estimate of each regime's training at each number of photos,
    times the seeds, plus DVC's start-up for each cell; a step of each regime is timed once."""
    compute, timers, total, lines = None, {}, 0.0, []
    for regime, flat in found.items():
        for n in photos:
            p = recipes.load(overrides=presets.nest({**flat, "data.train_photos": None if n == "all" else int(n)}))
            compute = compute or resolve(p.runtime)
            seconds, _ = training_estimate(p, compute, timers)
            total += seconds * seeds_count
            lines.append(f"grid: {regime:>9s} at {n:>5s} photos {about(seconds)} of training a seed")
    cells_count = len(found) * len(photos) * seeds_count
    total += DVC_SECONDS * cells_count
    lines.append(
        f"grid: {about(total)} in all for {cells_count} cells ({seeds_count} seeds; {about(DVC_SECONDS)} of DVC "
        "start-up a cell; the preprocessing at each image size once on top; check's estimates are upper bounds on a "
        "CPU)"
    )
    return total, lines


def parse_photos(text: str) -> list[str]:
    photos = [p.strip() for p in text.split(",") if p.strip()]
    for p in photos:
        if p != "all" and not (p.isascii() and p.isdigit() and 2 <= int(p) <= 10_000_000):
            raise StageError(f"--photos {text}: numbers of training photos (2 or more) or `all`, separated by commas")
    if not photos or len(set(photos)) != len(photos):
        raise StageError(f"--photos {text}: at least one count, each once")
    return photos


# ---------------------------------------------------------------- summary


def found_cells(grid: str, shown: dict[str, dict]) -> dict[str, Cell]:
    """{experiment name: its cell} for the experiments of `grid` in `dvc exp show`."""
    pattern = re.compile(re.escape(grid) + r"-([a-z0-9_]+)-(\d+|all)-s(\d+)")
    out = {}
    for name in shown:
        if m := pattern.fullmatch(name):
            out[name] = Cell(m.group(1), m.group(2), int(m.group(3)))
    return out


def summarise(cells_: dict[str, Cell], results: dict[str, dict], train_photos: dict[str, int]) -> dict:
    """The table, the paired tests and the verdicts from each cell's results (results/<model>.json)
    and its number of training photos. Refuses cells not scored on the same test photos."""
    names = list(cells_)
    base = results[names[0]]["labels"]
    for name in names:
        if results[name]["labels"] != base:
            raise StageError(
                f"{name} was not scored on the same test photos as {names[0]}: a grid's presets must split alike"
            )
    regimes = list(dict.fromkeys(c.regime for c in cells_.values()))
    counts = sorted({train_photos[n] for n in names})
    right = {n: np.asarray(results[n]["predicted"]) == np.asarray(results[n]["labels"]) for n in names}
    by = {(c.regime, train_photos[n], c.seed): n for n, c in cells_.items()}
    table = []
    for regime, count in itertools.product(regimes, counts):
        runs = [by[k] for k in sorted(by) if k[:2] == (regime, count)]
        if not runs:
            continue
        accuracies = [results[n]["test"]["accuracy"] for n in runs]
        table.append(
            {
                "regime": regime,
                "photos": count,
                "seeds": len(runs),
                "mean": statistics.fmean(accuracies),
                "min": min(accuracies),
                "max": max(accuracies),
                "accuracy_ci95": [results[n]["test"]["accuracy_ci95"] for n in runs],
                "train_seconds": statistics.fmean(results[n]["train"]["seconds"] for n in runs),
                "experiments": runs,
            }
        )
    pairs = []
    for count in counts:
        for a, b in itertools.combinations(regimes, 2):
            seeds_ = sorted(k[2] for k in by if k[:2] == (a, count) and (b, count, k[2]) in by)
            if not seeds_:
                continue
            tests = [paired(right[by[(a, count, s)]], right[by[(b, count, s)]]) for s in seeds_]
            differences = [t["difference"] for t in tests]
            if statistics.fmean(differences) < 0:  # the better regime first
                a, b = b, a
                tests = [paired(right[by[(a, count, s)]], right[by[(b, count, s)]]) for s in seeds_]
                differences = [t["difference"] for t in tests]
            pairs.append(
                {
                    "photos": count,
                    "a": a,
                    "b": b,
                    "seeds": seeds_,
                    "differences": differences,
                    "per_seed": tests,
                    "held": sum(d > 0 for d in differences),
                    "significant": sum(t["p_value"] < 0.05 and t["difference"] > 0 for t in tests),
                }
            )
    return {
        "regimes": regimes,
        "photos": counts,
        "test_images": len(base),
        "table": table,
        "pairs": pairs,
        "verdicts": verdicts(table, pairs),
    }


def verdicts(table: list[dict], pairs: list[dict]) -> list[str]:
    """What the grid says, in words, each line backed by the paired tests of `pairs`."""
    lines = []
    for pair in pairs:
        mean = statistics.fmean(pair["differences"])
        n = len(pair["seeds"])
        strength = (
            "significantly on every seed"
            if pair["significant"] == n
            else f"significant on {pair['significant']} of {n} seeds"
            if pair["significant"]
            else f"on no seed significantly (held on {pair['held']} of {n})"
        )
        lines.append(
            f"with {pair['photos']:,} training photos, {pair['a']} beats {pair['b']} by {100 * mean:.1f} points, "
            f"{strength} (McNemar, the same {pair['per_seed'][0]['images']:,} test photos)"
        )
    mean = {(r["regime"], r["photos"]): r["mean"] for r in table}
    regimes = list(dict.fromkeys(r["regime"] for r in table))
    for a, b in itertools.permutations(regimes, 2):  # how many photos b needs to reach a's accuracy with its fewest
        counts_a = sorted(c for r, c in mean if r == a)
        counts_b = sorted(c for r, c in mean if r == b)
        if not counts_a or not counts_b:
            continue
        few = counts_a[0]
        reached = next((c for c in counts_b if mean[(b, c)] >= mean[(a, few)]), None)
        if reached is None:
            lines.append(
                f"{b} does not reach {a}'s accuracy with {few:,} photos ({100 * mean[(a, few)]:.1f}%) even with "
                f"{counts_b[-1]:,} (mean over seeds)"
            )
        elif reached > few:
            lines.append(
                f"{b} needs {reached:,} photos to reach {a}'s accuracy with {few:,} ({reached / few:,.0f} times as "
                "many; mean over seeds)"
            )
    return lines


CELLS = (
    "regime",
    "training photos",
    "seeds",
    "test accuracy (mean)",
    "range over seeds",
    "each seed's 95% interval",
    "training time (mean)",
)
PAIRS = (
    "training photos",
    "better − worse",
    "difference per seed (points)",
    "McNemar p per seed",
    "right only in the better / only in the worse, per seed",
)


def intro(summary: dict) -> str:
    return (
        f"Every cell scored on the same {summary['test_images']:,} test photos. Accuracy: the mean over the seeds, "
        "their range, each seed's 95% interval."
    )


def tables(summary: dict) -> tuple[list[list[str]], list[list[str]]]:
    """The rows of the two tables (CELLS, PAIRS), as text: one per cell of the grid, one per pair
    of regimes at each number of training photos."""
    cells_ = [
        [
            r["regime"],
            f"{r['photos']:,}",
            str(r["seeds"]),
            f"{r['mean']:.3f}",
            f"{r['min']:.3f}–{r['max']:.3f}",
            "; ".join(f"{low:.3f}–{high:.3f}" for low, high in r["accuracy_ci95"]),
            f"{r['train_seconds']:.0f} s",
        ]
        for r in summary["table"]
    ]
    pairs = [
        [
            f"{pair['photos']:,}",
            f"{pair['a']} − {pair['b']}",
            ", ".join(f"{100 * d:+.1f}" for d in pair["differences"]),
            ", ".join(f"{t['p_value']:.2g}" for t in pair["per_seed"]),
            ", ".join(f"{t['a_only']} / {t['b_only']}" for t in pair["per_seed"]),
        ]
        for pair in summary["pairs"]
    ]
    return cells_, pairs


def markdown(summary: dict) -> str:
    def rows(headers: tuple[str, ...], body: list[list[str]], align: str) -> list[str]:
        return [
            "| " + " | ".join(headers) + " |",
            "|" + "|".join(align) + "|",
            *("| " + " | ".join(r) + " |" for r in body),
        ]

    cells_, pairs = tables(summary)
    lines = [intro(summary), "", *rows(CELLS, cells_, ["---", "---:", "---:", "---:", "---", "---", "---:"]), ""]
    lines += [*rows(PAIRS, pairs, ["---:", "---", "---", "---", "---"]), "", *[f"- {v}" for v in summary["verdicts"]]]
    return "\n".join(lines) + "\n"


def html(summary: dict, picture: bytes) -> str:
    """grid.html: the picture, the two tables and the verdicts on one page that opens offline."""
    cells_, pairs = tables(summary)
    title = "What pretraining buys: accuracy against training photos"
    verdicts_ = "".join(f"<li>{escape(v)}</li>" for v in summary["verdicts"])
    return page.document(
        title,
        [
            f"<h1>{escape(title)}</h1><p>{escape(intro(summary))}</p>",
            page.img(picture, "test accuracy against training photos, one line per regime"),
            page.table(list(CELLS), cells_, id="cells"),
            page.table(
                list(PAIRS),
                pairs,
                id="pairs",
                caption="Paired tests between regimes at each number of training photos, seed by seed",
            ),
            f"<h2>Verdicts</h2><ul>{verdicts_}</ul>",
        ],
    )


def write(summary: dict, out: Path) -> None:
    curves: dict[str, list] = {}
    for r in summary["table"]:
        curves.setdefault(r["regime"], []).append((r["photos"], r["mean"], r["min"], r["max"]))
    picture = pictures.save_png(pictures.learning_curve_figure(curves), out / "grid.png")
    atomic.write_json(out / "grid.json", summary)
    atomic.write_text(out / "grid.md", markdown(summary))
    atomic.write_text(out / "grid.html", html(summary, picture))


def read_cell(name: str, params: dict, paths: dict[str, str]) -> tuple[dict, int]:
    """(its results, its number of training photos) at experiment `name`."""
    model = params.get("model")
    if not isinstance(model, str):
        raise StageError(f"{name}: a grid cell trains one model, not {model!r}")
    result = read_result(name, f"{paths.get('results', 'results')}/{model}.json")
    split = read_json_at(name, f"{paths.get('split', 'data/split')}/summary.json")
    return result, sum(split["images"]["train"].values())


def main() -> None:
    parser = cli.parser(__spec__.name, __doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="queue and run every cell not yet in dvc exp show")
    run.add_argument("name", help="the experiments are named NAME-<regime>-<photos>-s<seed>")
    run.add_argument(
        "--regimes", default=",".join(REGIMES), help=f"presets/grid-<regime>.yaml of each (default {','.join(REGIMES)})"
    )
    run.add_argument(
        "--photos", default=",".join(PHOTOS), help=f"training photos of each cell, or all (default {','.join(PHOTOS)})"
    )
    run.add_argument("--seeds", type=int, default=3, help="train.seed 0, 1, ..., N-1 (default 3)")
    run.add_argument("--no-start", action="store_true", help="only queue them")
    run.add_argument("--poll", type=float, default=queue.POLL, help="seconds between looks at the queue")
    summary = sub.add_parser("summary", help="the table, the paired tests, the verdicts and the plot")
    summary.add_argument("name")
    summary.add_argument(
        "--out",
        type=Path,
        default=Path("reports/grid"),
        help="folder for grid.md, grid.json, grid.png (default reports/grid)",
    )
    args, extra = parser.parse_known_args()
    if args.command == "run":
        regimes = [r.strip() for r in args.regimes.split(",") if r.strip()]
        photos = parse_photos(args.photos)
        if not 1 <= args.seeds <= MAX_SEEDS:
            raise StageError(f"--seeds {args.seeds}: from 1 to {MAX_SEEDS}")
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,40}", args.name):
            raise StageError(
                f"grid name {args.name!r}: a letter, then letters, digits or _ (at most 41): it starts every "
                "experiment's name"
            )
        if not 0 < args.poll <= 3600:
            raise StageError(f"--poll {args.poll:g}: a number of seconds from above 0 to 3600")
        chosen = cells(regimes, photos, list(range(args.seeds)))
        if len(chosen) > MAX_CELLS:
            raise StageError(f"{len(chosen)} cells: at most {MAX_CELLS} (each is a whole training run)")
        found = check_regimes(regimes, extra)
        for line in estimate(found, photos, args.seeds)[1]:
            print(line, flush=True)
        done = {n for n, e in queue.experiments().items() if not e["failed"]}
        todo = [c for c in chosen if c.name(args.name) not in done]
        print(f"grid: {len(chosen)} cells, {len(chosen) - len(todo)} already done", flush=True)
        for cmd in queue_commands(args.name, todo, extra):
            print(shlex.join(["python", "-m", *cmd]), flush=True)
            if (queued := subprocess.run([sys.executable, "-m", *cmd])).returncode:
                sys.exit(queued.returncode)
        if args.no_start or not todo:
            return
        if (started := queue.start_worker()).returncode:
            raise StageError(f"dvc queue start: {started.stdout.strip()}")
        queue.wait([c.name(args.name) for c in todo], args.poll, label="grid")
        print(f"grid: all {len(chosen)} cells done; python -m pipeline.grid summary {args.name}", flush=True)
        return
    shown = queue.experiments()
    found = found_cells(args.name, {n: e for n, e in shown.items() if not e["failed"]})
    if not found:
        raise StageError(f"no experiment {args.name}-<regime>-<photos>-s<seed> with results in `dvc exp show`")
    paths = cli.pipeline_paths()
    read = {n: read_cell(n, shown[n]["params"], paths) for n in found}
    result = summarise(found, {n: r for n, (r, _) in read.items()}, {n: k for n, (_, k) in read.items()})
    write(result, args.out)
    sys.stdout.write(markdown(result))


if __name__ == "__main__":
    cli.run(main)
