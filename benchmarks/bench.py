"""Benchmark: how fast this project trains a model here, against the course's way, the ceiling, and
every way of computing the machine offers.

    python -m benchmarks.bench --model resnet18 --image-size 224 --batch-size 64

On the same machine, in one run, for one model, image size and batch size, it measures training
images per second of:
  dataloader_baseline  the course material's loop: PIL decodes every JPEG every epoch, torchvision
             transforms (Resize, RandomHorizontalFlip, ToTensor, Normalize) in a DataLoader with a
             worker per core;
  pipeline   this project's path with the shipped defaults (params.yaml `runtime`, `auto` resolved
             here): preprocessed uint8 tensors on the device, index-slice batches, the recipe's
             augmentation and normalisation on whole batches, the train stage's own step;
  ceiling    the same step and model on random tensors already on the device: no data path at all;
  fp32_eager the pipeline in plain fp32, eager, contiguous tensors: what the shipped choices buy;
  combinations  the pipeline in every precision, memory format and compilation (`--no-compile`
             leaves compilation out: each compiled model costs minutes), with the compile time;
plus `evaluation` (prediction in eval mode) and `epochs` (the train stage's whole epochs: training,
validation and the per-epoch resume state), whose "cores busy" shows any single-threaded stall,
and preprocessing throughput (decode + resize to tensors) with one process and with every core.

Each training phase also says its model FLOP utilisation: training FLOP/s (torch's FlopCounterMode
over one step: forward and backward, convolutions and matrix products) over the peak of its
precision here, taken as the best of a few large matrix products and convolutions on every core.
It prints a table and writes a JSON file with every measurement and the ratios
pipeline/dataloader_baseline, pipeline/ceiling and pipeline/fp32_eager.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import platform
import statistics
import tempfile
import time
import zipfile
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline import models
from pipeline.common import atomic, cli
from pipeline.common.errors import StageError
from pipeline.data.images import PHOTO_FORMATS, Archive, label_of, load
from pipeline.data.workers import map_archive
from pipeline.models.inputs import IMAGENET
from pipeline.params import recipes
from pipeline.runtime.device import Compute, describe, resolve, synchronize
from pipeline.runtime.inference import probabilities
from pipeline.runtime.tensors import Split, batches
from pipeline.training.fit import build, fit, train_step
from pipeline.training.optim import make_optimizer
from pipeline.training.resume import ResumeFile


def float_step(model: nn.Module, optimizer, compute: Compute):
    """The train stage's step on batches that are already float tensors (the course's loop, the
    ceiling's noise): forward in `compute`'s precision, the loss in fp32, backward, update."""
    criterion = nn.CrossEntropyLoss()

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        with compute.autocast():
            loss = criterion(model(x.contiguous(memory_format=compute.format)).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def timed(batches_iter, step, device: torch.device, *, warmup: int, steps: int) -> dict:
    """Images/s of `steps` batches after `warmup` batches, and over all of them
    (`mean_images_per_second`); CPU time over wall time says how busy the cores were (2.0 on two
    cores: both, all the time). On a CPU the rate is the median step's (a step the machine
    interrupted counts no more than any other). On a GPU it is the whole run's: waiting for the GPU
    after each step, to time it, would stop the host queuing the next step's kernels while the GPU
    computes, which training never does, so the figure would fall short of what training gets."""
    per_step = device.type != "cuda"
    images, start, cpu, times = 0, None, None, []
    for i, (x, y) in enumerate(batches_iter):
        if i == warmup:
            synchronize(device)
            start, cpu = time.perf_counter(), time.process_time()
        began = time.perf_counter()
        step(x, y)
        if i >= warmup:
            if per_step:
                synchronize(device)
                times.append(time.perf_counter() - began)
            images += len(y)
        if i + 1 == warmup + steps:
            break
    synchronize(device)
    wall = time.perf_counter() - start
    return {
        "images_per_second": images / len(times) / statistics.median(times) if per_step else images / wall,
        "mean_images_per_second": images / wall,
        "seconds": wall,
        "images": images,
        "cpu_busy": (time.process_time() - cpu) / wall,
    }


def endless(make_iter):
    while True:
        yield from make_iter()


def on_device(loader, device: torch.device):
    """The course's batches, epoch after epoch, moved to the device as its loop did."""
    while True:
        for x, y in loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def members(archive: Path, count: int) -> list[tuple[str, int]]:
    """The first `count` labelled JPEG members, alternating classes."""
    with Archive(archive) as a:
        labelled = [
            (n, label_of(n)) for n in a.names() if label_of(n) is not None and n.lower().endswith((".jpg", ".jpeg"))
        ]
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
                transforms.Normalize(IMAGENET.mean, IMAGENET.std),
            ]
        )

    def __len__(self) -> int:
        return len(self.chosen)

    def __getitem__(self, i: int):
        from PIL import Image

        if self.archive is None:  # one open archive per worker process
            self.archive = Archive(self.archive_path)
        name, label = self.chosen[i]
        image = Image.open(io.BytesIO(self.archive.read(name)), formats=PHOTO_FORMATS).convert(
            "RGB"
        )  # never a decoder outside the photo formats
        return self.transform(image), label


