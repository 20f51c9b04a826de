"""Class-conditional feature statistics of the pretrained extractor (SPEC §4, Eq. 9-10).

One full pass of the extractor over the training split (evaluation transform, eval mode, no
gradients). Per class k: mean mu_k and population variance sigma^2_k, accumulated in float64
as sums, sums of squares and counts; in a multi-process run those three are summed across
processes (each process reads a disjoint shard, without the padding a DistributedSampler adds),
so every process ends with the same statistics. The class-agnostic mean and variance over all
samples come from the same sums.

The statistics are cached on disk under a key of everything they depend on (the extractor's
weights, the dataset root, the exact training sample list, the transform, the image size).
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ignite.distributed as idist
import torch
from ignite.engine import Engine
from ignite.handlers import ProgressBar
from torch import nn
from torch.utils.data import DataLoader, Subset

from ..engine.distributed import load_tensors_on_rank0
from ..engine.files import write_atomic

log = logging.getLogger(__name__)


@dataclass
class ClassStatistics:
    sums: torch.Tensor  # (K, d) float64
    sumsq: torch.Tensor  # (K, d) float64
    counts: torch.Tensor  # (K,) int64

    @property
    def mean(self) -> torch.Tensor:
        return self.sums / self.counts.clamp(min=1).unsqueeze(1).double()

    @property
    def var(self) -> torch.Tensor:
        n = self.counts.clamp(min=1).unsqueeze(1).double()
        return (self.sumsq / n - self.mean.pow(2)).clamp(min=0.0)

    @property
    def global_mean(self) -> torch.Tensor:
        return self.sums.sum(0) / self.counts.sum().clamp(min=1).double()

    @property
    def global_var(self) -> torch.Tensor:
        n = self.counts.sum().clamp(min=1).double()
        return (self.sumsq.sum(0) / n - self.global_mean.pow(2)).clamp(min=0.0)

    def state_dict(self) -> dict:
        return {"sums": self.sums, "sumsq": self.sumsq, "counts": self.counts}


def class_sums(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
               dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class sums (K, d) and counts (K,) of a batch, without a loop over classes and without
    a host synchronisation (``torch.bincount`` would read the labels' maximum back to the host)."""
    f = features if dtype is None else features.to(dtype)
    sums = torch.zeros(num_classes, f.shape[1], dtype=f.dtype, device=f.device).index_add_(0, labels, f)
    counts = torch.zeros(num_classes, dtype=torch.int64, device=f.device).index_add_(
        0, labels, torch.ones_like(labels, dtype=torch.int64))
    return sums, counts


@torch.no_grad()
def accumulate_statistics(extractor: nn.Module, loader, num_classes: int, device: torch.device,
                          progress: bool = False, amp: str = "off") -> ClassStatistics:
    """Sums over this process's share of ``loader``, then summed across processes. The forward pass
    runs in the run's precision (``amp``); the sums are float64."""
    from ..engine.trainer import autocast

    was_training = extractor.training
    extractor.eval()
    acc: dict[str, torch.Tensor] = {}

    def step(engine, batch):
        x, y = batch
        with autocast(device, amp):
            f = extractor(x.to(device, non_blocking=True))
        f = f.double()
        y = y.to(device, non_blocking=True)
        s, c = class_sums(f, y, num_classes)
        sq, _ = class_sums(f * f, y, num_classes)
        if not acc:
            acc.update(sums=torch.zeros_like(s), sumsq=torch.zeros_like(sq), counts=torch.zeros_like(c))
        acc["sums"] += s
        acc["sumsq"] += sq
        acc["counts"] += c

    engine = Engine(step)
    if progress and idist.get_rank() == 0:
        ProgressBar(persist=False, desc="prior statistics").attach(engine)
    try:
        engine.run(loader, max_epochs=1)
    finally:
        extractor.train(was_training)
    if not acc:  # this process had no samples
        dim = _feature_dim(extractor, loader, device)
        acc.update(sums=torch.zeros(num_classes, dim, dtype=torch.float64, device=device),
                   sumsq=torch.zeros(num_classes, dim, dtype=torch.float64, device=device),
                   counts=torch.zeros(num_classes, dtype=torch.int64, device=device))
    if idist.get_world_size() > 1:
        for k in acc:
            acc[k] = idist.all_reduce(acc[k])
    return ClassStatistics(acc["sums"], acc["sumsq"], acc["counts"])


