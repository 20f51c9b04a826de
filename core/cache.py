"""Tensors computed once and kept on disk under a key, read by rank 0 and shared with the others.

A cache file holds ``{"key": <its own name>, "tensors": {...}}``. Before use it is checked: it
must load, carry its key, and hold the tensors expected, with their shapes and dtypes. A file
that fails (truncated, garbage, another format, other shapes) is reported with a warning and
recomputed, never used.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from .distributed import broadcast, broadcast_tensors, rank, world_size
from .errors import error_summary
from .files import remove_temp_files, save_atomic

log = logging.getLogger(__name__)

# name -> (shape with None for any size, dtype or None)
Expected = dict[str, tuple[tuple[int | None, ...], torch.dtype | None]]


STALE_TEMP_S = 3600.0  # a cache's temporary file unmodified this long was left by a killed run


def write_cache(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    remove_temp_files(path.parent, path.name, min_age_s=STALE_TEMP_S)
    save_atomic({"key": path.stem, "tensors": {k: v.cpu() for k, v in tensors.items()}}, path)


def read_cache(path: Path, expected: Expected | None = None) -> tuple[dict[str, torch.Tensor] | None, str | None]:
    """(tensors, None), or (None, what is wrong with the file)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable file is recomputed: say why, then compute it anew
        return None, f"unreadable ({error_summary(e)})"
    if not isinstance(state, dict) or state.get("key") != path.stem or not isinstance(state.get("tensors"), dict):
        return None, "not a cache file of this version (no matching key inside)"
    tensors = state["tensors"]
    if not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        return None, "holds something other than tensors"
    for name, (shape, dtype) in (expected or {}).items():
        t = tensors.get(name)
        if t is None:
            return None, f"has no {name}"
        if len(t.shape) != len(shape) or any(s is not None and s != n for s, n in zip(shape, t.shape, strict=True)):
            return None, f"{name} has shape {tuple(t.shape)}, expected {tuple('*' if s is None else s for s in shape)}"
        if dtype is not None and t.dtype != dtype:
            return None, f"{name} is {t.dtype}, expected {dtype}"
    return tensors, None


def load_or_compute_tensors(cache_file: Path | None, compute: Callable[[], dict[str, torch.Tensor]],
                            device: torch.device, what: str, expected: Expected | None = None
                            ) -> tuple[dict[str, torch.Tensor], bool]:
    """A dict of tensors read from ``cache_file``, or computed (by every process) and written there;
    returns (tensors, hit). Only rank 0 looks at the file, reads it and writes it: on a hit the
    other processes receive its tensors, so on several machines ``cache_file`` need only exist on
    rank 0's."""
    world, rank0 = world_size(), rank() == 0
    state = None
    if rank0 and cache_file is not None and cache_file.is_file():
        state, problem = read_cache(cache_file, expected)
        if problem is not None:
            warnings.warn(f"{what}: the cache file {cache_file} is {problem}; recomputing it", stacklevel=2)
    hit = state is not None
    if world > 1:
        hit = bool(broadcast(torch.tensor(int(hit), device=device), src=0).item())
    if hit:
        state = broadcast_tensors(state, device) if world > 1 else {k: v.to(device) for k, v in state.items()}
        if rank0:
            log.info("%s read from cache %s", what, cache_file)
        return state, True
    state = compute()
    if cache_file is not None and rank0:
        write_cache(cache_file, state)
        log.info("%s cached at %s", what, cache_file)
    return state, False
