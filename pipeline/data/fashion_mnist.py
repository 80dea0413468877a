"""Fashion-MNIST from its four IDX files: found locally or downloaded, checked, written as class-folder PNGs.

The official files (Zalando Research) hold 60,000 training and 10,000 test images, 28×28 grey, in
LeCun's IDX format: a big-endian header, then the raw uint8 payload. `write_archive` turns them into a
zip the rest of the pipeline reads like any photo archive: train/<class>/<index>.png, test/<class>/...
"""

from __future__ import annotations

import io
import math
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from pipeline.common import atomic
from pipeline.common.errors import StageError
from pipeline.common.formats import zip_entry
from pipeline.data.fetch import Remote

# Label i of the IDX files is CLASSES[i]: the official order, names made safe as folder names.
CLASSES = ("t-shirt-top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot")
# The four files, by the key `find` returns them under; each may also come gzip'd, as <name>.gz.
FILES = {
    "train-images": "train-images-idx3-ubyte",
    "train-labels": "train-labels-idx1-ubyte",
    "t10k-images": "t10k-images-idx3-ubyte",
    "t10k-labels": "t10k-labels-idx1-ubyte",
}
PARTS = {
    "train": ("train-images", "train-labels"),
    "test": ("t10k-images", "t10k-labels"),
}  # the archive's own train/ and test/

