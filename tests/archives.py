"""Small test archives built with Pillow and zipfile: the junk real Dogs-vs-Cats archives hold, each
member with its known outcome, so tests of any stage can assert against it.

Images are tiny and synthetic (solid colours, stripes, seeded noise); bytes are deterministic.
"""

from __future__ import annotations

import gzip
import io
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

LAYOUTS = ("kaggle", "microsoft", "folders")
WHITE = (255, 255, 255)
JPEG_TOLERANCE = 8  # per channel (0..255) for a solid region of a quality-95 JPEG, chroma subsampled

# the first bytes of every OLE2 compound file (what a real Thumbs.db is), then junk
THUMBS_DB = bytes.fromhex("d0cf11e0a1b11ae1") + bytes(24) + b"\xfe\xff\x09\x00" + b"junk" * 120
README = b"Microsoft Kaggle Cats and Dogs Dataset\r\nThis dataset is provided as is.\r\n"
LICENCE_PDF = b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n%%EOF\n"
APPLE_DOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(40)

Color = int | tuple[int, ...]


@dataclass(frozen=True)
class Expected:
    """What `label_of` and `decode` must make of one member."""

    label: int | None
    reject: str | None = None  # RejectError.reason; None when the image is accepted
    size: tuple[int, int] | None = None  # (width, height) of the decoded, upright image
    pixels: dict[tuple[int, int], tuple[int, int, int]] = field(default_factory=dict)  # (x, y) -> RGB
    tolerance: int = 0  # per channel: 0 for lossless formats, JPEG_TOLERANCE for JPEGs


