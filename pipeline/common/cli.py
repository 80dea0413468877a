"""What every `python -m pipeline.<command>` shares: one-line errors, the cores it may use, and the
pipeline's own paths (dvc.yaml's `vars`) for the commands that run beside it."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from pipeline.common import files
from pipeline.common.errors import ParamError, StageError


def parser(module: str, description: str | None, **kwargs) -> argparse.ArgumentParser:
    """An argument parser whose usage line is the command a user types, `python -m <module>`
    (argparse would name the file, `train.py`, which cannot be run on its own)."""
    return argparse.ArgumentParser(prog=f"python -m {module}", description=description, **kwargs)


def run(main: Callable[[], Any]) -> None:
    """Run a stage's main(): expected failures print one clear line and exit 2, not a traceback wall."""
    try:
        main()
    except ParamError as e:
        print(f"error: params.yaml: {e}", file=sys.stderr)
        sys.exit(2)
    except StageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            where = f" writing {e.filename}" if e.filename else ""
            print(
                f"error: the disk is full ({e.strerror}){where}: free some space and rerun; no partial output was kept",
                file=sys.stderr,
            )
            sys.exit(2)
        if e.errno not in files.FILE_SYSTEM_ERRORS:
            raise
        name = str(e.filename) if e.filename else ""
        where = f"{name[:200]}{'…' if len(name) > 200 else ''}: " if name else ""
        print(f"error: {where}{files.said(e)}; no partial output was kept", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(
            "interrupted: no output of this stage was completed (nothing half-written is kept); the epochs "
            "training finished are in resume/, and a rerun (dvc repro, or the same dvc exp run) continues from them",
            file=sys.stderr,
        )
        sys.exit(130)


def cpu_count() -> int:
    """Cores this process may use (respects taskset and container CPU sets)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def pipeline_paths(dvc_yaml: Path = Path("dvc.yaml")) -> dict[str, str]:
    """Where the stages read and write, as dvc.yaml's `vars` define them once (`models`, `metrics`,
    ...), for the commands that run beside the pipeline; {} when there is no dvc.yaml here."""
    if not dvc_yaml.is_file():
        return {}
    for block in yaml.safe_load(dvc_yaml.read_text()).get("vars", []):
        if isinstance(block, dict) and "paths" in block:
            return dict(block["paths"])
    return {}


def writable_file(path: Path, flag: str) -> None:
    """StageError unless `path` can be written as a file: not a folder, and under a folder that is
    writable (missing folders are made by the write, so the nearest one that exists must be a
    folder one can write in). Checked before the work whose result it will hold."""
    if path.is_dir() and not path.is_symlink():
        raise StageError(f"{flag} {path} is a folder: give a file name")
    folder = path.absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise StageError(f"{flag} {path}: {folder} is a file, not a folder")
    files.replaceable(path, flag)  # a device, a FIFO, a socket or a link there: refused, never replaced
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise StageError(f"{flag} {path}: not writable here")