# The mirror torchvision downloads from (pytorch/vision, torchvision/datasets/mnist.py, FashionMNIST.mirrors).
MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# Sizes (bytes) and sha256 from tensorflow/datasets, tensorflow_datasets/url_checksums/fashion_mnist.txt,
# for these exact URLs; the sizes agree with torchvision's md5-checked files of the same names.
REMOTES: tuple[Remote, ...] = tuple(
    Remote(url=MIRROR + name, size=size, sha256=sha256, filename=name)
    for name, size, sha256 in (
        ("train-images-idx3-ubyte.gz", 26421880, "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
        ("train-labels-idx1-ubyte.gz", 29515, "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
        ("t10k-images-idx3-ubyte.gz", 4422102, "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
        ("t10k-labels-idx1-ubyte.gz", 5148, "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
    )
)

IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801  # 0x08: unsigned bytes; last byte: number of dimensions
_KINDS = {IMAGES_MAGIC: "image", LABELS_MAGIC: "label"}
_GZIP_MAGIC = b"\x1f\x8b"
# Bytes one IDX file may hold, gzip'd or not: 2.7× Fashion-MNIST's largest (train images, 47 MB). A
# gzip bomb (8 MB that inflate to 8 GiB) stops at this many, and so does a huge file under the name.
MAX_IDX_BYTES = 128 << 20


# ---------------------------------------------------------------- reading


def read_images(data: bytes, name: str) -> np.ndarray:
    """(N, rows, cols) uint8 pixels, 0 = background, of an IDX image file, raw or gzip'd; `name` is for errors."""
    return _read(data, name, IMAGES_MAGIC)


def read_labels(data: bytes, name: str) -> np.ndarray:
    """(N,) uint8 labels of an IDX label file, raw or gzip'd; `name` is for errors."""
    return _read(data, name, LABELS_MAGIC)


def _read(data: bytes, name: str, magic: int) -> np.ndarray:
    if data[:2] == _GZIP_MAGIC:
        data = _inflate(data, name)
    ndim = magic & 0xFF
    header = 4 + 4 * ndim  # bytes: the magic, then one big-endian uint32 per dimension
    found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if found != magic:
        what = f"magic 0x{found:08x}" if found is not None else f"{len(data)} bytes"
        other = f", an IDX {_KINDS[found]} file" if found in _KINDS else ""
        raise StageError(f"{name}: not an IDX {_KINDS[magic]} file ({what}{other}; expected magic 0x{magic:08x})")
    if len(data) < header:
        raise StageError(f"{name}: truncated: {len(data)} bytes, expected a {header}-byte header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + math.prod(dims)  # Python integers: 4 declared sizes of 2³² cannot overflow
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "trailing data"
        shape = " × ".join(map(str, dims))
        raise StageError(f"{name}: {problem}: {len(data):,} bytes, expected {expected:,} (a header and {shape} bytes)")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()  # writable, owns its memory


def _inflate(data: bytes, name: str) -> bytes:
    """A gzip stream's content, at most MAX_IDX_BYTES of it: inflating stops there, whatever the
    stream claims, so memory stays bounded."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip's header and trailer
    try:
        out = inflater.decompress(data, MAX_IDX_BYTES + 1)
    except zlib.error as e:  # a bad header, corrupt deflate data
        raise StageError(f"{name}: not gzip data, or a damaged copy ({e})") from e
    if len(out) > MAX_IDX_BYTES:
        raise StageError(
            f"{name}: inflates to more than {MAX_IDX_BYTES >> 20} MiB, more than any Fashion-MNIST file (a damaged or "
            "hostile file)"
        )
    if not inflater.eof:
        raise StageError(f"{name}: a cut-off gzip stream (a damaged copy)")
    return out


def _bounded(name: str, size: int, read: Callable[[], bytes]) -> Callable[[], bytes]:
    """`read`, refused from the file's size alone when it is larger than MAX_IDX_BYTES."""

    def checked() -> bytes:
        if size > MAX_IDX_BYTES:
            raise StageError(
                f"{name}: {size:,} bytes, more than any Fashion-MNIST file ({MAX_IDX_BYTES >> 20} MiB at most)"
            )
        return read()

    return checked


# ---------------------------------------------------------------- finding and fetching


def find(source: Path) -> dict[str, bytes]:
    """The bytes of the four files, by FILES' keys, from a folder (at any depth) or a .zip.

    Each is found by its file name, with or without .gz. A file and its .gz side by side (torchvision's
    raw/ folder keeps both) count as one, the .gz; two copies elsewhere (MNIST beside Fashion-MNIST: the
    same names) are an error, since which one is meant cannot be told.
    """
    source = Path(source)
    if source.is_dir():
        names = {
            str(p): _bounded(str(p), p.stat().st_size, p.read_bytes) for p in sorted(source.rglob("*")) if p.is_file()
        }
        where = f"{source} (searched recursively)"
        return _pick(names, where)
    if source.is_file() and zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            names = {
                i.filename: _bounded(i.filename, i.file_size, lambda n=i.filename: archive.read(n))
                for i in archive.infolist()
                if not i.is_dir()
            }
            return _pick(names, f"the zip {source}")
    if source.exists():
        raise StageError(f"{source} is neither a folder nor a .zip: give the folder or zip that holds {_expected()}")
    raise StageError(f"{source} not found: give the folder or zip that holds {_expected()}")


def _pick(readers: dict[str, Callable[[], bytes]], where: str) -> dict[str, bytes]:
    """`readers`: {path: a function returning its bytes}; only the chosen ones are read."""
    found: dict[str, bytes] = {}
    missing = []
    for key, stem in FILES.items():
        paths = [p for p in readers if PurePosixPath(p.replace("\\", "/")).name in (stem, stem + ".gz")]
        paths = [p for p in paths if p + ".gz" not in paths]  # a file beside its own .gz: take the .gz
        if not paths:
            missing.append(f"{stem}[.gz]")
        elif len(paths) > 1:
            copies = ", ".join(paths)
            raise StageError(f"{len(paths)} copies of {stem} in {where}: {copies}; keep one, or point at its folder")
        else:
            found[key] = readers[paths[0]]()
    if missing:
        raise StageError(f"missing {', '.join(missing)} in {where}; the Fashion-MNIST files are {_expected()}")
    return found


def _expected() -> str:
    return ", ".join(f"{stem}[.gz]" for stem in FILES.values())


# ---------------------------------------------------------------- the archive


def write_archive(found: dict[str, bytes], out: Path) -> dict:
    """Check the four files against each other and write them as a zip of grey PNGs at `out`.

    Members: train/<class>/<index:05d>.png and test/<class>/<index:05d>.png, index = the image's
    position in its IDX file, in split, class, index order; same input, same bytes. Returns
    {"train": n, "test": n, "size": [rows, cols]}. Time: 150-200 µs an image on one core, mostly Pillow's
    PNG encoder, so 11-14 s for Fashion-MNIST's 70,000; a thread pool gave no clear gain on 2 cores.
    """
    splits = {split: _split(found, images, labels) for split, (images, labels) in PARTS.items()}
    sizes = {split: list(images.shape[1:]) for split, (images, _) in splits.items()}
    if sizes["train"] != sizes["test"]:
        raise StageError(f"train images are {sizes['train']} pixels but test images {sizes['test']}: not one data set")
    with atomic.atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        for split, (images, labels) in splits.items():
            for label, name in enumerate(CLASSES):
                for index in np.flatnonzero(labels == label):
                    archive.writestr(zip_entry(f"{split}/{name}/{index:05d}.png"), _png(images[index]))
    return {split: len(labels) for split, (_, labels) in splits.items()} | {"size": sizes["train"]}


def _split(found: dict[str, bytes], images_key: str, labels_key: str) -> tuple[np.ndarray, np.ndarray]:
    images = read_images(found[images_key], FILES[images_key])
    labels = read_labels(found[labels_key], FILES[labels_key])
    if len(images) != len(labels):
        raise StageError(
            f"{len(images):,} images in {FILES[images_key]} but {len(labels):,} labels in {FILES[labels_key]}: "
            f"the files do not belong together"
        )
    wrong = np.flatnonzero(labels >= len(CLASSES))
    if len(wrong):
        raise StageError(
            f"{FILES[labels_key]}: label {labels[wrong[0]]} at index {wrong[0]} ({len(wrong):,} such), "
            f"but Fashion-MNIST's labels are 0..{len(CLASSES) - 1}"
        )
    return images, labels


def _png(pixels: np.ndarray) -> bytes:
    """An 8-bit grey PNG of (rows, cols) uint8 pixels."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")  # (rows, cols) uint8: mode L
    return buffer.getvalue()
