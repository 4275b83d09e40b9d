"""Work spread over processes by torchrun (training, and filling the embedding store): set-up and exchanges.

The work is distributed when ``WORLD_SIZE`` > 1: NCCL on GPUs, gloo on the
CPU. Everything else asks ``primary``: rank 0 alone takes the locks, logs
and writes. torch is imported only when there is more than one process, so
a single process that never builds a network (an answer through
onnxruntime) never imports it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


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


def world_size() -> int:
    """How many processes torchrun started for this work (1 when alone)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device: torch.device) -> tuple[Dist, torch.device]:
    """The process group torchrun describes (none when alone), and this rank's device (its own GPU under CUDA)."""
    world = world_size()
    if world <= 1:
        return Dist(), device
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    d = Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
    return d, device


def barrier(d: Dist) -> None:
    if d.active:
        import torch.distributed as dist

        dist.barrier()


def broadcast_object(d: Dist, obj):
    """``obj`` from rank 0, on every rank."""
    if not d.active:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_object(d: Dist, obj) -> list | None:
    """Every rank's ``obj``, in rank order, on rank 0 (None on the others)."""
    if not d.active:
        return [obj]
    import torch.distributed as dist

    box = [None] * d.world if d.primary else None
    dist.gather_object(obj, box, dst=0)
    return box


def teardown(d: Dist) -> None:
    if d.active:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
