"""One experiment on several training seeds, the DVC way, and what holds across them.

    python -m pipeline.seeds run NAME --seeds 3 [--preset cpu-64] [dvc exp run flags: -S ...]
    python -m pipeline.seeds summary NAME [--out seeds.md] [--json seeds.json]

`run` queues one DVC experiment per seed (`dvc exp run --queue -n NAME-seedK -S train.seed=K`, with
the preset's flags and any others), starts DVC's queue with one worker (every experiment already
uses every core) and prints a line whenever an experiment ends, until all have. Each experiment
runs in its own copy of the workspace, so the workspace is left as it is; a relative
`data.source` is made absolute for them.

`summary` reads `dvc exp show --json`: the experiments named NAME-seedK (or the names given) give,
per model and metric of metrics.json, the mean, the sample standard deviation and the range over
the seeds; and for every two models, the accuracy difference on each seed, how many seeds it held
on, and a paired t-test over the seeds (each seed scores both models on the same test photos, so
the seeds are the pairs: the test asks whether the mean difference is zero, with seed-to-seed noise
as the yardstick). With three seeds the t-test has two degrees of freedom: only large, steady gaps
reach significance, which is the honest answer at that budget.
"""

from __future__ import annotations

import re
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

from pipeline.common import atomic, cli
from pipeline.common.errors import StageError
from pipeline.common.queue import POLL, absolute_source, experiments, start_worker, wait

MAX_SEEDS = 100  # experiments queued at once: each trains the whole recipe again
MAX_SEED = 2**32 - MAX_SEEDS - 1  # numpy's seeds stop at 2³² − 1


def names(name: str, seeds: list[int]) -> list[str]:
    return [f"{name}-seed{seed}" for seed in seeds]


def queue_commands(name: str, seeds: list[int], preset: str | None, extra: list[str]) -> list[list[str]]:
    """One `dvc exp run --queue` per seed with `extra`, as modules to run (`python -m ...`): through
    `pipeline.preset` when a preset is named (which checks its flags against params.yaml and passes
    the rest to dvc)."""
    extra = absolute_source(extra)
    head = ["pipeline.preset", preset] if preset else ["dvc", "exp", "run"]
    return [
        [*head, "--queue", "-n", exp, "-S", f"train.seed={seed}", *extra]
        for seed, exp in zip(seeds, names(name, seeds))
    ]


def summarise(runs: dict[str, dict]) -> dict:
    """The experiments `runs` (name → params and metrics), one per seed, summarised: per metric and
    model the mean, standard deviation, min and max over seeds; per pair of models (better mean
    accuracy first) the difference on each seed, the seeds it held on and a paired t-test."""
    from scipy import stats

    seeds = {name: run["params"].get("train", {}).get("seed") for name, run in runs.items()}
    if len(set(seeds.values())) != len(seeds):
        raise StageError(f"the experiments do not differ by train.seed: {seeds}")
    metrics = sorted({m for run in runs.values() for m, v in run["metrics"].items() if isinstance(v, dict)})
    table: dict = {}
    for metric in metrics:
        models = sorted({model for run in runs.values() for model in run["metrics"].get(metric, {})})
        for model in models:
            values = [run["metrics"][metric][model] for run in runs.values() if model in run["metrics"].get(metric, {})]
            table.setdefault(metric, {})[model] = {
                "mean": statistics.fmean(values),
                "sd": _sd(values),
                "min": min(values),
                "max": max(values),
                "seeds": len(values),
            }
    accuracy = table.get("acc", {})
    order = sorted(accuracy, key=lambda m: -accuracy[m]["mean"])
    pairs = []
    for i, a in enumerate(order):
        for b in order[i + 1 :]:
            both = [
                run["metrics"]["acc"]
                for run in runs.values()
                if a in run["metrics"].get("acc", {}) and b in run["metrics"]["acc"]
            ]
            differences = [acc[a] - acc[b] for acc in both]
            p = (
                float(stats.ttest_rel([acc[a] for acc in both], [acc[b] for acc in both]).pvalue)
                if len(both) > 1 and _sd(differences) > 0
                else None
            )
            pairs.append(
                {
                    "a": a,
                    "b": b,
                    "differences": differences,
                    "held": sum(d > 0 for d in differences),
                    "seeds": len(both),
                    "p_value": p,
                }
            )
    return {"experiments": {name: seeds[name] for name in runs}, "metrics": table, "pairs": pairs}


