"""Files that appear complete or not at all: what every stage writes, DVC and the next stage read."""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.common import files


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary name beside `path`; it becomes `path` only when the block finishes.

    Same folder, so the final `os.replace` is a rename on one file system: a reader (DVC, the next
    stage) sees the old file or the whole new one, never a prefix. On any exception, KeyboardInterrupt
    included, the temporary file is removed.
    """
    path = Path(path)
    files.replaceable(path)  # never a device, a FIFO or a link turned into a regular file
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


def write_bytes(path: Path | str, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def torch_save(obj: Any, path: Path | str) -> None:
    """torch.save, atomically. torch reports a full disk as a RuntimeError ("file write failed"):
    it becomes the OSError it is (ENOSPC when the disk has under 64 MiB left), so the command's
    one-line disk-full message applies, and the partial file is removed like any other."""
    import torch  # here: the data stages' worker processes never import torch

    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as e:
            if "write" not in str(e):
                raise
            full = shutil.disk_usage(tmp.parent).free < 64 << 20
            raise OSError(
                errno.ENOSPC if full else errno.EIO, "No space left on device" if full else "write failed", str(path)
            ) from e


def write_json(path: Path | str, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
