"""Batch Spectral Shrinkage: penalise the k smallest singular values of the batch features (SPEC §8).

    loss += lambda * sum_{i=1..k} sigma_{-i}^2,  sigma the singular values of the B x d feature matrix
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import Method


def smallest_singular_values_sq(features: torch.Tensor, k: int) -> torch.Tensor:
    """Sum of the squares of the k smallest singular values of ``features`` (B x d)."""
    s = torch.linalg.svdvals(features.float())  # descending, min(B, d) values
    return s[-k:].pow(2).sum()


@dataclass(kw_only=True)
class BSSParams:
    # lambda: the weight of the penalty on the k smallest singular values
    lam: float = field(default=0.001, metadata={"key": "lambda", "range": ">= 0"})
    # how many of the smallest singular values of the batch's features are penalised
    k: int = field(default=1, metadata={"range": ">= 1"})


class BSS(Method):
    """Batch Spectral Shrinkage: ``lambda * sum_{i=1..k} sigma_{-i}(G)^2`` for the batch's features G.

        reg = BSS(lam=0.001, k=1)
        loss = F.cross_entropy(logits, y) + reg(features, y)
    """

    Params = BSSParams

    def terms(self, features, labels, *, logits=None, images=None) -> dict[str, torch.Tensor]:
        return {"bss": self.params.lam * smallest_singular_values_sq(features, self.params.k)}