def bench_training(
    model_name: str,
    archive: Path,
    *,
    image_size: int,
    batch_size: int,
    steps: int,
    warmup: int,
    compute: Compute,
    workers: int,
    compile_too: bool = True,
    only: set[str] | None = None,
    profile: int = 0,
) -> dict:
    chosen = members(archive, batch_size * 4)
    with Archive(archive) as a:  # the pipeline's preprocessed tensors for the same images
        images = np.stack([load(a.read(name), image_size, "crop") for name, _ in chosen])
    labels = torch.tensor([label for _, label in chosen])
    device = compute.device
    split = Split(images=torch.from_numpy(images).to(device), labels=labels.to(device), device=device)
    spec = recipes.load(overrides={"model": model_name, "train": {"batch_size": batch_size}}).models[0]
    spec = recipes.ModelSpec(spec.name, {**spec.options, **_offline(model_name)}, spec.train)

    def fresh(how: Compute):
        torch.manual_seed(0)
        model = build(spec, split, 2, how).train()
        return (torch.compile(model) if how.compile else model), make_optimizer(model, spec.train)

    def pipeline_phase(how: Compute, profile: int = 0) -> dict:
        model, optimizer = fresh(how)
        generator = torch.Generator().manual_seed(0)
        criterion = nn.CrossEntropyLoss(label_smoothing=spec.train.label_smoothing)

        def step(x, y):
            train_step(model, optimizer, criterion, x, y, spec.train, generator, how)

        first = time.perf_counter()
        step(*next(batches(split, batch_size, shuffle=True, generator=generator)))  # compiles, when compiled
        synchronize(device)
        first = time.perf_counter() - first
        found = timed(
            endless(lambda: batches(split, batch_size, shuffle=True, generator=generator)),
            step,
            device,
            warmup=warmup,
            steps=steps,
        )
        found["first_step_seconds"] = first
        if profile:
            batches_iter = endless(lambda: batches(split, batch_size, shuffle=True, generator=generator))
            found["profile"] = profiled(batches_iter, step, device, steps=profile)
        return found | utilisation(found, how)

    flops = step_flops(spec, split, batch_size)
    peaks = {precision: peak_flops(device, precision) for precision in ("fp32", "bf16")}

    def utilisation(found: dict, how: Compute) -> dict:
        achieved = found["images_per_second"] * flops / batch_size
        return {"flops_per_second": achieved, "mfu": achieved / peaks[how.precision]}

    results = {}
    loader = torch.utils.data.DataLoader(
        CourseDataset(archive, chosen, image_size),
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=True,
    )
    model, optimizer = fresh(compute)
    results["dataloader_baseline"] = timed(
        on_device(loader, device), float_step(model, optimizer, compute), device, warmup=warmup, steps=steps
    )
    del loader  # its persistent workers stop before the next phase

    results["pipeline"] = pipeline_phase(compute, profile)
    noise = torch.randn(batch_size, 3, image_size, image_size, device=device).contiguous(memory_format=compute.format)
    target = torch.randint(0, 2, (batch_size,), device=device)
    model, optimizer = fresh(compute)
    results["ceiling"] = timed(
        endless(lambda: iter([(noise, target)])),
        float_step(model, optimizer, compute),
        device,
        warmup=warmup,
        steps=steps,
    )
    results["ceiling"] |= utilisation(results["ceiling"], compute)
    plain = Compute(device, "fp32", "contiguous", False)
    results["fp32_eager"] = pipeline_phase(plain)
    combinations = {}
    for precision in ("fp32", "bf16"):
        for memory_format in ("contiguous", "channels_last"):
            for compiled in (False, True) if compile_too else (False,):
                how = Compute(device, precision, memory_format, compiled)
                name = f"{precision}/{memory_format}/{'compiled' if compiled else 'eager'}"
                if only is not None and name not in only:
                    continue
                combinations[name] = results["fp32_eager"] if how == plain else pipeline_phase(how)
                if compiled:  # the first step compiles: its time beyond an ordinary step's
                    found = combinations[name]
                    found["compile_seconds"] = found["first_step_seconds"] - found["seconds"] / steps
    results["evaluation"] = bench_evaluation(model_name, split, batch_size, compute)
    results["epochs"] = bench_epochs(spec, split, batch_size, compute)
    return results | {
        "combinations": combinations,
        "flops_per_image": flops / batch_size,
        "peak_flops_per_second": peaks,
    }


