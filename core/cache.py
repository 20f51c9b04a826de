"""Tensors computed once and kept on disk under a key, read by rank 0 and shared with the others."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import ignite.distributed as idist
import torch

from .distributed import load_tensors_on_rank0
from .files import save_atomic

log = logging.getLogger(__name__)


def load_or_compute_tensors(cache_file: Path | None, compute: Callable[[], dict[str, torch.Tensor]],
                            device: torch.device, what: str) -> tuple[dict[str, torch.Tensor], bool]:
    """A dict of tensors read from ``cache_file``, or computed (by every process) and written there;
    returns (tensors, hit). Only rank 0 looks at the file, reads it and writes it: on a hit the
    other processes receive its tensors, so on several machines ``cache_file`` need only exist on
    rank 0's."""
    world, rank0 = idist.get_world_size(), idist.get_rank() == 0
    hit = rank0 and cache_file is not None and cache_file.is_file()
    if world > 1:
        hit = bool(idist.broadcast(torch.tensor(int(hit), device=device), src=0).item())
    if hit:
        state = load_tensors_on_rank0(cache_file, device)
        if rank0:
            log.info("%s read from cache %s", what, cache_file)
        return state, True
    state = compute()
    if cache_file is not None and rank0:
        save_atomic({k: v.cpu() for k, v in state.items()}, cache_file)
        log.info("%s cached at %s", what, cache_file)
    return state, False