def _feature_dim(extractor: nn.Module, loader, device) -> int:
    dataset = getattr(loader.dataset, "dataset", loader.dataset)  # a Subset's full dataset
    x, _ = dataset[0]
    with torch.no_grad():
        return int(extractor(x.unsqueeze(0).to(device)).shape[1])


def shard_without_padding(dataset, rank: int | None = None, world: int | None = None) -> Subset:
    """This process's disjoint share of ``dataset``: indices rank, rank + world, ..."""
    rank = idist.get_rank() if rank is None else rank
    world = idist.get_world_size() if world is None else world
    return Subset(dataset, list(range(rank, len(dataset), world)))


def fingerprint_module(module: nn.Module) -> str:
    """A digest of a module's parameters and buffers (names, shapes, values)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def cache_key(extractor: nn.Module, samples: list[tuple[str, int]], num_classes: int, transform, root: str,
              amp: str = "off") -> str:
    parts = {
        "amp": amp,
        "version": 1,
        "weights": fingerprint_module(extractor),
        "root": str(root),
        "samples": hashlib.sha256(json.dumps(samples).encode()).hexdigest(),
        "num_classes": num_classes,
        "transform": repr(transform),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def load_or_compute(cache_file: Path | None, compute: Callable[[], ClassStatistics],
                    device: torch.device) -> tuple[ClassStatistics, bool]:
    """Read the statistics from ``cache_file`` or compute and write them; returns (stats, hit)."""
    state, hit = load_or_compute_tensors(cache_file, lambda: compute().state_dict(), device, "prior statistics")
    return ClassStatistics(state["sums"], state["sumsq"], state["counts"]), hit


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


def save_atomic(obj, path: Path) -> None:
    """torch.save to ``path`` through a temporary file: a reader never sees half a file."""
    write_atomic(path, lambda tmp: torch.save(obj, tmp))


def class_priors(stats: ClassStatistics, sigma_floor: float, class_names: list[str] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class (mu, sigma) in float32, with the fallbacks of SPEC §4.

    A class without samples takes the class-agnostic statistics; any sigma below ``sigma_floor``
    (a class with one sample, or a constant feature) is raised to it. Both warn.
    """
    mu, var = stats.mean.clone(), stats.var.clone()
    empty = (stats.counts == 0).nonzero().flatten().tolist()
    if empty:
        names = [class_names[k] if class_names else str(k) for k in empty]
        warnings.warn(f"prior statistics: no training samples for class(es) {', '.join(names)}; "
                      "using the class-agnostic mean and variance for them", stacklevel=2)
        mu[empty] = stats.global_mean
        var[empty] = stats.global_var
    sigma = var.sqrt()
    low = sigma < sigma_floor
    if bool(low.any()):
        classes = low.any(1).nonzero().flatten().tolist()
        names = [class_names[k] if class_names else str(k) for k in classes[:10]]
        warnings.warn(f"prior statistics: sigma below {sigma_floor:g} in {int(low.sum())} entries "
                      f"(classes {', '.join(names)}{', ...' if len(classes) > 10 else ''}); clamped to {sigma_floor:g}",
                      stacklevel=2)
        sigma = sigma.clamp(min=sigma_floor)
    return mu.float(), sigma.float()


def prior_loader(dataset, batch_size: int, num_workers: int) -> DataLoader:
    # its own generator: the pass must not draw from the global RNG, or a run that reads the
    # statistics from the cache would continue with other random numbers than one that computed them
    return DataLoader(shard_without_padding(dataset), batch_size=batch_size, shuffle=False,
                      num_workers=num_workers, pin_memory=torch.cuda.is_available(),
                      generator=torch.Generator().manual_seed(0))
