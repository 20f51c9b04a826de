"""L2-SP: keep the backbone near its pretrained starting point (SPEC §8).

    loss += lambda_b / 2 * sum_w ||w - w_s||^2 over the backbone's parameters
          + lambda_h / 2 * ||head||^2 over the new head's parameters (weight and bias)

Use it with ``optim.weight_decay: 0`` (the L2 terms replace weight decay).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from ignite.engine import Engine

from ..core.step import TrainEvents
from .frozen import tensors_mib
from .registry import Regularizer, register


def sum_sq(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([t.float().pow(2).sum() for t in tensors]).sum()


def l2sp_terms(params: list[torch.Tensor], start: list[torch.Tensor], head: list[torch.Tensor]):
    """(sum_w ||w - w_s||^2 over the backbone, sum ||head||^2)."""
    return sum_sq([w - w_s for w, w_s in zip(params, start, strict=True)]), sum_sq(head)


@dataclass(kw_only=True)
class L2SPParams:
    lambda_backbone: float = field(default=0.01, metadata={"range": ">= 0"})
    lambda_head: float = field(default=0.01, metadata={"range": ">= 0"})


@register("l2sp")
class L2SP(Regularizer):
    Params = L2SPParams
    tasks = ("classification", "detection")

    def __init__(self, params: L2SPParams, ctx):
        super().__init__(params, ctx)
        self.params_list = [p for p in ctx.net.backbone.parameters() if p.requires_grad]
        # the pretrained starting point (rebuilt from the same weights when a run is resumed)
        self.start = [p.detach().clone() for p in self.params_list]
        self.head = list(ctx.net.head.parameters())
        if ctx.cfg.optim.weight_decay:
            warnings.warn(f"l2sp: optim.weight_decay is {ctx.cfg.optim.weight_decay}; L2-SP is meant with 0",
                          stacklevel=2)

    def attach(self, trainer: Engine) -> None:
        trainer.add_event_handler(TrainEvents.COMPUTE_LOSS, self.add_loss)

    def add_loss(self, engine: Engine) -> None:
        step = engine.state.step
        backbone, head = l2sp_terms(self.params_list, self.start, self.head)
        step.losses["l2sp"] = 0.5 * self.params.lambda_backbone * backbone + 0.5 * self.params.lambda_head * head

    def report(self) -> dict:
        return {"start_weights_mib": tensors_mib(*self.start)}

    def close(self) -> None:
        self.start = []
