"""Several processes: disjoint shards of a dataset, and files that only rank 0 reads (on several
machines the others need not see them).

The collectives are ``torch.distributed``'s, so that the methods (``adarand.methods``) work in any
training loop, with or without Ignite: one process when no process group is initialised.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist
from torch.utils.data import Subset

T = TypeVar("T")


def world_size() -> int:
    """The processes of the default group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def all_reduce(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over the processes, in place (``t`` is returned)."""
    if world_size() > 1:
        dist.all_reduce(t)
    return t


def all_gather(t: torch.Tensor) -> torch.Tensor:
    """Every process's ``t`` (all of one shape), concatenated along dim 0 in rank order."""
    if world_size() == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def broadcast(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Process ``src``'s ``t`` on every process, in place (``t`` is returned)."""
    if world_size() > 1:
        dist.broadcast(t, src)
    return t


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def broadcast_tensors(state: dict[str, torch.Tensor] | None, device: torch.device) -> dict[str, torch.Tensor]:
    """Rank 0's dict of tensors, on ``device``, on every process (the others pass None)."""
    layout = [[(k, tuple(v.shape), v.dtype) for k, v in state.items()] if state is not None else None]
    dist.broadcast_object_list(layout, src=0, device=device if device.type == "cuda" else None)
    out = {}
    for k, shape, dtype in layout[0]:
        t = state[k].to(device).contiguous() if state is not None else torch.empty(shape, dtype=dtype, device=device)
        out[k] = broadcast(t, src=0)
    return out


def shard_without_padding(dataset, index: int | None = None, world: int | None = None) -> Subset:
    """This process's disjoint share of ``dataset``: indices rank, rank + world, ... (no padding,
    unlike a DistributedSampler, so reduced metrics and statistics count every sample once)."""
    index = rank() if index is None else index
    world = world_size() if world is None else world
    return Subset(dataset, list(range(index, len(dataset), world)))


def gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Every process's rows of ``t`` (N_r, ...), concatenated in rank order, on every process. The
    processes may hold different numbers of rows: each is padded to the largest for the collective
    and the padding dropped."""
    world = world_size()
    if world == 1:
        return t
    counts = all_gather(torch.tensor([t.shape[0]], device=t.device)).tolist()
    most = max(counts)
    padded = torch.cat([t, t.new_zeros((most - t.shape[0], *t.shape[1:]))])
    rows = all_gather(padded)
    return torch.cat([rows[r * most: r * most + counts[r]] for r in range(world)])


def rank0_first(compute: Callable[[], T]) -> T:
    """``compute()`` on rank 0, then, after a barrier, on the other processes: what it writes to a
    shared disk (a cache) is built once, by rank 0, and found there by the rest. One process: just
    ``compute()``."""
    if world_size() == 1:
        return compute()
    if rank() != 0:
        barrier()
        return compute()
    try:
        return compute()
    finally:
        barrier()
