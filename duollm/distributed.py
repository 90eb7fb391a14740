"""torchrun's environment, read in one place; DDP (and compile) applied from outside the model.

`init()` works unchanged as one process: without torchrun's variables it returns rank 0 of 1 and starts
no process group. `parallelize` applies, in this order, `torch.compile` (if asked) and DDP (if more than one
process). The training loop knows about ranks only through `Dist.is_main`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

from duollm.errors import DuoError


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    local_rank: int
    device: str  # "cpu" or "cuda:N"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_main_process() -> bool:
    """Rank 0 under torchrun, or the only process: the one that prints a command's result."""
    return int(os.environ.get("RANK", 0)) == 0


def init(device: str = "auto") -> Dist:
    """Read RANK/WORLD_SIZE/LOCAL_RANK; start the process group (NCCL on GPUs, gloo on CPUs) if world > 1."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    if device == "cuda" and not torch.cuda.is_available():
        raise DuoError("train.device is cuda but no CUDA GPU is available; use auto or cpu")
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    dev = f"cuda:{local}" if use_cuda else "cpu"
    if use_cuda and local >= torch.cuda.device_count():
        raise DuoError(
            f"process {local} of this machine needs a GPU, but only {torch.cuda.device_count()} are visible; start fewer processes"
        )
    if use_cuda:
        torch.cuda.set_device(local)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(rank, world, local, dev)


def parallelize(model: nn.Module, d: Dist, compile: bool = False) -> nn.Module:
    """compile → DDP. Unused modules are allowed: a batch may send no token through a layer's small module."""
    if compile:
        model = torch.compile(model)
    if d.world > 1:
        ids = [d.local_rank] if d.device.startswith("cuda") else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)
    return model


def all_mean(x: torch.Tensor, d: Dist) -> torch.Tensor:
    """Mean of a tensor over ranks (itself on one process)."""
    if d.world > 1:
        x = x.clone()
        dist.all_reduce(x)
        x /= d.world
    return x


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()


def shutdown(d: Dist) -> None:
    if d.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
