"""Map a function over archive members in worker processes, each holding the archive open once."""

from __future__ import annotations

import functools
import multiprocessing as mp
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from pipeline.errors import StageError
from pipeline.images import Archive
from pipeline.progress import track

_archive: Archive | None = None  # the worker process's own open archive


def map_archive(archive: Path, fn: Callable, items: Sequence, *, workers: int, desc: str) -> list:
    """`[fn(open_archive, item) for item in items]`, in order, on `workers` processes, with progress.

    `fn` must be a module-level function (or a partial of one): it is pickled to the workers. A
    worker that dies (a signal, the out-of-memory killer) stops the map within moments with a
    StageError, where a multiprocessing.Pool would wait for its lost task forever.
    """
    if workers <= 1 or len(items) <= 1:
        with Archive(archive) as opened:
            return [fn(opened, item) for item in track(items, total=len(items), desc=desc)]
    # fork on Linux: workers start in milliseconds and need nothing re-imported; they never touch torch.
    context = mp.get_context("fork" if sys.platform == "linux" else "spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_open, initargs=(str(archive),)) as pool:
        try:
            results = pool.map(functools.partial(_call, fn), items, chunksize=max(1, len(items) // (workers * 8)))
            return list(track(results, total=len(items), desc=desc))
        except BrokenProcessPool:
            raise StageError(
                f"{desc}: a worker process died (killed by a signal, or by the out-of-memory killer: see `dmesg`); "
                f"nothing was written. Run the stage again with more memory free, or fewer workers busy."
            ) from None


def _open(path: str) -> None:
    global _archive
    _archive = Archive(path)


def _call(fn: Callable, item):
    return fn(_archive, item)
