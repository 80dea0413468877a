"""Shared by every stage: files that appear complete or not at all, the CLI wrapper, the core count."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary name beside `path`; it becomes `path` only when the block finishes.

    Same folder, so the final `os.replace` is a rename on one file system: a reader (DVC, the next
    stage) sees the old file or the whole new one, never a prefix. On any exception, KeyboardInterrupt
    included, the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path | str, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: Path | str) -> Any:
    return json.loads(Path(path).read_text())


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def run(main: Callable[[], Any]) -> None:
    """Run a stage's main(): expected failures print one clear line and exit 2, not a traceback wall."""
    from pipeline.params import ParamError

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


class StageError(RuntimeError):
    """A failure the user can act on (missing data, network, weights); its message says what to do."""
