"""The training data path: preprocessed uint8 tensors moved to the device once, batches as index
slices, augmentation and normalisation on whole batches on the device. No DataLoader, no workers,
no per-image Python: the network, not the data path, sets the pace.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.data.layout import images_file, labels_file
from pipeline.models.inputs import Normalization

GPU_MEMORY_SHARE = 0.5  # at most this share of free GPU memory holds a split; the rest is the model's
SHARD_SEED = 0  # the partition of the training split between processes: a function of the data and their number only


@dataclass
class Split:
    images: torch.Tensor  # (N, C, S, S) uint8: on the device, or in pinned host memory if it did not fit
    labels: torch.Tensor  # (N,) int64, on the device
    device: torch.device

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def on_device(self) -> bool:
        return self.images.device == self.device


def load_split(folder: Path, split: str, device: torch.device, *, rank: int = 0, processes: int = 1) -> Split:
    """Memory-map one preprocessed split and place it where training reads it fastest.

    The .npy file is mapped, never read whole into RAM first, so a 3.8 GB split needs 3.8 GB once:
    on the GPU when it fits, else pinned host memory (copied a batch at a time, asynchronously).
    In a run of several `processes`, process `rank` loads only its shard (see `shard_rows`).
    """
    array = np.load(images_file(folder, split), mmap_mode="c")  # copy-on-write: torch may wrap it
    labels = np.load(labels_file(folder, split)).astype(np.int64)
    if processes > 1:
        rows = shard_rows(labels, rank, processes, equal=split == "train")
        array, labels = array[rows], labels[rows]  # reads only this shard's rows
    labels = torch.from_numpy(labels).to(device)
    images = torch.from_numpy(array)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if images.nbytes <= GPU_MEMORY_SHARE * free:
            on_device = torch.empty(images.shape, dtype=torch.uint8, device=device)
            for start in range(0, len(images), 1024):  # chunks: no second host copy of the whole split
                on_device[start : start + 1024].copy_(images[start : start + 1024])
            images = on_device
        else:
            images = images.pin_memory()
    return Split(images=images, labels=labels, device=device)


def shard_rows(labels: np.ndarray, rank: int, processes: int, *, equal: bool) -> np.ndarray:
    """Rows of process `rank`'s shard of a split, sorted (the memory map is read in file order).

    `equal` (training): a seeded random partition into equal shards, each class dealt out evenly;
    the last len % processes rows of the deal are left out, because every process must take the
    same number of steps. Otherwise (validation): every processes-th row from `rank`, so the shards
    cover every image exactly once and summed metrics are those of the whole split.
    """
    if not equal:
        return np.arange(rank, len(labels), processes)
    order = np.random.default_rng(SHARD_SEED).permutation(len(labels))
    order = order[np.argsort(labels[order], kind="stable")]  # grouped by class, random within each
    order = order[: len(order) - len(order) % processes]
    return np.sort(order[rank::processes])


def shuffled_images(n: int, batch_size: int) -> int:
    """How many of `n` images an epoch of shuffled batches shows: the last incomplete batch is
    dropped, unless it is the only one."""
    return n - n % batch_size if n >= batch_size else n


def batches(
    split: Split, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None, repeats: int = 1
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(x, y) batches on the device: x (B, C, S, S) uint8, y (B,) int64.

    Shuffled batches drop the last incomplete one (a batch of 1 breaks BatchNorm, and equal batches
    keep the step count and the learning-rate schedule exact); evaluation batches keep every image.
    `repeats`: a shuffled epoch goes through the split that many times, each in a new order (a small
    training set trains for more steps without more validations between them).
    """
    n = len(split)
    if shuffle:
        device = generator.device if generator else "cpu"
        order = torch.cat([torch.randperm(n, generator=generator, device=device) for _ in range(repeats)])
        order = order.to(split.device)
        stop = shuffled_images(len(order), batch_size)
    else:
        order, stop = torch.arange(n, device=split.device), n
    if split.on_device:
        for start in range(0, stop, batch_size):
            idx = order[start : start + batch_size]
            yield split.images[idx], split.labels[idx]
    else:
        yield from _pinned_batches(split, order[:stop], batch_size)


def _pinned_batches(split: Split, order: torch.Tensor, batch_size: int):
    """Gather each batch into one of two pinned buffers and copy it asynchronously: the copy of
    batch k+1 overlaps the compute on batch k."""
    host_order = order.cpu()
    shape = (batch_size, *split.images.shape[1:])
    buffers = [torch.empty(shape, dtype=torch.uint8).pin_memory() for _ in range(2)]
    done = [None, None]
    for k, start in enumerate(range(0, len(host_order), batch_size)):
        idx = host_order[start : start + batch_size]
        slot = k % 2
        if done[slot] is not None:
            done[slot].synchronize()  # the copy out of this buffer must finish before we refill it
        buf = buffers[slot][: len(idx)]
        torch.index_select(split.images, 0, idx, out=buf)
        x = buf.to(split.device, non_blocking=True)
        done[slot] = torch.cuda.Event()
        done[slot].record()
        yield x, split.labels[to_device(idx, split.device)]


