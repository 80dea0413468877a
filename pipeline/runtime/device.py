"""Where and how a model computes (params `runtime`): the device, its threads, the precision, the
memory format and compilation, with `auto` resolved for the machine at hand (`resolve`).

The same code runs on the CPU and on CUDA: bf16 autocast, channels-last tensors and torch.compile
are one path on both, so the CPU test suite executes the branches a GPU takes. What `auto` picks:
- precision: bf16 autocast where the device multiplies bf16 natively (a CUDA GPU from Ampere on;
  a CPU with AMX or AVX-512 BF16, whose oneDNN kernels run bf16 convolutions at about twice fp32's
  rate), else fp32; but fp32 for an architecture registered as losing accuracy in bf16 (GoogLeNet:
  Compute.for_model). The weights stay fp32; the loss and every probability are computed in fp32.
- memory format: channels-last (measured faster on this project's CPU for fp32 and bf16 alike, and
  what CUDA's tensor cores want).
- compile: off. On the CPU compiled steps were measured no faster than eager ones (docs/speed.md)
  and cost minutes of compiling; on a GPU it is not yet measured.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from pipeline.common.cli import cpu_count
from pipeline.common.errors import StageError
from pipeline.params.sections import RuntimeParams

FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


@dataclass(frozen=True)
class Compute:
    """How a model computes here, every `auto` resolved: what training, evaluation and predict share,
    and what a model file records (`record`)."""

    device: torch.device
    precision: str = "fp32"  # fp32 | bf16 (autocast: matrix products and convolutions in bf16, weights fp32)
    memory_format: str = "channels_last"  # channels_last | contiguous
    compile: bool = False
    reasons: tuple[str, ...] = field(default=(), compare=False)  # why `auto` chose as it did, one line each
    chosen: bool = field(default=False, compare=False)  # the precision is `auto`'s choice, not the user's

    @property
    def format(self) -> torch.memory_format:
        return FORMATS[self.memory_format]

    def autocast(self):
        """bf16 autocast on this device's type (no loss scaling needed, unlike fp16); fp32: nothing."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def describe(self) -> str:
        """`cpu (2 threads), bf16, channels-last, eager`"""
        return (
            f"{describe(self.device)}, {self.precision}, {self.memory_format.replace('_', '-')}, "
            f"{'compiled' if self.compile else 'eager'}"
        )

    def for_model(self, name: str, bf16_ok: bool) -> Compute:
        """How model `name` computes: as this, but fp32 where `auto` chose bf16 for an architecture
        measured to lose accuracy in it (models.bf16_ok); a bf16 the user asked for is kept."""
        if self.precision == "bf16" and self.chosen and not bf16_ok:
            return replace(
                self, precision="fp32", reasons=(f"precision fp32 for {name}: bf16 was measured to cost it accuracy",)
            )
        return self

    def record(self) -> dict:
        return {"precision": self.precision, "memory_format": self.memory_format, "compile": self.compile}


def resolve(
    rp: RuntimeParams, *, processes: int = 1, device: torch.device | None = None, features: frozenset[str] | None = None
) -> Compute:
    """`rp` for the machine at hand (or `device`): the device (and its threads), then each `auto`
    (precision from the device's bf16 support, `features` of the CPU as cpu_features() finds them)."""
    device = device or choose_device(rp.device, processes=processes, threads=rp.threads)
    reasons = []
    precision = rp.precision
    if precision == "auto":
        precision, why = auto_precision(device, cpu_features() if features is None else features)
        reasons.append(f"precision {precision}: {why}")
    memory_format = "channels_last" if rp.memory_format == "auto" else rp.memory_format
    if rp.memory_format == "auto":
        reasons.append("memory format channels-last: measured the faster on the CPU, and what tensor cores want")
    compile = rp.compile is True
    if rp.compile == "auto":
        why = (
            "compiled steps measured no faster than eager on the CPU"
            if device.type == "cpu"
            else "not yet measured on a GPU: set runtime.compile: true to try"
        )
        reasons.append(f"eager, not compiled: {why}")
    return Compute(device, precision, memory_format, compile, tuple(reasons), chosen=rp.precision == "auto")


def auto_precision(device: torch.device, features: frozenset[str]) -> tuple[str, str]:
    """(precision, why) for `auto`: bf16 where the device multiplies bf16 natively, else fp32."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", f"{torch.cuda.get_device_name(device)} computes bf16 natively"
        return "fp32", f"{torch.cuda.get_device_name(device)} has no native bf16 (before Ampere)"
    native = [name for name in ("amx_bf16", "avx512_bf16") if name in features]
    if native:
        return "bf16", f"this CPU has {' and '.join(NAMES[n] for n in native)}: oneDNN's bf16 kernels"
    return "fp32", "this CPU has neither AMX nor AVX-512 BF16: bf16 would be emulated, slower than fp32"


NAMES = {"amx_bf16": "AMX", "avx512_bf16": "AVX-512 BF16"}


def cpu_features() -> frozenset[str]:
    """The CPU's bf16 instruction sets this process can use, as torch reports them (torch.cpu's
    probes, where this torch has them), else as Linux's /proc/cpuinfo lists them: amx_bf16, avx512_bf16."""
    found = set()
    probes = {"amx_bf16": "_is_amx_tile_supported", "avx512_bf16": "_is_avx512_bf16_supported"}
    if all(hasattr(torch.cpu, probe) for probe in probes.values()):
        return frozenset(name for name, probe in probes.items() if getattr(torch.cpu, probe)())
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        flags = {word for line in cpuinfo.read_text().splitlines() if line.startswith("flags") for word in line.split()}
        found = {name for name in probes if name in flags}
    return frozenset(found)


def choose_device(name: str = "auto", *, processes: int = 1, threads: int = 0) -> torch.device:
    """`auto` is CUDA when a GPU is visible, else the CPU: the same params run on both. On the CPU,
    `processes` on this machine share its cores, or `threads` of them when that is not 0."""
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
    cores = threads or cpu_count()  # all cores, not torch's default of the physical ones
    torch.set_num_threads(max(1, cores // processes))  # the CPU side of a GPU run too (decoding, metrics)
    return device


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