def _sd(values: list[float]) -> float:
    """The sample standard deviation; 0 for one seed."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def markdown(summary: dict) -> str:
    seeds = ", ".join(f"{name} (seed {seed})" for name, seed in summary["experiments"].items())
    lines = [
        f"Over {len(summary['experiments'])} seeds: {seeds}.",
        "",
        "| metric | model | mean | sd | range |",
        "|---|---|---:|---:|---|",
    ]
    for metric, models in summary["metrics"].items():
        for model, s in sorted(models.items(), key=lambda kv: -kv[1]["mean"]):
            lines.append(f"| {metric} | {model} | {s['mean']:.4g} | {s['sd']:.2g} | {s['min']:.4g}–{s['max']:.4g} |")
    if summary["pairs"]:
        lines += [
            "",
            "| models | accuracy difference per seed | held on | paired t-test over seeds |",
            "|---|---|---:|---:|",
        ]
        for pair in summary["pairs"]:
            p = "–" if pair["p_value"] is None else f"p {pair['p_value']:.2g}"
            per_seed = ", ".join(f"{d:+.3f}" for d in pair["differences"])
            lines.append(f"| {pair['a']} − {pair['b']} | {per_seed} | {pair['held']} of {pair['seeds']} | {p} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = cli.parser(__spec__.name, __doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="queue and run one experiment per seed")
    run.add_argument("name", help="the experiments are named NAME-seedK")
    run.add_argument("--seeds", type=int, default=3, help="how many: train.seed 0, 1, ..., N-1 (default 3)")
    run.add_argument("--first", type=int, default=0, help="the first seed")
    run.add_argument("--preset", help="a preset of presets/ to run on each seed")
    run.add_argument("--no-start", action="store_true", help="only queue them (start later with `dvc queue start`)")
    run.add_argument(
        "--poll",
        type=float,
        default=POLL,
        help=(
            f"seconds between looks at the queue (default {POLL:g}: each look is a dvc process, which a 2-core CPU "
            "feels)"
        ),
    )
    summary = sub.add_parser("summary", help="mean, spread and paired tests over the seeds, from dvc exp show")
    summary.add_argument("name", nargs="+", help="NAME (the experiments NAME-seedK) or the experiments' names")
    summary.add_argument("--out", type=Path, help="also write the Markdown here")
    summary.add_argument("--json", type=Path, help="and the numbers here")
    args, extra = parser.parse_known_args()
    if args.command == "run":
        if not 1 <= args.seeds <= MAX_SEEDS:
            raise StageError(f"--seeds {args.seeds}: from 1 to {MAX_SEEDS} (each is a whole training run)")
        if not 0 <= args.first <= MAX_SEED:
            raise StageError(f"--first {args.first}: a seed from 0 to {MAX_SEED:,} (train.seed's range)")
        if not 0 < args.poll <= 3600:
            raise StageError(f"--poll {args.poll:g}: a number of seconds from above 0 to 3600")
        seeds = list(range(args.first, args.first + args.seeds))
        for cmd in queue_commands(args.name, seeds, args.preset, extra):
            print(shlex.join(cmd if args.preset else ["dvc", *cmd[1:]]), flush=True)
            done = subprocess.run([sys.executable, "-m", *cmd])
            if done.returncode:
                sys.exit(done.returncode)
        if args.no_start:
            return
        print("seeds: dvc queue start -j 1 (one worker: each experiment uses every core)", flush=True)
        started = start_worker()
        if started.returncode:
            raise StageError(f"dvc queue start: {started.stdout.strip()}")
        wait(names(args.name, seeds), args.poll)
        print(f"seeds: all {len(seeds)} done; python -m pipeline.seeds summary {args.name}", flush=True)
        return
    found = experiments()
    if len(args.name) == 1 and args.name[0] not in found:
        pattern = re.compile(re.escape(args.name[0]) + r"-seed\d+")
        chosen = sorted(n for n in found if pattern.fullmatch(n))
    else:
        chosen = args.name
    missing = [n for n in chosen if n not in found]
    if not chosen or missing:
        raise StageError(
            f"no experiment {', '.join(missing) or args.name[0] + '-seedK'} in `dvc exp show`; known: "
            f"{', '.join(sorted(found)) or 'none'}"
        )
    result = summarise({n: found[n] for n in chosen})
    text = markdown(result)
    print(text, end="")
    if args.out:
        atomic.write_text(args.out, text)
    if args.json:
        atomic.write_json(args.json, result)


if __name__ == "__main__":
    cli.run(main)
