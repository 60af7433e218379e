"""DistributedDataParallel setup for runs launched with `torchrun` (WORLD_SIZE > 1).

A plain `python`/`edgelstm` run is one process and never touches torch.distributed.
"""

from __future__ import annotations

import atexit
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    world_size: int
    rank: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_main_process() -> bool:
    """True in a single-process run and on rank 0 under torchrun: the one that writes files."""
    return int(os.environ.get("RANK", "0")) == 0


def setup_distributed() -> DistContext:
    """Joins the torchrun process group (NCCL on CUDA, else Gloo) once per process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if world_size <= 1:
        return DistContext(1, 0, 0, torch.device("cuda" if cuda else "cpu"))
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if cuda else "gloo"
        dist.init_process_group(backend=backend)
        atexit.register(_shutdown)
        if rank == 0:
            log.info("distributed training: %d processes, backend %s", world_size, backend)
    return DistContext(world_size, rank, local_rank, device)


def _shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sums a small tensor over all ranks (identity in a single process)."""
    if ctx.distributed:
        values = values.to(ctx.device)
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values.cpu()


def broadcast_from_main(obj: object, ctx: DistContext) -> object:
    """Rank 0's `obj` on every rank (pickled through torch.distributed; identity in a single
    process), so the other ranks need no file rank 0 reads (several nodes, no shared disk)."""
    if not ctx.distributed:
        return obj
    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0, device=ctx.device if ctx.device.type == "cuda" else None)
    return box[0]


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True on every rank when `flag` is true on at least one (the flag itself in one process)."""
    if not ctx.distributed:
        return flag
    return bool(all_reduce_sum(torch.tensor([float(flag)]), ctx).item() > 0)