def profiled(batches_iter, step, device: torch.device, *, steps: int, top: int = 10) -> dict:
    """Where the time of `steps` steps goes, by torch's profiler: the share of the wall time the
    device computes (a GPU's kernels; on a CPU, the time inside operators) and the `top` operators
    by their own time on the device, per step. On a GPU a busy share well under 1 says the host
    (launching kernels, or waiting for the GPU) sets the pace, not the GPU."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    step(*next(batches_iter))  # the profiler's own first step costs more
    synchronize(device)
    with profile(activities=[ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step(*next(batches_iter))
        synchronize(device)
        wall = time.perf_counter() - start
    events = prof.key_averages()

    def own(event) -> float:  # µs of the event's own time on the device (the CPU on a CPU)
        if not cuda:
            return event.self_cpu_time_total
        return getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0)

    ranked = sorted(events, key=own, reverse=True)[:top]
    return {
        "steps": steps,
        "wall_seconds": wall,
        "device_busy": sum(own(e) for e in events) / 1e6 / wall,
        "top": [{"op": e.key, "ms_per_step": own(e) / 1e3 / steps, "calls_per_step": e.count / steps} for e in ranked],
    }


def step_flops(spec, split: Split, batch_size: int) -> float:
    """FLOPs of one training step (forward and backward) of `spec` on a batch of `batch_size`, as
    torch's FlopCounterMode counts them: convolutions and matrix products, fp32, eager."""
    from torch.utils.flop_counter import FlopCounterMode

    how = Compute(split.device)
    model = build(spec, split, 2, how).train()
    optimizer = make_optimizer(model, spec.train)
    x, y = next(batches(split, batch_size, shuffle=False))
    with FlopCounterMode(display=False) as counter:
        train_step(model, optimizer, nn.CrossEntropyLoss(), x, y, spec.train, torch.Generator().manual_seed(0), how)
    return float(counter.get_total_flops())


# Problem scales `peak_flops` may grow through: matrix sides 256 × scale, convolution batches 2 × scale.
# A GPU needs the large ones: a launch and its synchronisation cost ~20 µs, as long as a 2048 × 2048
# bf16 product takes at ~800 TFLOP/s, so the CPU's largest would measure about half an H100's peak.
SCALES = {"cpu": (1, 2, 4, 8), "cuda": (1, 2, 4, 8, 16, 32, 64)}


