"""Where a model runs: the device `runtime.device` names, its threads, and the precision it computes in."""

from __future__ import annotations

import contextlib

import torch

from pipeline.common.cli import cpu_count
from pipeline.common.errors import StageError


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
