"""Per-class feature statistics (SPEC §4, Eq. 9-10) and the class-conditional priors made from them.

Per class k: mean mu_k and population variance sigma^2_k, accumulated in float64 as sums, sums
of squares and counts over one pass of the extractor (``features.feature_pass``); in a
multi-process run those three are summed across processes, so every process ends with the same
statistics. The class-agnostic mean and variance over all samples come from the same sums.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import ignite.distributed as idist
import torch
import torch.nn.functional as F
from torch import nn

from .features import feature_pass


def class_sums(values: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """S_k = sum_{i: y_i = k} v_i (K, d) and n_k = #{i: y_i = k} (K,), in ``values``' dtype.

    One (K x B) @ (B x d) product with the one-hot labels: no loop over classes, no host
    synchronisation, and deterministic on a GPU (unlike an atomic ``index_add``)."""
    onehot = F.one_hot(labels, num_classes).t().to(values.dtype)  # (K, B)
    return onehot @ values, onehot.sum(1)


@dataclass
class ClassStatistics:
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
    if idist.get_world_size() > 1:
        for k in acc:
            acc[k] = idist.all_reduce(acc[k])
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
