"""Images straight out of an archive: classes from the layout, validation, fixed-size uint8 arrays.

The split stage lists an `Archive`, finds the classes and each member's label from the paths alone
(`labelling`) and decodes each member once (`decode`) to keep it or reject it with a reason; the
preprocess stage decodes the kept ones again (`load`) in worker processes, each opening its own
`Archive`. No torch here: workers stay light.
"""

from __future__ import annotations

import io
import os
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Literal, get_args

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from pipeline.common import files
from pipeline.common.bounds import POLICIES
from pipeline.common.errors import StageError

# Dogs-vs-Cats' classes: label 0 is cat, 1 is dog, as in the Kaggle competition's submissions. Any
# other data brings its own classes (`labelling` finds them), sorted by name.
DOGS_VS_CATS = ("cat", "dog")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_FILE_BYTES = 64 << 20  # one photo's file: a 50-megapixel camera JPEG is about 25 MB
MIN_SIDE = 4  # px: a smaller "image" (a 1×1 tracking pixel) cannot show a cat or a dog
# The formats a photo can be, and the only decoders Pillow may pick. Pillow chooses a decoder from
# the content, not the name, and some of its formats are programs: EPS is PostScript that Pillow
# hands to Ghostscript. So nothing outside this list is ever opened.
#   JPEG: what cameras and phones write (and Dogs-vs-Cats is), including the multi-picture JPEG of
#   many phones, which Pillow's JPEG decoder opens as MPO; PNG: screenshots and lossless exports;
#   WEBP: photos saved from the web; GIF and BMP: old web pages and old Windows tools; TIFF: scanners
#   and photo editors. All are pixel containers decoded inside Pillow (libjpeg, zlib, libwebp,
#   libtiff), none runs an external program.
PHOTO_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
Reason = Literal[
    "empty file",
    "not an image",
    "not a photo format",
    "truncated or corrupt",
    "too large",
    "too small",
    "encrypted",
    "not a regular file",
    "unreadable",
]
REASONS: tuple[Reason, ...] = get_args(Reason)
# width × height; above it is rejected. Pillow only warns up to twice its limit, we reject from 1×.
MAX_PIXELS: int | None = Image.MAX_IMAGE_PIXELS

_FOLDER_LABELS = {"cat": 0, "cats": 0, "dog": 1, "dogs": 1}
_WHITE = (255, 255, 255)


def labelling(names: list[str]) -> tuple[tuple[str, ...], list[int | None]]:
    """(the classes, each member's label: an index into them, or None) from the members' paths alone.

    Dogs-vs-Cats' layouts (`train/cat.1.jpg`, `PetImages/Cat/1.jpg`, `dogs/1.jpg`; see `label_of`)
    give ("cat", "dog") whenever every folder holding image files is one of theirs: named cat, cats,
    dog or dogs, or holding Kaggle-named photos. Anything else is the class-folder layout: the folder
    that holds a photo names its class (`flowers/tulip/1.jpg` is a tulip, at any depth), the classes
    sorted by name; files outside such a folder, or in a folder without image files, have none.
    """
    holders = {_folder(name) for name in names if name.lower().endswith(IMAGE_SUFFIXES)} - {""}
    kaggle = {_folder(name) for name in names if _kaggle_label(name) is not None}
    if all(_FOLDER_LABELS.get(_last(folder).lower()) is not None or folder in kaggle for folder in holders):
        return DOGS_VS_CATS, [label_of(name) for name in names]
    classes = tuple(sorted({_last(folder) for folder in holders}))
    index = {name: i for i, name in enumerate(classes)}
    return classes, [index[_last(_folder(name))] if _folder(name) in holders else None for name in names]


def _folder(name: str) -> str:
    return name.rpartition("/")[0]


def _last(folder: str) -> str:
    return folder.rpartition("/")[2]


def _kaggle_label(name: str) -> int | None:
    stem, dot, _ = name.rpartition("/")[2].partition(".")
    return DOGS_VS_CATS.index(stem.lower()) if dot and stem.lower() in DOGS_VS_CATS else None


def label_of(name: str) -> int | None:
    """The Dogs-vs-Cats label of archive member `name` (`/`-separated) from its path alone, or None.

    A Kaggle file name (`cat.123.jpg`: the part before the first dot, any case, any folder) or else the
    parent folder (`PetImages/Cat/1.jpg`, `train/dogs/x.jpg`). None when neither names a class, or when
    they name different classes (a misfiled image is not guessed at).
    """
    by_file = _kaggle_label(name)
    by_folder = _FOLDER_LABELS.get(_last(_folder(name)).lower())
    if by_file is not None and by_folder is not None and by_file != by_folder:
        return None
    return by_file if by_file is not None else by_folder


