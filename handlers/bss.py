"""Batch Spectral Shrinkage: penalise the k smallest singular values of the batch features (SPEC §8).

    loss += lambda * sum_{i=1..k} sigma_{-i}^2,  sigma the singular values of the B x d feature matrix
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from ignite.engine import Engine

from ..core.step import TrainEvents
from .registry import Regularizer, register


def smallest_singular_values_sq(features: torch.Tensor, k: int) -> torch.Tensor:
    """Sum of the squares of the k smallest singular values of ``features`` (B x d)."""
    s = torch.linalg.svdvals(features.float())  # descending, min(B, d) values
    return s[-k:].pow(2).sum()


@dataclass(kw_only=True)
class BSSParams:
    lam: float = field(default=0.001, metadata={"key": "lambda", "range": ">= 0"})
    k: int = field(default=1, metadata={"range": ">= 1"})


@register("bss")
class BSS(Regularizer):
    tasks = ("classification", "detection")
    Params = BSSParams

    def attach(self, trainer: Engine) -> None:
        trainer.add_event_handler(TrainEvents.COMPUTE_LOSS, self.add_loss)

    def add_loss(self, engine: Engine) -> None:
        step = engine.state.step
        step.losses["bss"] = self.params.lam * smallest_singular_values_sq(step.features, self.params.k)