def peak_flops(device: torch.device, precision: str, repeats: int = 5) -> float:
    """The most FLOP/s this machine reaches in practice in `precision`, every core: the best of a few
    matrix products, up to 2048 × 2048 on a CPU and 16384 × 16384 on a GPU (2 n³ FLOPs each), and of a
    few 3×3 convolutions, 256 channels in and out at 28 × 28 px, up to batch 16 (GPU: 128), channels-last
    (oneDNN's kernels on a CPU, which on some CPUs run well above the matrix library's). Each grows only
    while one run stays short (`growing`): a CPU without native bf16 multiplies bf16 matrices at well
    under 1 GFLOP/s (one 2048 × 2048 product took 60 s on a 2-core AMD Zen 3), where the benchmark
    itself trains fp32."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32

    def matmul(scale: int):  # n = 256 × scale
        n = 256 * scale
        a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
        return (lambda: a @ b), 2 * n**3

    def conv(scale: int):  # batch 2 × scale
        x = torch.randn(2 * scale, 256, 28, 28, device=device).to(dtype).contiguous(memory_format=torch.channels_last)
        w = torch.randn(256, 256, 3, 3, device=device).to(dtype).contiguous(memory_format=torch.channels_last)
        return (lambda: torch.nn.functional.conv2d(x, w, padding=1)), 2 * 2 * scale * 28 * 28 * 256 * 256 * 9

    def timed(run) -> float:
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        return time.perf_counter() - start

    scales = SCALES.get(device.type, SCALES["cuda"])
    return max(growing(work, timed, repeats, scales) for work in (matmul, conv))


def growing(make, timed, repeats: int, scales=(1, 2, 4, 8), short: float = 0.25) -> float:
    """The best FLOP/s of `make(scale)`'s work, `(run, flops)`, at each scale in turn: `repeats` timed
    runs after an untimed one, while a run takes under `short` seconds; the first longer run ends
    the measurement, after the scale it took (a few seconds at most where the largest would take
    a minute)."""
    best = 0.0
    for scale in scales:
        run, flops = make(scale)
        run()  # warm-up: the kernel's choice, the threads
        for _ in range(repeats):
            seconds = timed(run)
            best = max(best, flops / seconds)
            if seconds > short:
                return best
    return best


def bench_evaluation(model_name: str, split: Split, batch_size: int, compute: Compute) -> dict:
    """`probabilities` (eval mode, inference mode) over the split, as validation and evaluate run it."""
    model = models.build(model_name, **_offline(model_name)).to(split.device, memory_format=compute.format)
    probabilities(model, split, batch_size, compute=compute)  # warm-up
    synchronize(split.device)
    start, cpu = time.perf_counter(), time.process_time()
    probabilities(model, split, batch_size, compute=compute)
    wall = time.perf_counter() - start
    return {
        "images_per_second": len(split) / wall,
        "seconds": wall,
        "images": len(split),
        "cpu_busy": (time.process_time() - cpu) / wall,
    }


def bench_epochs(spec, split: Split, batch_size: int, compute: Compute, epochs: int = 2) -> dict:
    """Whole epochs of the train stage's own loop (`training.fit`): training, validation, the resume
    state saved after each epoch. Cores busy well below the core count would show a stall."""
    spec = recipes.ModelSpec(spec.name, spec.options, dataclasses.replace(spec.train, epochs=epochs, max_epochs=None))
    with tempfile.TemporaryDirectory() as tmp:
        synchronize(split.device)
        start, cpu = time.perf_counter(), time.process_time()
        fit(spec, split, split, classes=2, compute=compute, resume=ResumeFile(Path(tmp) / "resume.pt", "bench"))
        wall = time.perf_counter() - start
    images = epochs * (len(split) // batch_size) * batch_size
    return {
        "images_per_second": images / wall,
        "seconds": wall,
        "images": images,
        "cpu_busy": (time.process_time() - cpu) / wall,
    }


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
        map_archive(
            archive, partial(_decode_all, size=image_size), chunks, workers=processes, desc=f"preprocess ×{processes}"
        )
        seconds = time.perf_counter() - start
        out[f"processes_{processes}"] = {
            "images_per_second": len(names) / seconds,
            "per_process": len(names) / seconds / processes,
        }
    return out


def main() -> None:
    parser = cli.parser(__spec__.name, __doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per phase")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (cuDNN autotuning, caches)")
    parser.add_argument(
        "--archive",
        type=Path,
        default=Path("data/raw/images.zip"),
        help="real JPEGs (Kaggle, Microsoft or class-folder layout)",
    )
    parser.add_argument("--preprocess-images", type=int, default=4000)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--no-compile", action="store_true", help="leave the compiled combinations out (minutes of compiling each)"
    )
    parser.add_argument(
        "--only", help="measure only these combinations, a comma list (e.g. bf16/channels_last/compiled)"
    )
    parser.add_argument(
        "--profile", type=int, default=0, help="profile this many pipeline steps: where the time goes (0: off)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="JSON file (default bench/<model>-<size>px-<device>.json)"
    )
    args = parser.parse_args()
    models.resolve(args.model)
    # the flags that are params are checked as params (bounds, and the model's smallest size)
    recipes.load(
        overrides={
            "model": args.model,
            "data": {"image_size": args.image_size},
            "train": {"batch_size": args.batch_size},
        }
    )
    for flag, value, low in (
        ("--steps", args.steps, 1),
        ("--warmup", args.warmup, 0),
        ("--preprocess-images", args.preprocess_images, 1),
        ("--profile", args.profile, 0),
    ):
        if value < low:
            raise StageError(f"{flag} {value}: must be at least {low}")
    if not args.archive.exists():
        raise StageError(
            f"{args.archive} not found: run `dvc repro download` first, or pass --archive PATH to a zip of JPEGs"
        )
    if not args.archive.is_dir() and not zipfile.is_zipfile(args.archive):
        raise StageError(f"--archive {args.archive} is neither a zip nor a folder of photos")
    compute = resolve(dataclasses.replace(recipes.load().runtime, device=args.device))  # the shipped defaults, here
    workers = cli.cpu_count()
    result = {
        "model": args.model,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "device": describe(compute.device),
        "shipped": compute.describe(),
        "why": list(compute.reasons),
        "cpu_cores": workers,
        "torch": torch.__version__,
        "platform": platform.platform(),
        "training": bench_training(
            args.model,
            args.archive,
            image_size=args.image_size,
            batch_size=args.batch_size,
            steps=args.steps,
            warmup=args.warmup,
            compute=compute,
            workers=workers,
            compile_too=not args.no_compile,
            only=set(args.only.split(",")) if args.only else None,
            profile=args.profile,
        ),
        "preprocess": bench_preprocess(
            args.archive, image_size=args.image_size, count=args.preprocess_images, workers=workers
        ),
    }
    t = result["training"]
    rate = {name: t[name]["images_per_second"] for name in ("dataloader_baseline", "pipeline", "ceiling", "fp32_eager")}
    result["ratios"] = {
        "pipeline/dataloader_baseline": rate["pipeline"] / rate["dataloader_baseline"],
        "pipeline/ceiling": rate["pipeline"] / rate["ceiling"],
        "pipeline/fp32_eager": rate["pipeline"] / rate["fp32_eager"],
    }
    pre = result["preprocess"]
    if len(pre) > 1:
        result["ratios"]["preprocess_all_cores/one"] = (
            pre[f"processes_{workers}"]["images_per_second"] / pre["processes_1"]["images_per_second"]
        )
    out = args.out or Path("bench") / f"{args.model.replace(':', '-')}-{args.image_size}px-{compute.device.type}.json"
    atomic.write_json(out, result)
    print(table(result))
    print(f"written to {out}")


def table(result: dict) -> str:
    t = result["training"]
    lines = [
        f"{result['model']} at {result['image_size']} px, batch {result['batch_size']}, on {result['device']}; "
        f"shipped: {result['shipped']}",
        f"{'phase':<34}{'images/s':>10}{'cores busy':>12}{'MFU':>8}{'compile s':>11}",
    ]
    phases = {k: v for k, v in t.items() if isinstance(v, dict) and "images_per_second" in v}
    for phase, r in [*phases.items(), *t["combinations"].items()]:
        mfu = f"{r['mfu']:.1%}" if "mfu" in r else ""
        compiled = f"{r['compile_seconds']:.0f}" if "compile_seconds" in r else ""
        lines.append(f"{phase:<34}{r['images_per_second']:>10.1f}{r['cpu_busy']:>12.2f}{mfu:>8}{compiled:>11}")
    for name, r in result["preprocess"].items():
        lines.append(f"{'preprocess ' + name.split('_')[1] + '×':<34}{r['images_per_second']:>10.1f}")
    peaks = ", ".join(f"{k} {v / 1e9:,.0f}" for k, v in t["peak_flops_per_second"].items())
    lines.append(
        f"training FLOPs per image {t['flops_per_image'] / 1e9:.2f} G; peak GFLOP/s ({peaks}): the best of large "
        "matrix products and convolutions"
    )
    lines += [f"{k:<36}{v:>8.2f}" for k, v in result["ratios"].items()]
    if profile := t["pipeline"].get("profile"):
        lines.append(f"pipeline profiled over {profile['steps']} steps: the device busy {profile['device_busy']:.0%}")
        lines += [f"  {e['op'][:50]:<52}{e['ms_per_step']:>8.2f} ms/step" for e in profile["top"]]
    return "\n".join(lines)


if __name__ == "__main__":
    cli.run(main)
