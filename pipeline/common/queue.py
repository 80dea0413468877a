"""DVC's experiment queue from Python: queue experiments, run them with one worker, follow them
until each has ended. Shared by `pipeline.seeds` (one experiment on several seeds) and
`pipeline.grid` (the learning-curve grid)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from pipeline.common.errors import StageError

POLL = 10.0  # seconds between looks at the queue


def absolute_source(extra: list[str]) -> list[str]:
    """`-S data.source=PATH` with PATH absolute when it is a file or folder here: queued experiments
    run in a copy of the workspace elsewhere, where a relative path means nothing."""
    out = list(extra)
    for i, (flag, value) in enumerate(zip(extra, extra[1:])):
        if flag in ("-S", "--set-param") and value.startswith("data.source="):
            path = Path(value.partition("=")[2])
            if not path.is_absolute() and path.exists():
                out[i + 1] = f"data.source={path.resolve()}"
    return out


def dvc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True)


def start_worker() -> subprocess.CompletedProcess:
    """`dvc queue start -j 1`, its output in .dvc/tmp/seeds-queue-start.log."""
    return run_detached(
        [sys.executable, "-m", "dvc", "queue", "start", "-j", "1"], Path(".dvc", "tmp", "seeds-queue-start.log")
    )


def run_detached(cmd: list[str], log: Path) -> subprocess.CompletedProcess:
    """Run `cmd`, which leaves a daemon behind (DVC's queue worker), and return when `cmd` itself
    ends, its output (stdout and stderr) read back from `log`. The daemon inherits the command's
    output: through a pipe, that pipe would stay open for the worker's whole life, and the call
    would return only once the queue is empty, with no progress line before."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w+") as out:
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)
        out.seek(0)
        return subprocess.CompletedProcess(done.args, done.returncode, out.read(), "")


def wait(expected: list[str], poll: float = POLL, label: str = "seeds") -> None:
    """Print a line as each queued experiment ends; return when all have (an error if one failed)."""
    reported: set[str] = set()
    while True:
        status = dvc("queue", "status").stdout
        states = {}
        for line in status.splitlines():
            words = line.split()
            for exp in expected:
                if exp in words:
                    states[exp] = next((w for w in words if w in ("Queued", "Running", "Success", "Failed")), "?")
        for exp, state in states.items():
            if state in ("Success", "Failed") and exp not in reported:
                reported.add(exp)
                print(
                    f"{label}: {exp} {'done' if state == 'Success' else 'FAILED'} ({len(reported)} of "
                    f"{len(expected)}); dvc queue logs {exp}",
                    flush=True,
                )
        if len(reported) == len(expected):
            failed = [exp for exp in expected if states.get(exp) == "Failed"]
            if failed:
                raise StageError(f"{', '.join(failed)} failed: `dvc queue logs <name>` shows why")
            return
        if "Worker status: 0 active" in status and "Queued" in states.values():
            start_worker()  # an idle worker exits after about 10 s: one to run what is left
        time.sleep(poll)


def experiments(shown: list[dict] | None = None) -> dict[str, dict]:
    """`dvc exp show --json` (run here unless given) → {experiment name: {"params": params.yaml,
    "metrics": metrics.json, "failed": whether the run failed or was killed}}, for every experiment
    with metrics (a failed one keeps those of the workspace it started from)."""
    if shown is None:
        done = dvc("exp", "show", "--json")
        if done.returncode:
            raise StageError(f"dvc exp show: {done.stderr.strip()}")
        shown = json.loads(done.stdout)
    found = {}
    for row in shown:
        for exp in row.get("experiments") or []:
            for rev in exp.get("revs") or []:
                data = rev.get("data") or {}
                if rev.get("name") and data.get("metrics"):
                    found[rev["name"]] = {
                        "params": data.get("params", {}).get("params.yaml", {}).get("data", {}),
                        "metrics": data["metrics"].get("metrics.json", {}).get("data", {}),
                        "failed": bool(rev.get("error")),
                    }
    return found
