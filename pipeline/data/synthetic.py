"""Stand-in photos for offline smoke runs: a zip in the Kaggle layout, generated in about a second.

A cat is a warm-coloured ellipse, a dog a cool-coloured rotated rectangle, each of random size and
place on a noisy background with a few small grey distractors of either shape. One image in five
takes its colour from the other class, so colour alone tops out near 80 % and a model has to learn
the shape to do better: learnable in a few epochs, not solved by a mean pixel.
"""

from __future__ import annotations

import colorsys
import zipfile
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pipeline.common import atomic
from pipeline.common.formats import zip_entry
from pipeline.data.images import DOGS_VS_CATS

WARM, COOL = (-0.08, 0.14), (0.45, 0.70)  # hue ranges (fraction of the colour wheel): red..yellow, cyan..blue
SWAPPED_COLOUR = 0.2  # share of images coloured like the other class
NOISE = 18.0  # background noise standard deviation, in 0..255 pixel units


def make_archive(path: Path, *, per_class: int = 300, size: int = 128, seed: int = 0) -> None:
    """Write `per_class` JPEGs of each class as train/cat.<i>.jpg and train/dog.<i>.jpg; same arguments, same bytes."""
    if per_class < 1 or size < 16:
        raise ValueError(f"per_class must be >= 1 and size >= 16 px, got per_class={per_class}, size={size}")
    with atomic.atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        for label, name in enumerate(DOGS_VS_CATS):
            for index in range(per_class):
                # One generator per image: image i is the same whatever per_class is.
                rng = np.random.default_rng((seed, label, index))
                archive.writestr(zip_entry(f"train/{name}.{index}.jpg"), _jpeg(_image(rng, label, size)))


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
