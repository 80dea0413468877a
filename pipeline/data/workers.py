"""Map a function over archive members in worker processes, each holding the archive open once."""

from __future__ import annotations

import concurrent.futures
import multiprocessing as mp
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from pipeline.common.errors import StageError
from pipeline.common.progress import Progress, track
from pipeline.data.images import Archive

_archive: Archive | None = None  # the worker process's own open archive
ITEM_SECONDS = 60.0  # the longest one item may take: a photo decodes in milliseconds, so more is a stall


def map_archive(
    archive: Path,
    fn: Callable,
    items: Sequence,
    *,
    workers: int,
    desc: str,
    item_seconds: float = ITEM_SECONDS,
    progress: bool = True,
) -> list:
    """`[fn(open_archive, item) for item in items]`, in order, on `workers` processes, with progress.

    `fn` must be a module-level function (or a partial of one): it is pickled to the workers. A
    worker that dies (a signal, the out-of-memory killer) or stalls (no result for `item_seconds`
    per item of its chunk, and one more) stops the map within moments with a StageError, where a
    multiprocessing.Pool would wait for its lost task forever. `progress`: a bar of its own (off
    where the caller draws one over several maps).
    """
    if workers <= 1 or len(items) <= 1:
        with Archive(archive) as opened:
            return [fn(opened, item) for item in (track(items, total=len(items), desc=desc) if progress else items)]
    size = max(1, len(items) // (workers * 8))
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    # fork on Linux: workers start in milliseconds and need nothing re-imported; they never touch torch.
    context = mp.get_context("fork" if sys.platform == "linux" else "spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_open, initargs=(str(archive),))
    out: list = []
    finished = False
    try:
        futures = [pool.submit(_call_all, fn, chunk) for chunk in chunks]
        with Progress(len(items), desc, unit="it", enabled=progress) as bar:
            for chunk, future in zip(chunks, futures):
                out += future.result(timeout=item_seconds * (len(chunk) + 1))  # in order: a late chunk waits its turn
                bar.update(len(chunk))
        finished = True
        return out
    except BrokenProcessPool:
        raise StageError(
            f"{desc}: a worker process died (killed by a signal, or by the out-of-memory killer: see `dmesg`); "
            f"nothing was written. Run the stage again with more memory free, or fewer workers busy."
        ) from None
    except concurrent.futures.TimeoutError:
        raise StageError(
            f"{desc}: a worker has been stuck for over {item_seconds * (len(chunk) + 1):.0f} s on {len(chunk)} items "
            f"({chunk[0]!r} to {chunk[-1]!r}); nothing was written. A file the decoder cannot get through? Rerun; if "
            "it stalls again at the same place, take that file out of the source."
        ) from None
    finally:
        if not finished:  # an error, Ctrl-C or a stall: a stuck worker never ends by itself
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.terminate()
        pool.shutdown(wait=finished, cancel_futures=True)


def _open(path: str) -> None:
    global _archive
    _archive = Archive(path)


def _call_all(fn: Callable, chunk: Sequence) -> list:
    return [fn(_archive, item) for item in chunk]
