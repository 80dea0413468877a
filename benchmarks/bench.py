"""Benchmark: how fast this project's data path trains a model, against the course's way and the ceiling.

    python -m benchmarks.bench --model resnet18 --image-size 224 --batch-size 64

On the same machine, in one run, for one model, image size and batch size, it measures training
images per second of:
  dataloader_baseline  the course material's loop: PIL decodes every JPEG every epoch, torchvision
             transforms (Resize, RandomHorizontalFlip, ToTensor, Normalize) in a DataLoader with a
             worker per core;
  pipeline   this project's path: preprocessed uint8 tensors on the device, index-slice batches,
             the recipe's augmentation (params.yaml `train`) and normalisation on whole batches on the device;
  ceiling    the same model on random tensors already on the device: no data path at all;
plus `evaluation` (predict in eval mode) and `epochs` (the train stage's whole epochs: training,
validation and the per-epoch resume state), whose "cores busy" shows any single-threaded stall,
and preprocessing throughput (decode + resize to tensors) with one process and with every core.
It prints a table and writes a JSON file with every measurement and the ratios
pipeline/dataloader_baseline and pipeline/ceiling. Every phase runs the same training step (optimiser, bf16 autocast on CUDA,
channels-last), so the differences are the data path's alone.
"""

from __future__ import annotations

import argparse
import io
import platform
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline import models
from pipeline.common import atomic, cli
from pipeline.common.errors import StageError
from pipeline.data.images import Archive, label_of, load
from pipeline.data.workers import map_archive
from pipeline.params import recipes
from pipeline.runtime.device import autocast, choose_device, describe, synchronize
from pipeline.runtime.inference import probabilities
from pipeline.runtime.tensors import MEAN, STD, Split, augment, batches
from pipeline.training.fit import fit
from pipeline.training.resume import ResumeFile


def training_step(model: nn.Module, optimizer, device: torch.device):
    criterion = nn.CrossEntropyLoss()

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        with autocast(device):
            loss = criterion(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def timed(batches_iter, step, device: torch.device, *, warmup: int, steps: int) -> dict:
    """Images/s over `steps` batches after `warmup` batches; CPU time over wall time says how busy
    the cores were (2.0 on two cores is both of them all the time)."""
    images, start, cpu = 0, None, None
    for i, (x, y) in enumerate(batches_iter):
        if i == warmup:
            synchronize(device)
            start, cpu = time.perf_counter(), time.process_time()
        step(x, y)
        if i >= warmup:
            images += len(y)
        if i + 1 == warmup + steps:
            break
    synchronize(device)
    wall = time.perf_counter() - start
    return {"images_per_second": images / wall, "seconds": wall, "images": images, "cpu_busy": (time.process_time() - cpu) / wall}


def endless(make_iter):
    while True:
        yield from make_iter()


def on_device(loader, device: torch.device):
    """The course's batches, epoch after epoch, moved to the device as its loop did."""
    while True:
        for x, y in loader:
            yield x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last), y.to(device, non_blocking=True)


def members(archive: Path, count: int) -> list[tuple[str, int]]:
    """The first `count` labelled JPEG members, alternating classes."""
    with Archive(archive) as a:
        labelled = [(n, label_of(n)) for n in a.names() if label_of(n) is not None and n.lower().endswith((".jpg", ".jpeg"))]
    by_class = [[m for m in labelled if m[1] == c] for c in (0, 1)]
    chosen = [m for pair in zip(*by_class) for m in pair][:count]
    if len(chosen) < count:
        raise StageError(f"{archive} has only {len(chosen)} labelled JPEGs of each class in pairs; need {count}")
    return chosen


class CourseDataset(torch.utils.data.Dataset):
    """The course's way: every image decoded from its JPEG by PIL, every epoch, in a worker."""

    def __init__(self, archive: Path, chosen: list[tuple[str, int]], image_size: int):
        from torchvision import transforms

        self.archive_path, self.chosen, self.archive = archive, chosen, None
        self.transform = transforms.Compose(
            [
                transforms.Resize((image_size, image_size)),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(MEAN, STD),
            ]
        )

    def __len__(self) -> int:
        return len(self.chosen)

    def __getitem__(self, i: int):
        from PIL import Image

        if self.archive is None:  # one open archive per worker process
            self.archive = Archive(self.archive_path)
        name, label = self.chosen[i]
        image = Image.open(io.BytesIO(self.archive.read(name))).convert("RGB")
        return self.transform(image), label


