"""Classifying photos with a trained model: the code `python -m pipeline.predict` and
`pipeline.Classifier` share. Each photo goes through exactly the test-time path the model was
evaluated with: decoded from the photo formats only and resized by the preprocess stage's own
function, at the size and with the resize policy its model file records, then `probabilities`
(eval mode, no gradients); with `explain`, a Grad-CAM picture of each.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.common import atomic, cli, files
from pipeline.common.errors import StageError
from pipeline.data import images
from pipeline.evaluation import gradcam
from pipeline.runtime.device import Compute
from pipeline.runtime.inference import probabilities
from pipeline.runtime.tensors import Split

CHUNK = 512  # photos decoded and classified at a time: at 224 px, 77 MB of uint8


@dataclass(frozen=True)
class Photo:
    name: str  # as the CSV reports it: the path given, `folder/member` or `archive.zip:member`
    source: Path  # the file itself, or the folder or zip that holds it
    member: str | None = None  # its name inside `source`, when `source` is a folder or a zip

    def read(self) -> bytes:
        if self.member is None:  # the same cap as inside a folder or a zip, before a byte is read
            return images.read_file(self.source)
        return _open_archive(self.source).read(self.member)


_threads = threading.local()  # each decoding thread's open archives: a zip's directory is read once per thread


def _open_archive(source: Path) -> images.Archive:
    opened = _threads.__dict__.setdefault("archives", {})
    if source not in opened:
        opened[source] = images.Archive(source)
    return opened[source]


def photos(inputs: list[Path]) -> list[Photo]:
    """Every photo the inputs name, in order; a folder or zip contributes its files sorted by name."""
    found: list[Photo] = []
    for path in inputs:
        if path.is_dir():
            found += [Photo(f"{path}/{m}", path, m) for m in images.Archive(path).names()]
        elif path.is_file() and path.suffix.lower() == ".zip":
            try:
                with images.Archive(path) as archive:
                    found += [Photo(f"{path}:{m}", path, m) for m in archive.names()]
            except zipfile.BadZipFile:
                raise StageError(f"{path} is not a readable zip file") from None
        elif path.is_file():
            found.append(Photo(str(path), path))
        elif path.exists():
            files.regular(path, "the input")  # a device, a FIFO, a socket: says which
        else:
            raise StageError(f"{path}: no such file or folder")
    if not found:
        raise StageError(
            f"no photos in {', '.join(map(str, inputs)) or 'the input'}: name image files, folders or zips"
        )
    return found


def decode_photo(photo: Photo, size: int, policy: str, channels: int = 3) -> tuple[np.ndarray | None, str]:
    """(the (channels, size, size) uint8 array, "") or (None, why it cannot be classified)."""
    try:
        return images.load(photo.read(), size, policy, channels), ""
    except images.RejectError as e:
        return None, e.reason
    except (OSError, zipfile.BadZipFile, EOFError) as e:  # unreadable file, bad CRC in a zip
        return None, f"unreadable ({type(e).__name__})"


@dataclass
class Prediction:
    photo: Photo
    proba: np.ndarray | None  # (classes,) float32; None if the photo could not be read
    error: str
    classes: tuple[str, ...]  # the model's, in the order of `proba`
    explanation: str = ""  # with --explain: the Grad-CAM picture's file name, or why there is none

    @property
    def label(self) -> str:
        return "" if self.proba is None else self.classes[int(self.proba.argmax())]


def classify(model: torch.nn.Module, batch: np.ndarray, compute: Compute, batch_size: int, tta: bool) -> np.ndarray:
    """Probabilities (N, classes) of a (N, C, S, S) uint8 batch, as `evaluate` computes them; with
    `tta`, the mean of the photo's and its mirror image's."""
    device = compute.device
    x = torch.from_numpy(batch).to(device)
    split = Split(images=x, labels=torch.zeros(len(x), dtype=torch.long, device=device), device=device)
    return probabilities(model, split, batch_size, compute=compute, tta=tta).numpy()


def predict(
    model: torch.nn.Module,
    meta: dict,
    found: list[Photo],
    *,
    compute: Compute,
    batch_size: int = 64,
    tta: bool = False,
    explain: Path | None = None,
) -> list[Prediction]:
    """Every photo classified by `model` (its model file's `meta` gives the size, resize policy,
    channels and classes), decoded on all cores a chunk at a time. With `explain`, a Grad-CAM overlay
    of each readable photo's predicted class is written there too (see explanation_file)."""
    size, policy, channels, classes = meta["image_size"], meta["resize"], meta["channels"], tuple(meta["classes"])
    names = explanation_names(found) if explain else {}
    out: list[Prediction] = []
    with ThreadPoolExecutor(cli.cpu_count()) as pool:  # Pillow decodes with the GIL released
        for start in range(0, len(found), CHUNK):
            chunk = found[start : start + CHUNK]
            decoded = list(pool.map(lambda p: decode_photo(p, size, policy, channels), chunk))
            good = [i for i, (array, _) in enumerate(decoded) if array is not None]
            batch = np.stack([decoded[i][0] for i in good]) if good else None
            proba = classify(model, batch, compute, batch_size, tta) if good else []
            failed = (
                write_explanations(explain, names, model, [chunk[i] for i in good], batch, compute.device, batch_size)
                if explain and good
                else {}
            )
            by_index = dict(zip(good, proba))
            for i, photo in enumerate(chunk):
                explained = "" if not explain or i not in by_index else failed.get(photo.name, names[photo.name])
                out.append(Prediction(photo, by_index.get(i), decoded[i][1], classes, explained))
    return out


