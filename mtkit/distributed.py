"""Several processes under torchrun: process group, ranks, and the few collective calls we need.

With RANK and WORLD_SIZE in the environment (torchrun sets them), `mtkit train`
joins a process group (nccl on CUDA, gloo on the CPU) and wraps the model in
DistributedDataParallel, and `mtkit translate` runs one shard per rank
(mtkit.translate.workers). Without them every function here is a no-op for one
process, so the loop reads the same either way. It stands below both stages, which
share it without importing each other.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class Dist:
    """This process's place: rank, world size, and the device it trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: object = None  # torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def from_environment() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's variables; (0, 1, 0) without them."""
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", rank))
    return rank, world, local


def setup(device_choice: str, timeout_s: float | None = None) -> Dist:
    """Pick the device (mtkit.device) and, under torchrun, join the process group.

    `timeout_s` bounds how long a collective call waits for the other ranks (torch's
    default, 10 to 30 minutes, when None): `mtkit translate` meets at a barrier after
    shards that may finish hours apart."""
    import torch

    from mtkit.device import pick_device

    rank, world, local = from_environment()
    device = pick_device(device_choice, local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        timeout = None if timeout_s is None else datetime.timedelta(seconds=timeout_s)
        torch.distributed.init_process_group(
            backend=backend, rank=rank, world_size=world, timeout=timeout
        )
        log.info("rank %d of %d joined the %s process group", rank, world, backend)
    return Dist(rank=rank, world_size=world, local_rank=local, device=device)


def teardown(dist: Dist, clean: bool = True) -> None:
    """Leave the process group. After a clean run every rank first meets the others at a
    barrier, so none destroys the group while another still has collective work in
    flight (gloo then aborts the process: "terminate called without an active
    exception"). After an error there is no barrier: the others may never come."""
    import torch

    if not (dist.enabled and torch.distributed.is_initialized()):
        return
    if clean:
        barrier(dist)
    torch.distributed.destroy_process_group()


def barrier(dist: Dist) -> None:
    """Wait until every rank gets here (a no-op for one process)."""
    if not dist.enabled:
        return
    import torch

    if dist.device.type == "cuda":
        torch.distributed.barrier(device_ids=[dist.device.index])
    else:
        torch.distributed.barrier()


def max_all(dist: Dist, values: list[float]) -> list[float]:
    """The element-wise maximum of `values` over all ranks: any rank's flag sets it on all."""
    if not dist.enabled:
        return values
    import torch

    tensor = torch.tensor(values, dtype=torch.float64, device=dist.device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return tensor.tolist()


def sum_all(dist: Dist, values: list[float]) -> list[float]:
    """The element-wise sum of `values` over all ranks."""
    if not dist.enabled:
        return values
    import torch

    tensor = torch.tensor(values, dtype=torch.float64, device=dist.device)
    torch.distributed.all_reduce(tensor)
    return tensor.tolist()


def gather_all(dist: Dist, item: object) -> list:
    """Every rank's `item` (any picklable object), in rank order, on every rank."""
    if not dist.enabled:
        return [item]
    import torch

    items = [None] * dist.world_size
    torch.distributed.all_gather_object(items, item)
    return items