def bench_training(model_name: str, archive: Path, *, image_size: int, batch_size: int, steps: int, warmup: int, device: torch.device, workers: int) -> dict:
    chosen = members(archive, batch_size * 4)
    with Archive(archive) as a:  # the pipeline's preprocessed tensors for the same images
        images = np.stack([load(a.read(name), image_size, "crop") for name, _ in chosen])
    labels = torch.tensor([label for _, label in chosen])
    split = Split(images=torch.from_numpy(images).to(device), labels=labels.to(device), device=device)

    def fresh_step():
        torch.manual_seed(0)
        model = models.build(model_name, **_offline(model_name)).to(device, memory_format=torch.channels_last).train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        return training_step(model, torch.optim.SGD(trainable, lr=1e-3, momentum=0.9), device)

    generator = torch.Generator().manual_seed(0)
    results = {}

    loader = torch.utils.data.DataLoader(
        CourseDataset(archive, chosen, image_size), batch_size=batch_size, shuffle=True, drop_last=True,
        num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=True,
    )  # fmt: skip
    results["dataloader_baseline"] = timed(on_device(loader, device), fresh_step(), device, warmup=warmup, steps=steps)
    del loader  # its persistent workers stop before the next phase

    tp = recipes.load().train
    ours = (
        (augment(x, crop_scale=tp.crop_scale, flip=tp.flip, translate=tp.translate, generator=generator), y)
        for x, y in endless(lambda: batches(split, batch_size, shuffle=True, generator=generator))
    )
    results["pipeline"] = timed(ours, fresh_step(), device, warmup=warmup, steps=steps)

    noise = torch.randn(batch_size, 3, image_size, image_size, device=device).contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, 2, (batch_size,), device=device)
    results["ceiling"] = timed(endless(lambda: iter([(noise, target)])), fresh_step(), device, warmup=warmup, steps=steps)
    results["evaluation"] = bench_evaluation(model_name, split, batch_size)
    results["epochs"] = bench_epochs(model_name, split, batch_size)
    return results


def bench_evaluation(model_name: str, split: Split, batch_size: int) -> dict:
    """`predict` (eval mode, inference mode) over the split, as validation and evaluate run it."""
    model = models.build(model_name, **_offline(model_name)).to(split.device, memory_format=torch.channels_last)
    probabilities(model, split, batch_size)  # warm-up
    synchronize(split.device)
    start, cpu = time.perf_counter(), time.process_time()
    probabilities(model, split, batch_size)
    wall = time.perf_counter() - start
    return {"images_per_second": len(split) / wall, "seconds": wall, "images": len(split), "cpu_busy": (time.process_time() - cpu) / wall}