MAX_PICTURE_NAME = 120  # characters of a picture's name before its suffix: far below any file system's 255 bytes


def explanation_names(found: list[Photo]) -> dict[str, str]:
    """Each photo's Grad-CAM file name (`<name>.png`), one per photo and never two photos to one file.
    The photo's name as given with every run of other characters than letters, digits, `.`, `-`,
    `_` as one `_`, cut to MAX_PICTURE_NAME characters; when that changed the name, or two names
    would meet on a file system that ignores case, the first 8 hex digits of the name's sha256 are
    added (`a b.jpg` → `a_b.jpg-1f0e3a2b.png`, while `a_b.jpg` stays `a_b.jpg.png`)."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for name in dict.fromkeys(p.name for p in found):  # the same photo given twice: one picture
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_.")[:MAX_PICTURE_NAME] or "photo"
        if safe != name or safe.casefold() in taken:
            safe = f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
        taken.add(safe.casefold())
        out[name] = safe + ".png"
    return out


def write_explanations(
    folder: Path,
    names: dict[str, str],
    model: torch.nn.Module,
    chosen: list[Photo],
    batch: np.ndarray,
    device: torch.device,
    batch_size: int,
) -> dict[str, str]:
    """A Grad-CAM overlay (PNG, the model's input size) per photo: where the evidence for the class
    it was given lies. Returns {photo name: why its picture could not be written} (a full disk, a
    folder that went away): the predictions stand whatever happens to the pictures."""
    failed: dict[str, str] = {}
    layer = gradcam.last_feature_map(model, batch.shape[-1], batch.shape[1])
    for start in range(0, len(batch), batch_size):
        part = batch[start : start + batch_size]
        heat = gradcam.gradcam(model, torch.from_numpy(part).to(device), layer=layer)
        for photo, image, h in zip(chosen[start : start + batch_size], part, heat):
            png = io.BytesIO()
            Image.fromarray(gradcam.overlay(image, h)).save(png, "PNG")
            try:
                atomic.write_bytes(folder / names[photo.name], png.getvalue())
            except OSError as e:
                failed[photo.name] = f"picture not written ({e.strerror or type(e).__name__})"
    return failed
