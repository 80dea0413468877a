"""What every stage's `python -m pipeline.<stage>` shares: one-line errors, and the cores it may use."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from pipeline.errors import ParamError, StageError


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
    except KeyboardInterrupt:
        print("interrupted: no output of this stage was completed", file=sys.stderr)
        sys.exit(130)


def cpu_count() -> int:
    """Cores this process may use (respects taskset and container CPU sets)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