def image(color: Color | list[Color], size: tuple[int, int] = (64, 48), mode: str = "RGB") -> Image.Image:
    """A solid image or, for a list of colours, equal-width vertical stripes from left to right."""
    colors = color if isinstance(color, list) else [color]
    img = Image.new(mode, size, colors[0])
    w, h = size
    for i, c in enumerate(colors[1:], start=1):
        img.paste(c, (i * w // len(colors), 0, w, h))
    return img


def noise(size: tuple[int, int] = (64, 64), seed: int = 0) -> Image.Image:
    """Seeded RGB noise: a JPEG of it is mostly entropy-coded data, so half of it is a truncated image."""
    w, h = size
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def encode(img: Image.Image, format: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format, **params)
    return buf.getvalue()


def jpeg(
    color: Color | list[Color] | Image.Image,
    size: tuple[int, int] = (64, 48),
    mode: str = "RGB",
    exif_orientation: int | None = None,
    quality: int = 95,
) -> bytes:
    img = color if isinstance(color, Image.Image) else image(color, size, mode)
    params: dict[str, object] = {"quality": quality}
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation  # the EXIF Orientation tag
        params["exif"] = exif.tobytes()
    return encode(img, "JPEG", **params)


def png(
    color: Color | list[Color] | Image.Image,
    size: tuple[int, int] = (64, 48),
    mode: str = "RGB",
    palette: list[tuple[int, int, int]] | None = None,
    transparency: Color | None = None,
) -> bytes:
    """A PNG; for mode "P", colours are indices into `palette`. `transparency`: the transparent palette
    index (mode "P") or colour key (modes "L", "RGB")."""
    img = color if isinstance(color, Image.Image) else image(color, size, mode)
    if palette is not None:
        img.putpalette([v for rgb in palette for v in rgb])
    params = {} if transparency is None else {"transparency": transparency}
    return encode(img, "PNG", **params)


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    """A deflated zip with a directory entry for every folder, as `zip -r` writes it."""
    folders = {name[: i + 1] for name in members for i, ch in enumerate(name) if ch == "/"}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for folder in sorted(folders - members.keys()):
            zf.writestr(folder, b"")
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def write_folder(path: Path, members: dict[str, bytes]) -> Path:
    """The members as files under `path`; a name ending in "/" is an (empty) folder."""
    for name, data in members.items():
        target = path / name
        if name.endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return path


def mac_junk(members: dict[str, bytes], *, zipped: bool) -> dict[str, bytes]:
    """The AppleDouble `._` files macOS adds beside each member: under `__MACOSX/` in a zip it made."""
    junk = {}
    for name in members:
        folder, slash, file = name.rpartition("/")
        beside = f"{folder}{slash}._{file}"
        junk[f"__MACOSX/{beside}" if zipped else beside] = APPLE_DOUBLE
    return junk


def tricky_members(layout: str) -> dict[str, bytes]:
    """Members of both classes in `layout` ("kaggle", "microsoft", "folders"): good and bad images."""
    return {name: data for name, (data, _) in _tricky(layout).items()}


def tricky_expected(layout: str) -> dict[str, Expected]:
    """The known outcome of each member of `tricky_members(layout)`."""
    return {name: expected for name, (_, expected) in _tricky(layout).items()}


# per class: two distinct colours, so a member read under the wrong name shows
_COLORS = {0: ((200, 40, 40), (40, 160, 40)), 1: ((40, 40, 200), (220, 180, 30))}
_GREY = {0: 90, 1: 170}
# CMYK inks with no black: RGB = 255 - ink, by the definition of naive CMYK
_CMYK = {0: ((0, 255, 255, 0), (255, 0, 0)), 1: ((255, 255, 0, 0), (0, 0, 255))}


def _member_name(layout: str, label: int, number: int, ext: str) -> str:
    cls = ("cat", "dog")[label]
    if layout == "kaggle":
        return f"train/{cls}.{number}.{ext}"
    if layout == "microsoft":
        return f"PetImages/{cls.title()}/{number}.{ext}"
    if layout == "folders":
        return f"{cls}/{number}.{ext}"
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def _class_members(label: int) -> list[tuple[str, bytes, Expected]]:
    """(extension, bytes, outcome) of every kind of member, numbered 1.. in this order."""
    a, b = _COLORS[label]
    grey = _GREY[label]
    ink, ink_rgb = _CMYK[label]
    lossy = JPEG_TOLERANCE
    truncated = jpeg(noise(seed=label))
    return [
        ("jpg", jpeg(a), Expected(label, size=(64, 48), pixels={(32, 24): a}, tolerance=lossy)),
        ("jpg", jpeg(b, size=(36, 60)), Expected(label, size=(36, 60), pixels={(18, 30): b}, tolerance=lossy)),
        ("jpg", b"", Expected(label, reject="empty file")),
        ("jpg", truncated[: len(truncated) // 2], Expected(label, reject="truncated or corrupt")),
        ("jpg", png(a, size=(50, 40)), Expected(label, size=(50, 40), pixels={(25, 20): a})),
        ("jpg", encode(image(b, (30, 20)), "GIF"), Expected(label, size=(30, 20), pixels={(15, 10): b})),
        ("jpg", encode(image(a, (30, 20)), "BMP"), Expected(label, size=(30, 20), pixels={(15, 10): a})),
        (
            "jpg",
            jpeg(grey, mode="L"),
            Expected(label, size=(64, 48), pixels={(32, 24): (grey,) * 3}, tolerance=lossy),
        ),
        ("jpg", jpeg(ink, mode="CMYK"), Expected(label, size=(64, 48), pixels={(32, 24): ink_rgb}, tolerance=lossy)),
        (
            # stored 64×32 with `a` on the left; orientation 6 = turn 90° clockwise to view, so the
            # stored left edge becomes the top: 32×64 with `a` above `b`
            "jpg",
            jpeg([a, b], size=(64, 32), exif_orientation=6),
            Expected(label, size=(32, 64), pixels={(16, 12): a, (16, 52): b}, tolerance=lossy),
        ),
        (
            # palette index 0 is transparent (its colour black must not show), index 1 is `a`
            "png",
            png([0, 1], size=(40, 20), mode="P", palette=[(0, 0, 0), a], transparency=0),
            Expected(label, size=(40, 20), pixels={(10, 10): WHITE, (30, 10): a}),
        ),
        (
            # transparent black, half-transparent black (alpha 128: 255 · 127/255 = 127 over white), opaque `b`
            "png",
            png([(0, 0, 0, 0), (0, 0, 0, 128), (*b, 255)], size=(60, 20), mode="RGBA"),
            Expected(label, size=(60, 20), pixels={(10, 10): WHITE, (30, 10): (127,) * 3, (50, 10): b}),
        ),
    ]


def _tricky(layout: str) -> dict[str, tuple[bytes, Expected]]:
    members = {}
    for label in (0, 1):
        for number, (ext, data, expected) in enumerate(_class_members(label), start=1):
            members[_member_name(layout, label, number, ext)] = (data, expected)
    not_an_image = "not an image"
    if layout == "kaggle":
        members["train/Thumbs.db"] = (THUMBS_DB, Expected(None, reject=not_an_image))
    else:  # Windows leaves a Thumbs.db in every class folder it showed as thumbnails
        for label in (0, 1):
            folder = _member_name(layout, label, 0, "x").rpartition("/")[0]
            members[f"{folder}/Thumbs.db"] = (THUMBS_DB, Expected(label, reject=not_an_image))
    if layout == "microsoft":
        members["readme[1].txt"] = (README, Expected(None, reject=not_an_image))
        members["CDLA-Permissive-2.0.pdf"] = (LICENCE_PDF, Expected(None, reject=not_an_image))
    return members


# ---------------------------------------------------------------- beyond cats and dogs


def class_folder_members(
    classes: list[str], per_class: int, *, size: int = 40, root: str = "", seed: int = 0
) -> dict[str, bytes]:
    """`root<class>/<i>.png` for each class: PNGs of a colour of its own (class k's hue k / K) under
    seeded noise, so a class is learnable from its colour; same arguments, same bytes."""
    rng = np.random.default_rng(seed)
    members = {}
    for k, name in enumerate(classes):
        hue = Image.new("HSV", (1, 1), (int(255 * k / len(classes)), 200, 220)).convert("RGB").getpixel((0, 0))
        for i in range(per_class):
            pixels = np.clip(np.array(hue, dtype=np.int16) + rng.integers(-30, 31, (size, size, 3)), 0, 255).astype(
                np.uint8
            )
            members[f"{root}{name}/{i}.png"] = encode(Image.fromarray(pixels), "PNG")
    return members


def idx_images(images: np.ndarray) -> bytes:
    """An IDX image file as Fashion-MNIST's are: magic 0x00000803, big-endian N, rows, cols, then uint8 pixels."""
    n, rows, cols = images.shape
    return struct.pack(">IIII", 0x803, n, rows, cols) + images.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    """An IDX label file: magic 0x00000801, big-endian N, then one uint8 label each."""
    return struct.pack(">II", 0x801, len(labels)) + labels.astype(np.uint8).tobytes()


def fashion_mnist_files(
    folder: Path, train_per_class: int, test_per_class: int, *, seed: int = 0
) -> dict[str, np.ndarray]:
    """The four Fashion-MNIST files (gzip'd, official names) in `folder`, 28×28 grey, 10 classes:
    class k a bright square at its own place, on dark noise. Returns the arrays written."""
    rng = np.random.default_rng(seed)
    written = {}
    for part, per_class in (("train", train_per_class), ("t10k", test_per_class)):
        labels = np.tile(np.arange(10, dtype=np.uint8), per_class)
        images = rng.integers(0, 60, (len(labels), 28, 28), dtype=np.uint8)
        for i, k in enumerate(labels):
            row, col = divmod(int(k), 4)
            images[i, 2 + 8 * row : 8 + 8 * row, 2 + 6 * col : 8 + 6 * col] = 230
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{part}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_images(images), mtime=0))
        (folder / f"{part}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_labels(labels), mtime=0))
        written[part] = (images, labels)
    return written