def _is_mac_junk(name: str) -> bool:
    # resource forks that macOS zips and copies leave beside every file: never images
    return name.startswith("__MACOSX/") or name.rpartition("/")[2].startswith("._")


class Archive:
    """A read-only view of a .zip file or a folder: its files by `/`-separated name.

    Opening only reads the zip's central directory (or nothing, for a folder), so each worker
    process opens its own rather than sharing one file handle across a fork. A path that is neither
    raises FileNotFoundError or zipfile.BadZipFile.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            files.regular(self.path, "the archive")  # a FIFO would block the open, /dev/zero be read for ever
        self._zip = None if self.path.is_dir() else zipfile.ZipFile(self.path)

    def names(self) -> list[str]:
        """Every file member, sorted; no folders, no macOS `__MACOSX/` or `._*` entries; in a folder,
        nothing hidden either (`.git/`, `.DS_Store`: not walked into, never photos)."""
        if self._zip is None:
            found = []
            for here, dirnames, filenames in os.walk(self.path):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                found += [
                    (Path(here) / f).relative_to(self.path).as_posix() for f in filenames if not f.startswith(".")
                ]
        else:
            found = (info.filename for info in self._zip.infolist() if not info.is_dir())
        return sorted(name for name in found if not _is_mac_junk(name))

    def read(self, name: str) -> bytes:
        """A member's bytes, at most MAX_FILE_BYTES of them: a bigger one (a zip bomb's member that
        claims gigabytes) is rejected from its declared size, before anything is read, and a member
        the zip cannot give back whole (bad CRC, broken deflate stream) is "truncated or corrupt"."""
        if self._zip is None:
            return read_file(self.path / name)
        info = self._zip.getinfo(name)
        if info.flag_bits & 0x1:  # `zip -P`: no password to give, so no bytes to read
            raise RejectError("encrypted")
        if info.file_size > MAX_FILE_BYTES:
            raise RejectError("too large")
        try:
            with self._zip.open(info) as member:
                data = member.read(MAX_FILE_BYTES + 1)  # zipfile stops at the declared size, and checks the CRC there
        except (
            zipfile.BadZipFile,
            zlib.error,
            EOFError,
            NotImplementedError,
        ) as e:  # NotImplementedError: an unknown compression
            raise RejectError("truncated or corrupt") from e
        if len(data) > MAX_FILE_BYTES:
            raise RejectError("too large")
        return data

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_file(path: Path) -> bytes:
    """A photo file's bytes, at most MAX_FILE_BYTES; a device, a FIFO or a socket (or a link to
    one) is rejected before a byte is read, and the read is bounded whatever the size said."""
    try:
        return files.read_bytes(path, "photo", MAX_FILE_BYTES)
    except files.TooLarge:
        raise RejectError("too large") from None
    except files.NotRegular:
        raise RejectError("not a regular file") from None
    except (StageError, OSError):  # gone since it was listed, not readable by this user
        raise RejectError("unreadable") from None


class RejectError(Exception):
    """A member that is not a usable image; `reason` is one of REASONS, the same words in every report."""

    def __init__(self, reason: Reason) -> None:
        if reason not in REASONS:
            raise ValueError(f"reason must be one of {REASONS}, got {reason!r}")
        super().__init__(reason)
        self.reason = reason


def decode(data: bytes, *, min_side: int | None = None) -> Image.Image:
    """The image in `data`, fully decoded, upright (EXIF orientation applied) and RGB; else RejectError.

    min_side (pixels): the caller will shrink the image only down to this shorter side, so a JPEG is
    decoded at the strongest DCT reduction (1/2, 1/4 or 1/8) that keeps both sides ≥ min_side: several
    times faster than decoding every pixel and averaging most of them away. Every byte is still read.
    """
    if not data:
        raise RejectError("empty file")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        # camera EXIF is often slightly malformed ("Corrupt EXIF data"); harmless to the pixels
        warnings.filterwarnings("ignore", category=UserWarning, module="PIL")
        img = _open(data)
        if min_side and isinstance(img, JpegImagePlugin.JpegImageFile):
            # draft keeps both sides ≥ the requested size, so the shorter one stays ≥ min_side
            img.draft("RGB", (min_side, min_side))
        if min(img.size) < MIN_SIDE:
            raise RejectError("too small")
        try:
            img.load()  # every pixel: a truncated file fails here, never padded with grey
        except Exception as e:  # Pillow's decoders raise OSError, SyntaxError, ValueError, struct.error...
            raise RejectError("truncated or corrupt") from e
        _make_upright(img)
    return to_rgb(img)


def _open(data: bytes) -> Image.Image:
    """Identify `data` among PHOTO_FORMATS only and check its size from the header, before any pixel
    is decoded: a file another of Pillow's decoders would take (PostScript named .jpg) is "not a
    photo format", never handed to that decoder."""
    try:
        img = Image.open(io.BytesIO(data), formats=PHOTO_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise RejectError("too large") from e
    except UnidentifiedImageError as e:
        raise RejectError("not a photo format" if _other_format(data) else "not an image") from e
    except Exception as e:  # a known signature followed by a broken header
        raise RejectError("truncated or corrupt") from e
    if MAX_PIXELS is not None and img.width * img.height > MAX_PIXELS:
        raise RejectError("too large")
    return img


def is_photo(path: Path) -> bool:
    """Whether the file's header is one of PHOTO_FORMATS' (only the header is read, nothing decoded)."""
    try:
        with Image.open(path, formats=PHOTO_FORMATS):
            return True
    except Image.DecompressionBombError:  # a photo, too large: split rejects it with that reason
        return True
    except Exception:  # not one of them, unreadable, or a broken header
        return False


def _other_format(data: bytes) -> bool:
    """Whether some decoder outside PHOTO_FORMATS claims `data`, judged by the format's own signature
    check only (`_accept`, a look at the first bytes): nothing is opened, nothing is run."""
    Image.init()
    head = data[:64]
    for name, (_, accept) in Image.OPEN.items():
        if name not in PHOTO_FORMATS and accept is not None:
            try:
                if accept(head):
                    return True
            except Exception:  # a check that needs more bytes than it got: not this format
                pass
    return False


def _make_upright(img: Image.Image) -> None:
    try:
        ImageOps.exif_transpose(img, in_place=True)
    except Exception:  # EXIF Pillow cannot parse: the pixels are fine, keep them as stored
        pass


def to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "La":  # premultiplied grey + alpha: Pillow converts it only to LA
        img = img.convert("LA")
    if img.has_transparency_data:  # RGBA, LA, PA, a transparent palette entry, or an L/RGB colour key
        rgba = img.convert("RGBA")
        rgb = Image.new("RGB", img.size, _WHITE)
        rgb.paste(rgba, mask=rgba)  # alpha-composite onto white: transparent reads (255, 255, 255)
        return rgb
    if img.mode.startswith("I;16"):
        # 16-bit grey: keep the high byte (65535 → 255), where Pillow's conversion would clip at 255
        img = Image.fromarray((np.asarray(img) >> 8).astype(np.uint8))
    if img.mode == "RGB":
        return img
    return img.convert("RGB")  # L, 1, I, F (clipped to 0..255), CMYK, P, YCbCr...


def fit(img: Image.Image, size: int, policy: str, channels: int = 3) -> np.ndarray:
    """An RGB image as a (channels, size, size) uint8 C-contiguous array: 3 (RGB) or 1 (grey, the
    ITU-R 601 luma Pillow computes, which gives a grey photo's own values back exactly).

    "crop": the centred square of side min(width, height), resized: the same as resizing the shorter
    side to `size` and centre-cropping, without rounding the crop to whole pixels. "squash": the whole
    image resized to size × size, aspect ratio ignored. Bicubic, antialiased when shrinking.
    """
    if img.mode != "RGB":
        raise ValueError(f"fit needs an RGB image (use decode), got mode {img.mode}")
    w, h = img.size
    if policy == "crop":
        side = min(w, h)
        box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
    elif policy == "squash":
        box = (0, 0, w, h)
    else:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    # reducing_gap: box-average down to within 3× of the target first; indistinguishable and faster
    if channels == 1:
        img = img.convert("L")  # before resizing: a third of the work
    elif channels != 3:
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    out = img.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)
    return np.ascontiguousarray(
        np.asarray(out).reshape(size, size, channels).transpose(2, 0, 1)
    )  # (H, W, C) -> (C, H, W)


def load(data: bytes, size: int, policy: str, channels: int = 3) -> np.ndarray:
    """The (channels, size, size) uint8 array for the image in `data`; RejectError as in `decode`."""
    return fit(decode(data, min_side=size), size, policy, channels)
