"""Several training processes under `torchrun`: who this process is, its device and process group,
sums over the processes, and BatchNorm synchronised over them (DistributedDataParallel).

A plain `python -m pipeline.train` is World(): one process, and every helper here is then the
identity, so the training code reads the same either way.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from pipeline.common.errors import StageError
from pipeline.params.sections import RuntimeParams
from pipeline.runtime.device import Compute, choose_device, resolve


@dataclass(frozen=True)
class World:
    """This process's place in a torchrun launch; a plain `python -m` run is World(): one process."""

    rank: int = 0  # 0 .. size-1 over every machine; rank 0 alone writes files and prints
    size: int = 1
    local_rank: int = 0  # on this machine: picks the GPU
    local_size: int = 1  # processes on this machine: they share its cores

    @property
    def main(self) -> bool:
        return self.rank == 0


@contextlib.contextmanager
def launch(rp: RuntimeParams) -> Iterator[tuple[World, Compute]]:
    """This process's World and how it computes (`runtime` resolved), in the process group of the
    launch torchrun started (its RANK, WORLD_SIZE, LOCAL_RANK... variables), if any: process k on a
    machine takes cuda:k and nccl, or a share of the cores and gloo on the CPU."""
    env = os.environ
    world = World(
        *(int(env.get(k, d)) for k, d in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0), ("LOCAL_WORLD_SIZE", 1)))
    )
    if world.size == 1:
        yield world, resolve(rp)
        return
    if rp.device.startswith("cuda:"):
        raise StageError(
            f"runtime.device = {rp.device!r} names one GPU, but {world.local_size} processes run on this "
            f"machine, one per GPU; use auto or cuda (choose the GPUs with CUDA_VISIBLE_DEVICES)"
        )
    cuda = rp.device == "cuda" or (rp.device == "auto" and torch.cuda.is_available())
    if cuda and world.local_size > torch.cuda.device_count():
        raise StageError(
            f"runtime.processes = {world.local_size} but only {torch.cuda.device_count()} GPU(s) are visible: "
            f"one process per GPU; lower runtime.processes"
        )
    device = choose_device(
        f"cuda:{world.local_rank}" if cuda else "cpu", processes=world.local_size, threads=rp.threads
    )
    if cuda:
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    try:
        yield world, resolve(rp, processes=world.local_size, device=device)
    finally:
        dist.destroy_process_group()


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def sum_over_processes(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sums over every process (the values themselves in a single process)."""
    if not distributed():
        return values
    total = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.tolist()


def min_over_processes(value: torch.Tensor) -> int:
    """The smallest of one integer tensor over every process."""
    if not distributed():
        return value.item()
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return value.item()


def from_main(value):
    """Rank 0's value of a picklable object, on every process: a decision they must all share."""
    if not distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def parallel(model: nn.Module, device: torch.device) -> tuple[nn.Module, int]:
    """`model` with every BatchNorm synchronised over the processes (the statistics of the global
    batch, as one process would compute them), wrapped for DistributedDataParallel; and how many
    BatchNorm layers it has. Submodule names do not change, so TransferModel still finds its frozen
    parts, and the state dict loads into the plain model."""
    norms = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return nn.parallel.DistributedDataParallel(model, device_ids=[device]), norms
    model = _swap_batchnorm(model)
    return nn.parallel.DistributedDataParallel(model), norms


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """SyncBatchNorm for CPU processes under gloo: PyTorch's needs CUDA kernels (and DDP refuses
    it on the CPU). In training, the mean and the variance of the global batch come from all-reduced
    per-channel sums, differentiably: the backward all-reduces the gradients of those sums."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input (N, C, ...), got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and distributed()):
            return super().forward(x)
        self._check_input_dim(x)
        dtype, x = x.dtype, x.float()  # statistics in fp32 under bf16 autocast, as BatchNorm's own kernels keep them
        dims, shape = [0, *range(2, x.dim())], [1, -1] + [1] * (x.dim() - 2)  # all but channels; (1, C, 1, 1)
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype)
        sums = SumOverProcesses.apply(torch.cat([x.sum(dims), count]))  # (C + 1): sums, then images × pixels
        n = sums[-1]
        centred = x - (sums[:-1] / n).view(shape)
        var = SumOverProcesses.apply(centred.square().sum(dims)) / n  # (C,) biased, as BatchNorm normalises
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1 / self.num_batches_tracked.item()
                self.running_mean.lerp_(sums[:-1] / n, momentum)
                self.running_var.lerp_(var * n / (n - 1), momentum)  # unbiased, as BatchNorm keeps it
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        out = out * self.weight.view(shape) + self.bias.view(shape) if self.affine else out
        return out.to(dtype)


class SumOverProcesses(torch.autograd.Function):
    """The element-wise sum of a tensor over every process, on every process, differentiable: every
    process's loss depends on the sum, so the gradient of each part is the sum of their gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def _swap_batchnorm(module: nn.Module) -> nn.Module:
    """Every BatchNorm*d in `module` becomes a CpuSyncBatchNorm sharing its parameters, buffers and mode."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        synced = CpuSyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        synced.weight, synced.bias = module.weight, module.bias
        synced.running_mean, synced.running_var = module.running_mean, module.running_var
        synced.num_batches_tracked = module.num_batches_tracked
        synced.train(module.training)
        return synced
    for name, child in module.named_children():
        module.add_module(name, _swap_batchnorm(child))
    return module