def affine(normalization: Normalization, channels: int) -> tuple[list[float], list[float]]:
    """(scale, shift) per channel such that x (0..255) × scale + shift = (x / 255 − mean) / std;
    grey (`channels` 1) takes the means of the RGB statistics (Normalization.for_channels)."""
    n = normalization.for_channels(channels)
    return [1 / (255 * s) for s in n.std], [-m / s for m, s in zip(n.mean, n.std)]


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small CPU tensor on `device`, the host not kept waiting: a plain copy to a GPU from pageable
    memory synchronises the stream (the host waits for every kernel queued before it, and cannot
    queue the next step's while the GPU works), so on CUDA it goes through pinned memory,
    asynchronously (torch's caching host allocator keeps the pinned block until the copy is done)."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


@functools.lru_cache(maxsize=32)
def _affine_on(normalization: Normalization, channels: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """`affine`'s (scale, shift), each (1, C, 1, 1) float32 on `device`: made once, not copied every step."""
    with torch.inference_mode(False):  # ordinary tensors, even if first asked for under inference mode
        scale, shift = (torch.tensor(v).view(1, -1, 1, 1) for v in affine(normalization, channels))
        return to_device(scale, device), to_device(shift, device)


def normalize(
    x: torch.Tensor, normalization: Normalization, memory_format: torch.memory_format = torch.channels_last
) -> torch.Tensor:
    """uint8 (B, C, S, S) → float32 in `memory_format`, normalised as the network's weights expect
    (models.inputs.of(model)): one fused multiply-add."""
    scale, shift = _affine_on(normalization, x.shape[1], x.device)
    x = x.float() if x.dtype == torch.uint8 else x
    return torch.addcmul(shift, x, scale).contiguous(memory_format=memory_format)


def augment(
    x: torch.Tensor,
    *,
    normalization: Normalization,
    crop_scale: tuple[float, float],
    flip: bool,
    translate: float = 0.0,
    generator: torch.Generator | None = None,
    memory_format: torch.memory_format = torch.channels_last,
) -> torch.Tensor:
    """Random resized crop, translation and horizontal flip of a whole uint8 batch at once, then
    `normalization`.

    Each image gets its own crop (area fraction in `crop_scale`, aspect ratio in [3/4, 4/3]), its own
    shift (a whole number of pixels up to `translate` × the side, in each direction, the borders
    filled by reflection: the pad-and-crop of CIFAR-style training) and its own flip, expressed as one
    affine map per image. With crops, a single `grid_sample` applies all of them in one pass over
    the batch. Without (the shipped recipe), a shift and a flip only move whole pixels: the uint8
    pixels themselves are gathered, a quarter of the bytes and no resampling, with the same random
    draws and the same result as the affine map sampled at pixel centres.
    """
    b, side, device = x.shape[0], x.shape[-1], x.device
    if crop_scale == (1.0, 1.0) and not flip and not translate:
        return normalize(x, normalization, memory_format)

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(b, generator=generator, device=generator.device if generator else "cpu")

    area = uniform(*crop_scale)
    # log aspect ratio, narrowed to [log area, -log area] so that neither side exceeds the image
    log_ratio = torch.maximum(torch.minimum(uniform(math.log(3 / 4), math.log(4 / 3)), -area.log()), area.log())
    w = torch.sqrt(area * log_ratio.exp())  # crop width and height as fractions of the side
    h = torch.sqrt(area / log_ratio.exp())
    cx = (1 - w) * uniform(-1.0, 1.0)  # crop centre in grid_sample's [-1, 1] coordinates
    cy = (1 - h) * uniform(-1.0, 1.0)
    shift_x = shift_y = torch.zeros(b)
    if translate:
        most = round(translate * side)  # px, at most, each way
        shift_x = uniform(-most - 0.5, most + 0.5).round().clamp(-most, most)  # whole pixels, in [-most, most]
        shift_y = uniform(-most - 0.5, most + 0.5).round().clamp(-most, most)
    flipped = uniform(0.0, 1.0) < 0.5 if flip else torch.zeros(b, dtype=torch.bool)
    if crop_scale == (1.0, 1.0):
        # output pixel (r, c) is input pixel (r + dy, c + dx) of the (mirrored) image, reflected at the borders
        pixel = torch.arange(side)
        rows = _reflect(pixel + shift_y.long()[:, None], side)  # (B, S)
        cols = _reflect(torch.where(flipped[:, None], side - 1 - pixel, pixel) + shift_x.long()[:, None], side)
        rows, cols = to_device(rows, device), to_device(cols, device)
        moved = x[torch.arange(b, device=device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (B, S, S, C)
        return normalize(
            moved.permute(0, 3, 1, 2), normalization, memory_format
        )  # a channels-last view: no copy for channels-last
    cx, cy = cx + shift_x * 2 / side, cy + shift_y * 2 / side  # one pixel is 2 / side in grid_sample's coordinates
    sign = torch.where(flipped, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = w * sign, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    grid = F.affine_grid(to_device(theta, device), list(x.shape), align_corners=False)
    out = F.grid_sample(
        normalize(x, normalization), grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )
    return out.contiguous(memory_format=memory_format)


def _reflect(index: torch.Tensor, side: int) -> torch.Tensor:
    """Pixel indices past either border mirrored back, the border pixel repeated (-1 → 0, side → side - 1),
    as grid_sample's reflection at align_corners=False; shifts stay under half the side (train.translate)."""
    return torch.where(index < 0, -index - 1, torch.where(index >= side, 2 * side - 1 - index, index))