def bench_epochs(model_name: str, split: Split, batch_size: int, epochs: int = 2) -> dict:
    """Whole epochs of the train stage's own loop (`training.fit`): training, validation, the resume
    state saved after each epoch. Cores busy well below the core count would show a stall."""
    overrides = {"model": model_name, "train": {"epochs": epochs, "batch_size": batch_size}, "runtime": {"device": split.device.type}}
    spec = recipes.load(overrides=overrides).models[0]
    spec = recipes.ModelSpec(spec.name, {**spec.options, **_offline(model_name)}, spec.train)
    with tempfile.TemporaryDirectory() as tmp:
        synchronize(split.device)
        start, cpu = time.perf_counter(), time.process_time()
        fit(spec, split, split, classes=2, resume=ResumeFile(Path(tmp) / "resume.pt", "bench"))
        wall = time.perf_counter() - start
    images = epochs * (len(split) // batch_size) * batch_size
    return {"images_per_second": images / wall, "seconds": wall, "images": images, "cpu_busy": (time.process_time() - cpu) / wall}


def _offline(model_name: str) -> dict:
    return {"pretrained": False} if "pretrained" in models.option_types(model_name) else {}


def _decode_all(archive: Archive, names: list[str], *, size: int) -> int:
    for name in names:
        load(archive.read(name), size, "crop")
    return len(names)


def bench_preprocess(archive: Path, *, image_size: int, count: int, workers: int) -> dict:
    """Decode + resize throughput, as the preprocess stage runs it (worker pool start-up included).
    A small archive is cycled through until `count` images: seconds of work, so the figure is the
    steady rate of a real 25,000-image run, not the pool's start-up."""
    with Archive(archive) as a:
        jpegs = [n for n in a.names() if label_of(n) is not None and n.lower().endswith((".jpg", ".jpeg"))]
    names = (jpegs * (count // len(jpegs) + 1))[:count]
    chunks = [names[i : i + 32] for i in range(0, len(names), 32)]
    out = {}
    for processes in sorted({1, workers}):
        start = time.perf_counter()
        map_archive(archive, partial(_decode_all, size=image_size), chunks, workers=processes, desc=f"preprocess ×{processes}")
        seconds = time.perf_counter() - start
        out[f"processes_{processes}"] = {"images_per_second": len(names) / seconds, "per_process": len(names) / seconds / processes}
    return out


def main() -> None:
    parser = cli.parser(__spec__.name, __doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per phase")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (cuDNN autotuning, caches)")
    parser.add_argument("--archive", type=Path, default=Path("data/raw/images.zip"), help="real JPEGs (Kaggle, Microsoft or class-folder layout)")
    parser.add_argument("--preprocess-images", type=int, default=4000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default bench/<model>-<size>px-<device>.json)")
    args = parser.parse_args()
    models.resolve(args.model)
    if not args.archive.exists():
        raise StageError(f"{args.archive} not found: run `dvc repro download` first, or pass --archive PATH to a zip of JPEGs")
    device = choose_device(args.device)
    workers = cli.cpu_count()
    result = {
        "model": args.model, "image_size": args.image_size, "batch_size": args.batch_size, "steps": args.steps,
        "device": describe(device), "cpu_cores": workers, "torch": torch.__version__, "platform": platform.platform(),
        "training": bench_training(args.model, args.archive, image_size=args.image_size, batch_size=args.batch_size,
                                   steps=args.steps, warmup=args.warmup, device=device, workers=workers),
        "preprocess": bench_preprocess(args.archive, image_size=args.image_size, count=args.preprocess_images, workers=workers),
    }  # fmt: skip
    t = result["training"]
    result["ratios"] = {
        "pipeline/dataloader_baseline": t["pipeline"]["images_per_second"] / t["dataloader_baseline"]["images_per_second"],
        "pipeline/ceiling": t["pipeline"]["images_per_second"] / t["ceiling"]["images_per_second"],
    }
    pre = result["preprocess"]
    if len(pre) > 1:
        result["ratios"]["preprocess_all_cores/one"] = pre[f"processes_{workers}"]["images_per_second"] / pre["processes_1"]["images_per_second"]
    out = args.out or Path("bench") / f"{args.model.replace(':', '-')}-{args.image_size}px-{device.type}.json"
    atomic.write_json(out, result)
    print(table(result))
    print(f"written to {out}")


def table(result: dict) -> str:
    lines = [
        f"{result['model']} at {result['image_size']} px, batch {result['batch_size']}, on {result['device']}",
        f"{'phase':<20}{'images/s':>12}{'cores busy':>12}",
    ]
    for phase, r in result["training"].items():
        lines.append(f"{phase:<20}{r['images_per_second']:>12.1f}{r['cpu_busy']:>12.2f}")
    for name, r in result["preprocess"].items():
        lines.append(f"{'preprocess ' + name.split('_')[1] + '×':<20}{r['images_per_second']:>12.1f}{'':>12}")
    lines += [f"{k:<36}{v:>8.2f}" for k, v in result["ratios"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    cli.run(main)
