"""Tensors from a file a stranger may have written (a model file, a `weights:` state dict, a resume
state), read as data and bounded before anything is allocated, and checked before they are used."""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from pipeline.common import files
from pipeline.common.errors import StageError

# Bytes a weights file may hold, on disk and once its tensors are read: VGG-11, the zoo's largest
# model, is 515 MB in fp32; a resume state holds it about three times.
MAX_BYTES = 2 << 30
# Bytes of its pickle (torch's `data.pkl`: the names, numbers and nesting around the tensors, which
# are stored apart): a model file's is tens of KB, with at most 1,000 class names of 100 characters;
# a resume state's history of 10,000 epochs about 1 MB. The weights-only unpickler is Python and
# reads about 4 MB a second here (Zen 3): a model file naming a million classes, 17 MB of pickle,
# took 4.4 s and hundreds of MB before its classes could be refused.
MAX_PICKLE_BYTES = 4 << 20


def sizes(path: Path) -> tuple[int, int]:
    """(bytes, pickled bytes) reading the file allocates: the sum of its zip members' sizes as its
    directory declares them (torch's format is a zip; a member stored deflated would expand a 16-MB
    file to gigabytes), and its pickle member's. A legacy (non-zip) torch file, such as the ImageNet
    weights torchvision published before 2020, allocates about its own size; its pickle and tensors
    are one stream, not told apart here (0 pickled bytes), so its size is its only bound."""
    try:
        with zipfile.ZipFile(path) as z:
            members = z.infolist()
            pickled = sum(m.file_size for m in members if m.filename.rpartition("/")[2] == "data.pkl")
            return sum(m.file_size for m in members), pickled
    except zipfile.BadZipFile:
        return Path(path).stat().st_size, 0


def check(path: Path | str, what: str, limit: int = MAX_BYTES, noun: str = "a file of tensors") -> None:
    """StageError naming `what` unless `path` is a regular file whose bytes, on disk and unpacked,
    are within `limit`, and its pickle within MAX_PICKLE_BYTES: what reading it may cost, known from
    its zip directory before a byte is unpickled."""
    files.regular(path, what, limit)
    unpacked, pickled = sizes(Path(path))
    if unpacked > limit:
        raise StageError(f"{what} {path} unpacks to {unpacked:,} bytes, more than the {limit:,} it may hold")
    if pickled > MAX_PICKLE_BYTES:
        raise StageError(
            f"{what} {path} holds {pickled:,} bytes of pickled records besides its tensors, more than "
            f"the {MAX_PICKLE_BYTES:,} {noun} needs"
        )


def load(path: Path | str, what: str, limit: int = MAX_BYTES, noun: str = "a file of tensors") -> Any:
    """`torch.load(path, weights_only=True)` on the CPU, once `check` passes; every failure a
    one-line StageError naming `what`."""
    check(path, what, limit, noun)
    try:
        with warnings.catch_warnings():  # torch warns about the pickle it is about to refuse: the error says it
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or empty file, another format, a pickle that wants more than tensors
        said = (str(e).splitlines() or [""])[0][:200]
        raise StageError(
            f"{what} {path} is not {noun} this code can read ({type(e).__name__}{': ' + said if said else ''})"
        ) from None


def problem(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> str | None:
    """Why the tensors of `state` cannot stand for those of `expected` (a state dict of the
    architecture, on the meta device or not), or None: each of the same dtype (fp32 weights, int64
    counters; float64 or int8 would be cast silently, complex would lose a part) and finite (a NaN
    weight makes every prediction NaN). Names and shapes are the caller's check."""
    for key, reference in expected.items():
        tensor = state.get(key)
        if tensor is None:
            continue
        if tensor.dtype != reference.dtype:
            return (
                f"{key} is {str(tensor.dtype).removeprefix('torch.')}, not "
                f"{str(reference.dtype).removeprefix('torch.')}"
            )
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return f"{key} holds NaN or infinite values"
    return None
