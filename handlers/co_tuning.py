"""Co-Tuning: also train the pretrained source head on soft source labels (SPEC §8).

The relationship p(y_s | y_t) is the average source softmax over the target training images of
class y_t (pretrained extractor and source head, eval transform; computed once, cached). Then

    loss += lambda * mean_i ( - sum_{y_s} p(y_s | y_i) log softmax(h_s(g(x_i))) )

with h_s the source head, trained at ``source_lr_mult`` x the network's lr.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from ignite.engine import Engine
from torch import nn

from ..core.errors import UserError
from ..core.step import TrainEvents
from .frozen import average_gradients_across_processes, tensors_mib
from .registry import Regularizer, register


def relationship_from_statistics(sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Rows p(. | y_t) = mean source softmax of class y_t; a class without images gets a uniform row."""
    rel = sums / counts.clamp(min=1).unsqueeze(1).to(sums.dtype)
    empty = counts == 0
    if bool(empty.any()):
        warnings.warn(f"co_tuning: no training images for target class(es) {empty.nonzero().flatten().tolist()}; "
                      "their source-label distribution is uniform", stacklevel=2)
        rel[empty] = 1.0 / rel.shape[1]
    return rel.float()


def soft_source_loss(source_logits: torch.Tensor, labels: torch.Tensor, relationship: torch.Tensor) -> torch.Tensor:
    return -(relationship[labels] * F.log_softmax(source_logits.float(), dim=1)).sum(1).mean()


@dataclass(kw_only=True)
class CoTuningParams:
    lam: float = field(default=2.3, metadata={"key": "lambda", "range": ">= 0"})
    source_lr_mult: float = field(default=0.1, metadata={"range": "> 0"})


@register("co_tuning")
class CoTuning(Regularizer):
    Params = CoTuningParams

    def __init__(self, params: CoTuningParams, ctx):
        super().__init__(params, ctx)
        head = ctx.pretrained.source_head
        if head is None:
            raise UserError("method.name: co_tuning needs the pretrained model's source classifier, and "
                            f"model.pretrained ({ctx.cfg.model.pretrained}) provides none")
        self.source_head = nn.Linear(head["weight"].shape[1], head["weight"].shape[0]).to(ctx.device)
        self.source_head.load_state_dict(head)
        average_gradients_across_processes(self.source_head)
        self.relationship = torch.zeros(ctx.data.num_classes, head["weight"].shape[0], device=ctx.device)

    def parameter_groups(self) -> list[dict]:
        return [{"params": list(self.source_head.parameters()), "lr": self.ctx.cfg.optim.lr * self.params.source_lr_mult,
                 "name": "source_head"}]

    def attach(self, trainer: Engine) -> None:
        trainer.add_event_handler(TrainEvents.COMPUTE_LOSS, self.add_loss)

    def prepare(self) -> None:
        """The relationship p(y_s | y_t) from the pretrained model."""
        # the pretrained extractor and source head (no copies: the pass runs without gradients)
        source_model = nn.Sequential(self.ctx.net.backbone, self.source_head, nn.Softmax(dim=1))
        stats = self.ctx.class_statistics(source_model)
        self.relationship = relationship_from_statistics(stats.sums, stats.counts).to(self.ctx.device)

    def add_loss(self, engine: Engine) -> None:
        step = engine.state.step
        source_logits = self.source_head(step.features)
        step.losses["co_tuning"] = self.params.lam * soft_source_loss(source_logits, step.y, self.relationship)

    def state_dict(self) -> dict:
        return {"relationship": self.relationship.clone(), "source_head": self.source_head.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.relationship = state["relationship"].to(self.ctx.device)
        self.source_head.load_state_dict(state["source_head"])

    def report(self) -> dict:
        return {"relationship_mib": tensors_mib(self.relationship),
                "source_head_mib": tensors_mib(*self.source_head.parameters())}
