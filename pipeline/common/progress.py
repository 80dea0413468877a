"""Progress a person can watch: a tqdm bar on a terminal; elsewhere (a log file, `dvc queue logs`,
CI) a plain line every EVERY seconds, so a log holds whole lines, never a bar's carriage returns.
Written to stderr, beside the stage's results on stdout."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TextIO, TypeVar

from tqdm import tqdm

EVERY = 30.0  # s between plain progress lines when the output is not a terminal
MIB = 1 << 20
T = TypeVar("T")


def duration(seconds: float) -> str:
    """42 s, 3 min 05 s, 2 h 20 min, 3 d 04 h: two units at most, the way a person reads a wait."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes + (seconds >= 30), 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours + (minutes >= 30), 24)
    return f"{days} d {hours:02d} h"


def plural(n: int, word: str) -> str:
    """`1 model`, `2 models`, `12,500 photos`: a count and its noun, in the number it takes."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def about(seconds: float) -> str:
    """An estimate: `~3 min 05 s`, or `under 1 s`."""
    return "under 1 s" if seconds < 1 else f"~{duration(seconds)}"


class Progress:
    """One pass over `total` items (`unit`s). `update(n, **postfix)` after each batch; `close()` at
    the end (or use it as a context manager). Disabled (`enabled=False`): does nothing, for the
    processes other than process 0."""

    def __init__(
        self,
        total: int,
        desc: str,
        *,
        unit: str = "img",
        initial: int = 0,
        enabled: bool = True,
        file: TextIO | None = None,
        every: float = EVERY,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total, self.desc, self.unit, self.every, self.clock = total, desc, unit, every, clock
        self.file = file or sys.stderr
        self.enabled = enabled
        self.done = self.initial = initial  # already there before this run (a resumed download)
        self.postfix: dict[str, str] = {}
        self.start = self.last = clock()
        terminal = enabled and hasattr(self.file, "isatty") and self.file.isatty()
        scale = {"unit_scale": True, "unit_divisor": 1024} if unit == "B" else {}
        self.bar = (
            tqdm(
                total=total,
                initial=initial,
                desc=desc,
                unit=unit,
                file=self.file,
                leave=False,
                dynamic_ncols=True,
                **scale,
            )
            if terminal
            else None
        )

    def update(self, n: int, **postfix: float) -> None:
        if not self.enabled:
            return
        self.done += n
        if postfix:
            self.postfix = {k: f"{v:.4g}" for k, v in postfix.items()}
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix(self.postfix, refresh=False)
            self.bar.update(n)
        elif self.clock() - self.last >= self.every and self.done < self.total:
            self.last = self.clock()
            print(self.line(), file=self.file, flush=True)

    def line(self) -> str:
        """`vgg11 epoch 3/12: 1,280/4,000 img (32%), 24 img/s, 1 min 53 s left, loss 0.512`"""
        elapsed = self.clock() - self.start
        rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
        left = f", {duration((self.total - self.done) / rate)} left" if rate > 0 else ""
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
        if self.unit == "B":
            counts, speed = f"{self.done / MIB:,.1f}/{self.total / MIB:,.1f} MiB", f"{rate / MIB:,.1f} MiB/s"
        else:
            counts, speed = f"{self.done:,}/{self.total:,} {self.unit}", f"{rate:,.0f} {self.unit}/s"
        return f"{self.desc}: {counts}{share}, {speed}{left}{extra}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(items: Iterable[T], *, total: int, desc: str, unit: str = "it") -> Iterator[T]:
    """`items`, one Progress step each."""
    with Progress(total, desc, unit=unit) as progress:
        for item in items:
            yield item
            progress.update(1)
