"""Stand-in photos for offline smoke runs: a zip in the Kaggle layout, generated in about a second.

A cat is a warm-coloured ellipse, a dog a cool-coloured rotated rectangle, each of random size and
place on a noisy background with a few small grey distractors of either shape. One image in five
takes its colour from the other class, so colour alone tops out near 80 % and a model has to learn
the shape to do better: learnable in a few epochs, not solved by a mean pixel.
"""

from __future__ import annotations

import colorsys
import multiprocessing as mp
import sys
import zipfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pipeline.common import atomic
from pipeline.common.errors import StageError
from pipeline.common.formats import zip_entry
from pipeline.data.images import DOGS_VS_CATS

WARM, COOL = (-0.08, 0.14), (0.45, 0.70)  # hue ranges (fraction of the colour wheel): red..yellow, cyan..blue
SWAPPED_COLOUR = 0.2  # share of images coloured like the other class
NOISE = 18.0  # background noise standard deviation, in 0..255 pixel units
PARALLEL_FROM = 2000  # photos: below this a process pool's start costs more than it saves (1,000 photos/s a core)
BLOCK = 4096  # photos generated between writes: at 9 KB each, about 36 MB held at once however many are asked for


def make_archive(path: Path, *, per_class: int = 300, size: int = 128, seed: int = 0, workers: int = 1) -> None:
    """Write `per_class` JPEGs of each class as train/cat.<i>.jpg and train/dog.<i>.jpg; same arguments, same
    bytes, whatever `workers` (processes generating them: 25,000 photos take about 25 s on one core)."""
    if per_class < 1 or size < 16:
        raise ValueError(f"per_class must be >= 1 and size >= 16 px, got per_class={per_class}, size={size}")
    items = [(label, index) for label in range(len(DOGS_VS_CATS)) for index in range(per_class)]
    with atomic.atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        for (label, index), jpeg in zip(items, _photos(items, size, seed, workers)):
            archive.writestr(zip_entry(f"train/{DOGS_VS_CATS[label]}.{index}.jpg"), jpeg)


def _photos(items: list[tuple[int, int]], size: int, seed: int, workers: int) -> Iterator[bytes]:
    """The JPEG of each (label, index), in order."""
    make = partial(_photo, size=size, seed=seed)
    if workers <= 1 or len(items) < PARALLEL_FROM:
        yield from map(make, items)
        return
    # fork on Linux: the workers start in milliseconds and need only numpy and Pillow
    context = mp.get_context("fork" if sys.platform == "linux" else "spawn")
    try:
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            for start in range(0, len(items), BLOCK):
                yield from pool.map(make, items[start : start + BLOCK], chunksize=64)
    except BrokenProcessPool:
        raise StageError(
            "a process generating the synthetic photos died (killed by a signal, or by the out-of-memory killer: "
            "see `dmesg`); nothing was written"
        ) from None


def _photo(item: tuple[int, int], *, size: int, seed: int) -> bytes:
    label, index = item
    # One generator per image: image i is the same whatever per_class is, and in whichever process.
    rng = np.random.default_rng((seed, label, index))
    return _jpeg(_image(rng, label, size))


def _image(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    background = _rgb(rng.random(), saturation=rng.uniform(0, 0.25), value=rng.uniform(0.3, 0.8))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(0, 3)):
        grey = int(rng.integers(60, 200))
        _shape(draw, rng, int(rng.integers(2)), size, scale=(0.1, 0.25), colour=(grey, grey, grey))
    warm = (label == 0) != (rng.random() < SWAPPED_COLOUR)
    hue = rng.uniform(*(WARM if warm else COOL)) % 1.0
    colour = _rgb(hue, saturation=rng.uniform(0.45, 0.95), value=rng.uniform(0.55, 1.0))
    _shape(draw, rng, label, size, scale=(0.3, 0.6), colour=colour)
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, NOISE, (size, size, 3)).astype(np.float32)
    return np.clip(pixels, 0, 255).astype(np.uint8)  # (H, W, 3)


def _shape(draw: ImageDraw.ImageDraw, rng: np.random.Generator, kind: int, size: int, *, scale, colour) -> None:
    """kind 0: an axis-aligned ellipse; kind 1: a rectangle rotated by a random angle. `scale`: side range / size."""
    w, h = rng.uniform(*scale, 2) * size / 2  # half-sides, px
    cx, cy = rng.uniform(0.25, 0.75, 2) * size
    if kind == 0:
        draw.ellipse((cx - w, cy - h, cx + w, cy + h), fill=colour)
        return
    angle = rng.uniform(0, np.pi)
    c, s = np.cos(angle), np.sin(angle)
    corners = [(cx + x * c - y * s, cy + x * s + y * c) for x, y in ((-w, -h), (w, -h), (w, h), (-w, h))]
    draw.polygon(corners, fill=colour)


def _rgb(hue: float, *, saturation: float, value: float) -> tuple[int, int, int]:
    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(hue, saturation, value))


def _jpeg(pixels: np.ndarray) -> bytes:
    buffer = BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()
