"""The experiments as one compact table, readable on any terminal: `python -m pipeline.experiments`.

    python -m pipeline.experiments                 # the workspace, its baseline and their experiments
    python -m pipeline.experiments --width 100     # narrower (default: the terminal's, at most 160)
    python -m pipeline.experiments --json out.json

`dvc exp show` prints one column per param and metric, which no terminal holds for eight models
(DVC folds what does not fit into `…`). This prints one line per experiment instead, its name,
state (queued, running and failed ones too) and the params it changed from its baseline as
`key=value`, wrapped to the width; then one line per model it evaluated: the test accuracy
with its 95% interval (the number of test photos from the experiment's reports/leaderboard.json,
when it can be read) and the training time. From `dvc exp show --json`; flags after the options go
to it (`-A`: experiments of every commit).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from pipeline.common import atomic, cli, schema
from pipeline.common.errors import StageError
from pipeline.evaluation.metrics import wilson_interval

COLUMNS = ("model", "test accuracy (95% CI)", "train")


def shown(text: str) -> list[dict]:
    """The rows of `dvc exp show --json`, in its order: {name, rev, state, params (flat), metrics}:
    the workspace, each baseline commit, then its experiments (queued and failed included)."""
    out = []
    for row in json.loads(text or "[]"):
        workspace = row["rev"] == "workspace"
        out.append(
            _row(
                row,
                "workspace" if workspace else row.get("name") or row["rev"][:7],
                "workspace" if workspace else "baseline",
            )
        )
        for experiment in row.get("experiments") or []:
            rev = experiment["revs"][0]
            state = (experiment.get("executor") or {}).get("state") or ("failed" if rev.get("error") else "success")
            out.append(_row(rev, experiment.get("name") or rev.get("name") or rev["rev"][:7], state))
    return out


def _row(rev: dict, name: str, state: str) -> dict:
    data = rev.get("data") or {}
    params = (data.get("params") or {}).get("params.yaml", {}).get("data") or {}
    metrics = (data.get("metrics") or {}).get("metrics.json", {}).get("data") or {}
    return {
        "name": name,
        "rev": rev.get("rev", ""),
        "state": state,
        "params": schema.flatten(params),
        "metrics": metrics,
    }


def against_baseline(rows: list[dict]) -> list[dict[str, Any]]:
    """For each row, the params whose value differs from its baseline's (the commit it ran from;
    for the workspace, the first commit shown): what the experiment changed."""
    baselines = [r for r in rows if r["state"] == "baseline"]
    changes, base = [], baselines[0]["params"] if baselines else {}
    for row in rows:
        if row["state"] == "baseline":
            base = row["params"]
            changes.append({})
            continue
        mine = row["params"]
        keys = sorted(mine.keys() | base.keys(), key=_order)
        changes.append(
            {
                k: mine.get(k)
                for k in keys
                if json.dumps(mine.get(k), sort_keys=True) != json.dumps(base.get(k), sort_keys=True)
            }
        )
    return changes


def _order(key: str) -> tuple[int, str]:
    """`model`, then the recipe, then each model's own keys, the data, the rest; the source (a path) last."""
    rank = next(
        (
            i
            for i, start in enumerate(("model", "train.", "models.", "data.", ""))
            if key == start or (start.endswith(".") or not start) and key.startswith(start)
        ),
        4,
    )
    return (5 if key == "data.source" else rank, key)


def table(rows: list[dict], tests: dict[str, int], width: int) -> tuple[str, list[dict]]:
    """The text table and its rows as data: one line per experiment (its name, state and what it
    changed from its baseline, cut to `width`), then one per model it evaluated. `tests`: each
    experiment's number of test photos, for the interval (absent: the accuracy alone)."""
    records, lines = [], []
    for row, changed in zip(rows, against_baseline(rows)):
        said = " ".join(f"{k}={_value(v)}" for k, v in changed.items()) or (
            "(its experiments below)" if row["state"] == "baseline" else "(as its baseline)"
        )
        lines += textwrap.wrap(
            f"{row['name']}  [{row['state']}]  {said}", width, subsequent_indent="      ", break_on_hyphens=False
        )
        accuracies = row["metrics"].get("acc") or {}
        seconds = row["metrics"].get("train_s") or {}
        n = tests.get(row["name"])
        for model, acc in accuracies.items():
            interval = wilson_interval(round(acc * n), n) if n else None
            record = {
                "experiment": row["name"],
                "state": row["state"],
                "model": model,
                "accuracy": acc,
                "accuracy_ci95": interval,
                "test_images": n,
                "train_seconds": seconds.get(model),
                "changed": changed,
            }
            records.append(record)
            lines.append(_cut(f"    {model:<20s}{_accuracy(record):<24s}{_time(record['train_seconds'])}", width))
    return "\n".join(lines) + "\n", records


def _value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ",".join(map(_value, value)) + "]"
    if isinstance(value, dict) or value is None or isinstance(value, bool):
        return json.dumps(value, separators=(",", ":"))  # null, true: as params.yaml writes them
    text = str(value)
    return (
        "…/" + text.rsplit("/", 2)[-2] + "/" + text.rsplit("/", 1)[-1] if text.count("/") > 2 else text
    )  # a path: its last two parts


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _accuracy(r: dict) -> str:
    if r["accuracy"] is None:
        return ""
    if r["accuracy_ci95"] is None:
        return f"{r['accuracy']:.3f}"
    low, high = r["accuracy_ci95"]
    return f"{r['accuracy']:.3f} ({low:.3f}–{high:.3f})"


def _time(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def test_photos(rows: list[dict], leaderboard: str) -> dict[str, int]:
    """Each finished experiment's number of test photos, read from its leaderboard (one read per
    experiment, through dvc.api); an experiment whose leaderboard cannot be read is left out."""
    import dvc.api

    found = {}
    for row in rows:
        if not row["metrics"].get("acc"):
            continue
        try:
            if row["state"] == "workspace":
                board = json.loads(Path(leaderboard).read_text())
            else:
                board = json.loads(dvc.api.read(leaderboard, rev=row["rev"]))
            found[row["name"]] = board["models"][0].get("test_images") or _from_pairs(board)
        except Exception:  # not cached here, an older version's leaderboard, a failed experiment
            continue
    return {k: v for k, v in found.items() if v}


def _from_pairs(board: dict) -> int | None:
    """An older leaderboard's count: the photos of its first pair (it has pairs from two models)."""
    return next((pair["images"] for pair in board.get("pairs") or [] if "images" in pair), None)


def main() -> None:
    parser = cli.parser(__spec__.name, __doc__)
    parser.add_argument(
        "--width", type=int, default=min(160, shutil.get_terminal_size((120, 20)).columns), help="characters per line"
    )
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args, extra = parser.parse_known_args()
    if args.width < 60:
        raise StageError(f"--width {args.width}: at least 60 characters")
    done = subprocess.run(
        [sys.executable, "-m", "dvc", "exp", "show", "--json", *extra], capture_output=True, text=True
    )
    if done.returncode:
        raise StageError(f"dvc exp show: {done.stderr.strip() or done.stdout.strip()}")
    rows = shown(done.stdout)
    leaderboard = str(Path(cli.pipeline_paths().get("reports", "reports")) / "leaderboard.json")
    text, records = table(rows, test_photos(rows, leaderboard), args.width)
    sys.stdout.write(text)
    if args.json:
        atomic.write_json(args.json, records)


if __name__ == "__main__":
    cli.run(main)
