"""Several processes: disjoint shards of a dataset, and files that only rank 0 reads (on several
machines the others need not see them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import ignite.distributed as idist
import torch
from torch.utils.data import Subset

T = TypeVar("T")


def broadcast_tensors(state: dict[str, torch.Tensor] | None, device: torch.device) -> dict[str, torch.Tensor]:
    """Rank 0's dict of tensors, on ``device``, on every process (the others pass None)."""
    keys = idist.broadcast("\n".join(state) if state is not None else None, src=0, safe_mode=True).split("\n")
    return {k: idist.broadcast(state[k].to(device) if state is not None else None, src=0, safe_mode=True)
            for k in keys}


def shard_without_padding(dataset, rank: int | None = None, world: int | None = None) -> Subset:
    """This process's disjoint share of ``dataset``: indices rank, rank + world, ... (no padding,
    unlike a DistributedSampler, so reduced metrics and statistics count every sample once)."""
    rank = idist.get_rank() if rank is None else rank
    world = idist.get_world_size() if world is None else world
    return Subset(dataset, list(range(rank, len(dataset), world)))


def gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Every process's rows of ``t`` (N_r, ...), concatenated in rank order, on every process. The
    processes may hold different numbers of rows: each is padded to the largest for the collective
    and the padding dropped."""
    world = idist.get_world_size()
    if world == 1:
        return t
    counts = idist.all_gather(torch.tensor([t.shape[0]], device=t.device)).tolist()
    most = max(counts)
    padded = torch.cat([t, t.new_zeros((most - t.shape[0], *t.shape[1:]))])
    rows = idist.all_gather(padded)
    return torch.cat([rows[r * most: r * most + counts[r]] for r in range(world)])


def rank0_first(compute: Callable[[], T]) -> T:
    """``compute()`` on rank 0, then, after a barrier, on the other processes: what it writes to a
    shared disk (a cache) is built once, by rank 0, and found there by the rest. One process: just
    ``compute()``."""
    if idist.get_world_size() == 1:
        return compute()
    if idist.get_rank() != 0:
        idist.barrier()
        return compute()
    try:
        return compute()
    finally:
        idist.barrier()
