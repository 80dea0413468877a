"""Presets: a named set of params for one experiment (presets/<name>.yaml), run the DVC way.

    python -m pipeline.preset cpu-zoo -S data.source=path/to/train.zip   # runs dvc exp run with both
    python -m pipeline.preset cpu-zoo --print                             # only prints that command

A preset is a partial params.yaml. It becomes `-S key=value` flags of one `dvc exp run`, so the
experiment records every value it changed (`dvc exp show`) and params.yaml itself is left to DVC.
Everything after the preset's name goes to `dvc exp run` as well (`-n NAME`, `--queue`, more `-S`);
a `-S` given there wins over the preset's value for the same key. params.yaml with all of them
applied is checked first: a stale preset or a typo stops here, naming the key, before DVC starts.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from pipeline.common import cli, schema
from pipeline.params.presets import carried_over, command, preset_file, read, user_overrides


def main() -> None:
    parser = cli.parser(__spec__.name, __doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset", help="a name in presets/ (cpu-zoo, cpu-64, ...) or a path to a .yaml file")
    parser.add_argument("--print", action="store_true", help="print the dvc command instead of running it")
    args, extra = parser.parse_known_args()
    preset = read(preset_file(args.preset))
    cmd = command(preset, extra)
    if kept := carried_over(set(schema.flatten(preset)) | set(user_overrides(extra))):
        print(
            f"note: params.yaml differs from the last commit in {'; '.join(kept[:4])}{'; …' if len(kept) > 4 else ''}: "
            "values an earlier experiment left in the workspace, which this one keeps (git checkout HEAD -- "
            "params.yaml first to start from the commit: DVC stages the file too)",
            flush=True,
        )
    print(shlex.join(cmd), flush=True)
    if not args.print:
        sys.exit(run_dvc(cmd[1:]))


class NothingToRestore(logging.Filter):
    """DVC's `No file hash info found for '<output>'. It won't be created.`, one line per output:
    before an experiment DVC restores the outputs dvc.lock records, and without a dvc.lock (a fresh
    clone) there are none to restore. Said of every output of a first run, it only alarms."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No file hash info found for ")


def run_dvc(argv: list[str]) -> int:
    """DVC's command line, in this process, without the warnings above while there is no dvc.lock
    (anything else DVC says, it still says)."""
    from dvc.cli import main as dvc

    if not Path("dvc.lock").exists():
        logging.getLogger("dvc_data.index.checkout").addFilter(NothingToRestore())
    return dvc(argv)


if __name__ == "__main__":
    cli.run(main)
