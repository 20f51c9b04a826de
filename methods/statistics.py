"""The pretrained extractor's features over a split, and the per-class statistics made from them.

Every method that needs the frozen pretrained model's view of the training split goes through
``feature_pass`` (one pass, in eval mode, without gradients): the prior statistics, the probes
of LP-FT and DELTA (``extract_features``) and Co-Tuning's relationship. In a run of several
processes each reads a disjoint shard without padding (``feature_loader``) and the sums are
added across processes.

Per class k (SPEC §4, Eq. 9-10): mean mu_k and population variance sigma^2_k, accumulated in
float64 as sums, sums of squares and counts (``class_statistics``); the class-agnostic mean
and variance over all samples come from the same sums. ``class_priors`` turns them into the
class-conditional Gaussian priors of RandReg-CP and AdaRand.

Usage::

    stats = class_statistics(model.backbone, train_loader, num_classes)   # one pass
    mu, sigma = class_priors(stats, sigma_floor=1e-4)                     # (K, d) each
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..core.cache import load_or_compute_tensors
from ..core.distributed import all_gather, all_reduce, rank, shard_without_padding, world_size
from ..core.precision import autocast, to_device


def feature_loader(dataset, batch_size: int, num_workers: int) -> DataLoader:
    """This process's shard of ``dataset`` in order (batched by ``dataset.collate`` where it has
    one: detection's images differ in size). Its own generator: the pass never draws from
    the global RNG (a run that reads a cache would otherwise continue with other random numbers
    than one that computed it)."""
    return DataLoader(shard_without_padding(dataset), batch_size=batch_size, shuffle=False,
                      num_workers=num_workers, pin_memory=torch.cuda.is_available(),
                      generator=torch.Generator().manual_seed(0), collate_fn=getattr(dataset, "collate", None))


@torch.no_grad()
def feature_pass(extractor: nn.Module, loader, device: torch.device, consume: Callable[[torch.Tensor, torch.Tensor], None],
                 amp: str = "off", progress: bool = False, desc: str = "features") -> None:
    """``consume(g(x), y)`` for every batch of ``loader``, g = ``extractor`` in eval mode (its mode
    is restored afterwards), the forward pass in the run's precision ``amp``, features in float32."""
    was_training = extractor.training
    extractor.eval()
    try:
        for x, y in tqdm(loader, desc=desc, leave=False, disable=not progress or rank() != 0):
            with autocast(device, amp):
                f = extractor(to_device(x, device))
            consume(f.float(), y.to(device, non_blocking=True))
    finally:
        extractor.train(was_training)


