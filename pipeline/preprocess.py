"""Stage `preprocess`: decode and resize every image once into one uint8 (N, C, S, S) array per split,
C = data.channels (3: RGB, grey photos replicated; 1: grey).

The arrays are .npy files that training memory-maps; labels sit beside them, and meta.json says
what they hold (size, channels, classes) for every later stage. The bytes depend only on the
archive, the split and the params, never on the number of worker processes.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from functools import partial
from pathlib import Path

import numpy as np

from pipeline.common import atomic, cli, formats
from pipeline.common.errors import StageError
from pipeline.data import layout
from pipeline.data.images import Archive, load
from pipeline.data.layout import (
    SPLITS,
    images_file,
    index_file,
    labels_file,
    read_index,
)
from pipeline.data.workers import map_archive
from pipeline.params import sections

CHUNK = 64  # images per task: large enough to amortise the memmap open, small enough to balance cores


def fill(archive: Archive, task: tuple[str, int, list[str]], *, size: int, policy: str, channels: int = 3) -> int:
    """Decode one chunk of members straight into rows [start, start + len) of the memory-mapped array."""
    path, start, names = task
    array = np.load(path, mmap_mode="r+")
    for i, name in enumerate(names):
        array[start + i] = load(archive.read(name), size, policy, channels)  # (C, S, S) uint8
    array.flush()
    return len(names)


def reserve(path: Path, split: str) -> None:
    """Give the (sparse) array file its disk blocks now. A memory-mapped page written where the disk
    has no block left kills the writer with SIGBUS and no message (or, with worker processes, looks
    like the out-of-memory killer); reserved, a full disk is one error here, before any decoding."""
    size = path.stat().st_size
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            if e.errno in (
                errno.EOPNOTSUPP,
                errno.EINVAL,
            ):  # a file system without fallocate: the free-space check above stands
                return
            raise
        free = shutil.disk_usage(path.parent).free
        raise StageError(
            f"the disk is full: preprocess needs {size / 2**30:.2f} GiB for the {split} array in {path.parent}, and "
            f"{free / 2**30:.2f} GiB are free; free some space or lower data.image_size (nothing was kept)"
        ) from None
    finally:
        os.close(fd)


def archive_sha256(archive: Path) -> str:
    """The download stage records it in source.json beside the archive: 825 MB need not be read again."""
    recorded = archive.parent / "source.json"
    if recorded.exists() and (sha := formats.read_json(recorded).get("sha256")):
        return sha
    return formats.sha256_file(archive)


def digest(archive: Path, split_dir: Path, image_size: int, resize: str, channels: int) -> str:
    """What the arrays are a function of, in one hash: training resumes only against it."""
    h = hashlib.sha256(f"{image_size} {resize} {channels} {archive_sha256(archive)}".encode())
    for name in SPLITS:
        h.update(index_file(split_dir, name).read_bytes())
    return h.hexdigest()


def preprocess(
    archive: Path, split_dir: Path, out: Path, *, image_size: int, resize: str, channels: int, workers: int
) -> dict:
    classes = layout.classes(split_dir)
    indexes = {name: read_index(index_file(split_dir, name), classes) for name in SPLITS}
    counts = {name: len(indexes[name][0]) for name in SPLITS}
    need = sum(counts.values()) * channels * image_size**2
    out.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out).free
    if need > free:
        raise StageError(
            f"preprocess needs {need / 2**30:.2f} GiB in {out} for {sum(counts.values())} images at "
            f"{image_size} px, and only {free / 2**30:.2f} GiB are free; free some space or lower data.image_size"
        )
    for name in SPLITS:
        members, labels = indexes[name]
        with atomic.atomic_path(images_file(out, name)) as tmp:
            shape = (len(members), channels, image_size, image_size)
            np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape).flush()
            reserve(tmp, name)
            tasks = [(str(tmp), i, members[i : i + CHUNK]) for i in range(0, len(members), CHUNK)]
            map_archive(
                archive,
                partial(fill, size=image_size, policy=resize, channels=channels),
                tasks,
                workers=workers,
                desc=name,
            )
        with atomic.atomic_path(labels_file(out, name)) as tmp, open(tmp, "wb") as f:
            np.save(f, labels)
    with atomic.atomic_path(layout.verdict_labels_file(out)) as tmp, open(tmp, "wb") as f:
        np.save(f, layout.verdict_labels(split_dir, *indexes["test"], classes))
    meta = {
        "image_size": image_size,
        "resize": resize,
        "channels": channels,
        "classes": list(classes),
        "images": counts,
        "bytes": need,
        "digest": digest(archive, split_dir, image_size, resize, channels),
        "verdicts": {
            k: v
            for k, v in formats.read_json(split_dir / "summary.json").get("verdicts", {}).items()
            if k != "test_labels"
        },
    }
    atomic.write_json(out / "meta.json", meta)
    return meta


def counts_sentence(images: dict[str, int]) -> str:
    """{"train": 3600, "val": 900, "test": 4500} -> "3,600 train, 900 val and 4,500 test images"."""
    parts = [f"{n:,} {name}" for name, n in images.items()]
    return (", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]) + " images"


def main() -> None:
    parser = cli.parser(__spec__.name, __doc__)
    parser.add_argument("--archive", type=Path, required=True)
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    data = sections.load_data()
    meta = preprocess(
        args.archive,
        args.split,
        args.out,
        image_size=data.image_size,
        resize=data.resize,
        channels=data.channels,
        workers=cli.cpu_count(),
    )
    kind = "RGB" if meta["channels"] == 3 else "grey"
    print(
        f"preprocess: {counts_sentence(meta['images'])} at {meta['image_size']} px, {kind} "
        f"({meta['bytes'] / 2**20:,.1f} MiB)"
    )


if __name__ == "__main__":
    cli.run(main)
