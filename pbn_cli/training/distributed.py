"""Distributed training set-up, read from the environment torchrun sets.

The run is distributed when ``WORLD_SIZE`` > 1: NCCL on GPUs, gloo on the
CPU. Everything else asks ``is_primary()``: rank 0 alone takes the run's
lock, logs and writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def primary(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def setup(device_type: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def barrier(d: Dist) -> None:
    if d.active:
        dist.barrier()


def broadcast_object(d: Dist, obj):
    """``obj`` from rank 0, on every rank."""
    if not d.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_mean(d: Dist, value: torch.Tensor) -> torch.Tensor:
    if d.active:
        value = value.clone()
        dist.all_reduce(value)
        value /= d.world
    return value


def teardown(d: Dist) -> None:
    if d.active and dist.is_initialized():
        dist.destroy_process_group()