def extract_features(extractor: nn.Module, loader, device: torch.device, amp: str = "off"
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """All features g(x) (N, d) and labels (N,) of ``loader``, gathered from every process.

        features, labels = extract_features(model.backbone, loader, torch.device("cpu"))
    """
    feats, labels = [], []
    feature_pass(extractor, loader, device, lambda f, y: (feats.append(f), labels.append(y)), amp)
    feats, labels = torch.cat(feats), torch.cat(labels)
    if world_size() > 1:
        feats, labels = all_gather(feats), all_gather(labels)
    return feats, labels


def fingerprint_module(module: nn.Module) -> str:
    """A digest of a module's parameters and buffers (names, shapes, dtypes, values)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def features_key(extractor: nn.Module, samples: list[tuple[str, int]], num_classes: int, transform, root: str,
                 amp: str = "off") -> str:
    """A key of everything a pass's features depend on: the extractor's weights, the dataset root,
    the exact sample list, the transform, the precision, and an extractor's own input transform
    where it has one (the detector's resizing and normalisation)."""
    parts = {
        "amp": amp,
        "version": 1,
        "weights": fingerprint_module(extractor),
        "root": str(root),
        "samples": hashlib.sha256(json.dumps(samples).encode()).hexdigest(),
        "num_classes": num_classes,
        "transform": repr(transform),
    }
    if isinstance(getattr(extractor, "transform", None), nn.Module):
        parts["input_transform"] = repr(extractor.transform)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def class_sums(values: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """S_k = sum_{i: y_i = k} v_i (K, d) and n_k = #{i: y_i = k} (K,), in ``values``' dtype.

    One (K x B) @ (B x d) product with the one-hot labels: no loop over classes, no host
    synchronisation, and deterministic on a GPU (unlike an atomic ``index_add``)."""
    onehot = F.one_hot(labels, num_classes).t().to(values.dtype)  # (K, B)
    return onehot @ values, onehot.sum(1)


@dataclass
class ClassStatistics:
    """Per-class sums S_k, sums of squares Q_k and counts n_k of features (float64), and from them

        mean_k = S_k / n_k,   var_k = Q_k / n_k - mean_k^2   (population variance)
        global mean = sum_k S_k / sum_k n_k, global var likewise

        stats = ClassStatistics(sums, sumsq, counts)     # or class_statistics(extractor, loader, K)
        stats.mean, stats.var, stats.global_mean
    """

    sums: torch.Tensor  # (K, d) float64
    sumsq: torch.Tensor  # (K, d) float64
    counts: torch.Tensor  # (K,) float64

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


def accumulate_statistics(extractor: nn.Module, loader, num_classes: int, device: torch.device,
                          progress: bool = False, amp: str = "off") -> ClassStatistics:
    """Sums, sums of squares and counts over this process's share of ``loader`` (float64), then
    summed across processes."""
    acc: dict[str, torch.Tensor] = {}

    def consume(f: torch.Tensor, y: torch.Tensor) -> None:
        f = f.double()
        sums, counts = class_sums(f, y, num_classes)
        sumsq, _ = class_sums(f * f, y, num_classes)
        for k, v in (("sums", sums), ("sumsq", sumsq), ("counts", counts)):
            acc[k] = acc[k] + v if k in acc else v

    feature_pass(extractor, loader, device, consume, amp, progress, desc="prior statistics")
    if not acc:  # this process had no samples
        dim = _feature_dim(extractor, loader, device)
        acc.update(sums=torch.zeros(num_classes, dim, dtype=torch.float64, device=device),
                   sumsq=torch.zeros(num_classes, dim, dtype=torch.float64, device=device),
                   counts=torch.zeros(num_classes, dtype=torch.float64, device=device))
    for k in acc:
        acc[k] = all_reduce(acc[k])
    return ClassStatistics(acc["sums"], acc["sumsq"], acc["counts"])


@torch.no_grad()
def _feature_dim(extractor: nn.Module, loader, device) -> int:
    dataset = getattr(loader.dataset, "dataset", loader.dataset)  # a Subset's full dataset
    x, _ = dataset[0]
    was_training = extractor.training
    extractor.eval()
    try:
        return int(extractor(x.unsqueeze(0).to(device)).shape[1])
    finally:
        extractor.train(was_training)


def class_priors(stats: ClassStatistics, sigma_floor: float, class_names: list[str] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class (mu, sigma) in float32, with the fallbacks of SPEC §4:

        mu_k = mean_k,  sigma_k = max(sqrt(var_k), sigma_floor)

    A class without samples takes the class-agnostic statistics; any sigma below ``sigma_floor``
    (a class with one sample, or a constant feature) is raised to it. Both warn.

        mu, sigma = class_priors(class_statistics(model.backbone, loader, K), sigma_floor=1e-4)
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


def dataset_of(loader) -> object:
    """The dataset a loader reads (a Subset's full dataset)."""
    dataset = loader.dataset
    while hasattr(dataset, "dataset") and hasattr(dataset, "indices"):
        dataset = dataset.dataset
    return dataset


def class_statistics(extractor: nn.Module, loader, num_classes: int, device: torch.device | str | None = None,
                     cache_dir: str | Path | None = None, amp: str = "off", progress: bool = False) -> ClassStatistics:
    """Per-class sums, sums of squares and counts of g(x) = ``extractor(x)`` over ``loader``
    (float64; summed over the processes of an initialised process group).

    ``device``: where the pass runs (default: the extractor's parameters' device). ``cache_dir``:
    read from, or written to, ``cache_dir/priors/<key>.pt``, the key covering the extractor's
    weights, the loader's samples and transform, ``num_classes`` and ``amp`` (the engine's cache,
    which later runs and seeds share). Caching needs a dataset that lists its samples
    (``dataset.samples``, as torchvision's ``ImageFolder`` and this project's datasets do).

        stats = class_statistics(model.backbone, DataLoader(train_set, batch_size=128), num_classes=10)
        stats.mean, stats.var      # (K, d) float64
    """
    if device is None:
        device = next(extractor.parameters()).device
    device = torch.device(device)

    def compute() -> dict[str, torch.Tensor]:
        return accumulate_statistics(extractor, loader, num_classes, device, progress, amp).state_dict()

    if cache_dir is None:
        return ClassStatistics(**compute())
    dataset = dataset_of(loader)
    samples = getattr(dataset, "samples", None)
    if samples is None:
        raise ValueError(f"class_statistics: cache_dir needs a dataset that lists its samples (dataset.samples); "
                         f"{type(dataset).__name__} has none: leave cache_dir out")
    key = features_key(extractor, [list(map(str, s)) for s in samples], num_classes, getattr(dataset, "transform", None),
                       "", amp)
    k = num_classes
    expected = {"sums": ((k, None), torch.float64), "sumsq": ((k, None), torch.float64), "counts": ((k,), None)}
    state, _ = load_or_compute_tensors(Path(cache_dir).expanduser() / "priors" / f"{key}.pt", compute, device,
                                       "prior statistics", expected)
    return ClassStatistics(state["sums"], state["sumsq"], state["counts"])
