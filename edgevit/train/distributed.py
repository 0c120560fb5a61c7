"""Where this process stands in a ``torchrun`` job: its rank, the world size, its device, and the few collectives
the training loop needs (each a no-op on one process).

Under ``torchrun --nproc_per_node N`` the loop wraps the model in DistributedDataParallel (gloo on CPU, nccl on
GPU); each rank reads its share of the same seeded order (``batch_size`` is per rank, so the effective batch
is ``batch_size * accum_steps * N``), draws dropout and drop-path with seed ``seed + rank`` and augments each
sample from its position in the global order (the same draws as one process), and only rank 0 logs, shows
progress, validates and writes checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from edgevit.utils import EdgeVitError


@dataclass
class DistContext:
    """This process's ``rank`` of ``world``, its ``device``, and whether it started the process group.

    ``owns_group``: :func:`setup_distributed` initialised the process group, so the loop destroys it at the end.
    """

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def main(self) -> bool:
        """Rank 0: the process that logs, validates and writes checkpoints."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (nothing on one process)."""
        if self.world > 1:
            torch.distributed.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (the values themselves on one process)."""
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return t.tolist()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` (picklable) on every rank."""
        if self.world == 1:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


def setup_distributed(device: str) -> DistContext:
    """Join the ``torchrun`` process group (``WORLD_SIZE`` > 1 in the environment) and pick the device.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available); under torchrun the CUDA device is
            ``LOCAL_RANK``'s.

    Returns:
        A :class:`DistContext`; one process without ``WORLD_SIZE`` gets rank 0 of 1 and no process group.

    Raises:
        EdgeVitError: ``device`` is ``"cuda"`` and torch sees no CUDA device.
    """
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if cuda and not torch.cuda.is_available():
        raise EdgeVitError("train.device is cuda but torch sees no CUDA device; use device: cpu or auto")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(dev)
    if world == 1:
        return DistContext(device=dev)
    dist = torch.distributed
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if cuda else "gloo", device_id=dev if cuda else None)
    return DistContext(dist.get_rank(), dist.get_world_size(), dev, owns)


__all__ = ["DistContext", "setup_distributed"]
