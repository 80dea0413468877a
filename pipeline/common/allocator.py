"""glibc's memory allocator, tuned for tensors before a command starts.

By default glibc serves every allocation above a threshold (128 KiB, growing to 32 MiB at most) with
a fresh mmap and returns it to the kernel when it is freed; a CPU forward pass at 224 px allocates
and frees activations of tens of MB for every layer of every batch, and the kernel must then fault in
and zero every page again. Raising the mmap and trim thresholds keeps that memory in the process for
the next batch. Measured on the 2-core AMD EPYC (Zen 4, bf16) of docs/speed.md: EfficientNet-Lite0's
features at 224 px 61-62 → 165 img/s (the cpu-transfer preset's training is nearly all that pass),
a training step +6 to +20% (docs/speed.md, *Memory allocator*).

The thresholds are glibc tunables, read once when a process starts: `python -m pipeline.<command>`
restarts itself with them (os.execve, the same process id and arguments) before it imports anything
heavy. A `GLIBC_TUNABLES` that already sets either threshold is the user's choice and is kept, as is
every other tunable it sets; other C libraries (macOS, musl) are left alone.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

# bytes: allocations up to 4 GiB from the heap, and freed memory kept up to 16 GiB
TUNABLES = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=17179869184"
OWN = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold")


def libc() -> str:
    """`glibc 2.36`, or "" for another C library."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError, AttributeError):  # not a glibc system, or no confstr at all
        return ""


def tuned(env: Mapping[str, str], library: str) -> dict[str, str] | None:
    """The environment to restart with, or None when there is nothing to do: not glibc, or
    GLIBC_TUNABLES already sets one of the thresholds (ours, after a restart, or the user's)."""
    current = env.get("GLIBC_TUNABLES", "")
    if not library.startswith("glibc") or any(name in current for name in OWN):
        return None
    return {**env, "GLIBC_TUNABLES": f"{current}:{TUNABLES}" if current else TUNABLES}


def restart_tuned() -> None:
    """Restart this process with the tuned allocator when it is `python -m pipeline.<command>`
    (sys.argv[0] is "-m" while the package is imported), and only then: an import from Python (a
    test, a notebook) never restarts anything."""
    if sys.argv[:1] != ["-m"] or not hasattr(sys, "orig_argv") or not hasattr(os, "execve"):
        return
    env = tuned(os.environ, libc())
    if env is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
