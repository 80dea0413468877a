"""Where and how a model runs: device choice, threads, mixed precision, and the one `predict`.

Every prediction in the project (validation during training, the test split in `evaluate`) goes
through `predict`, which puts the model in eval mode under `torch.inference_mode()` itself: the
course's "forgot model.eval()" accuracy drop cannot happen here.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from pipeline.cli import cpu_count
from pipeline.data import Split, batches, normalize
from pipeline.errors import StageError
from pipeline.progress import Progress


def choose_device(name: str = "auto", *, processes: int = 1) -> torch.device:
    """`auto` is CUDA when a GPU is visible, else the CPU: the same params run on both.
    On the CPU, `processes` on this machine share its cores."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise StageError(f"runtime.device = {name!r} but no CUDA GPU is visible; use auto or cpu")
        if (device.index or 0) >= torch.cuda.device_count():
            raise StageError(f"runtime.device = {name!r} but only {torch.cuda.device_count()} GPU(s) are visible")
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        torch.set_num_threads(max(1, cpu_count() // processes))  # all cores, not torch's default of the physical ones
    return device


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def autocast(device: torch.device):
    """bf16 on CUDA (no loss scaling needed, unlike fp16); plain fp32 on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def predict(model: nn.Module, split: Split, batch_size: int, progress: Progress | None = None) -> torch.Tensor:
    """Class probabilities (N, classes) float32 on the CPU, in the split's order, in eval mode."""
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.inference_mode(), autocast(split.device):
            for x, _ in batches(split, batch_size, shuffle=False):
                out.append(torch.softmax(model(normalize(x)).float(), dim=1))
                if progress is not None:
                    progress.update(len(x))
    finally:
        model.train(was_training)
    return torch.cat(out).cpu()
