"""DELTA: keep the feature maps of the last block of each stage near the pretrained model's (SPEC §8).

Per sample and channel c of each recorded stage, d_c = ||FM_c(x) - FM^s_c(x)||_2 over the spatial
positions, against a frozen pretrained copy fed the same batch:

    loss += lambda * mean_batch sum_stages sum_c a_c d_c^2 / (H W)  +  lambda_head / 2 * ||head||^2

Channel weights: ``uniform`` (a_c = 1; the uniform-weight variant) — the accuracy-drop weights of
the DELTA paper are not implemented here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from ignite.engine import Engine

from ..engine.trainer import TrainEvents
from .frozen import FeatureMaps, frozen_copy, module_mib
from .l2sp import sum_sq
from .registry import Regularizer, register


def delta_distance(fm: torch.Tensor, fm_s: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """mean over the batch of sum_c a_c ||fm_c - fm_s_c||^2 / (H W) for maps of shape (B, C, H, W)."""
    b, c = fm.shape[:2]
    d2 = (fm.float() - fm_s.float()).pow(2).reshape(b, c, -1).mean(2)  # ||.||^2 / (H W)
    if weights is not None:
        d2 = d2 * weights
    return d2.sum(1).mean()


@dataclass(kw_only=True)
class DeltaParams:
    lam: float = field(default=0.01, metadata={"key": "lambda"})
    lambda_head: float = 0.01
    channel_weights: Literal["uniform"] = "uniform"


@register("delta")
class Delta(Regularizer):
    Params = DeltaParams

    def __init__(self, params: DeltaParams, ctx):
        super().__init__(params, ctx)
        stages = ctx.net.stages
        self.maps = FeatureMaps(ctx.net.backbone, stages, "delta", only_training=True)
        self.frozen = frozen_copy(ctx.net.backbone)
        self.frozen_maps = FeatureMaps(self.frozen, stages, "delta")
        self.frozen_mib = module_mib(self.frozen)

    def attach(self, trainer: Engine) -> None:
        trainer.add_event_handler(TrainEvents.COMPUTE_LOSS, self.add_loss)

    def add_loss(self, engine: Engine) -> None:
        step = engine.state.step
        with torch.no_grad():
            self.frozen(step.x)
        fm_term = torch.stack([delta_distance(self.maps.outputs[k], self.frozen_maps.outputs[k])
                               for k in self.maps.outputs]).sum()
        self.maps.outputs.clear()  # do not hold the maps beyond the step
        self.frozen_maps.outputs.clear()
        head = sum_sq(list(self.ctx.net.head.parameters()))
        step.losses["delta"] = self.params.lam * fm_term + 0.5 * self.params.lambda_head * head
        step.logs["delta_feature_maps"] = fm_term.detach()

    def report(self) -> dict:
        return {"frozen_model_mib": self.frozen_mib, "channel_weights": self.params.channel_weights}

    def close(self) -> None:
        self.maps.remove()
        self.frozen_maps.remove()
        self.frozen = None
