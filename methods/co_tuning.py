"""Co-Tuning: also train the pretrained source head on soft source labels (SPEC §8).

The relationship p(y_s | y_t) is the average source softmax over the target training images of
class y_t (pretrained extractor and source head, eval transform; computed once). Then

    loss += lambda * mean_i ( - sum_{y_s} p(y_s | y_i) log softmax(h_s(g(x_i))) )

with h_s the source head, trained at ``source_lr_mult`` x the network's lr.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .base import Method
from .statistics import class_statistics


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


def source_softmax(extractor: nn.Module, source_head: nn.Module) -> nn.Module:
    """x -> softmax(h_s(g(x))): the model whose class means are the relationship's rows."""
    return nn.Sequential(extractor, source_head, nn.Softmax(dim=1))


@dataclass(kw_only=True)
class CoTuningParams:
    # lambda: the weight of the source head's loss on soft source labels
    lam: float = field(default=2.3, metadata={"key": "lambda", "range": ">= 0"})
    source_lr_mult: float = field(default=0.1, metadata={"range": "> 0"})  # the pretrained source head's learning rate, x lr


class CoTuning(Method):
    """Co-Tuning: ``lambda * mean_i CE(h_s(g(x_i)), p(. | y_i))`` with the pretrained source head
    h_s (trained, ``parameter_groups``) and the relationship p (K_target, K_source).

        reg = CoTuning.from_loader(model.backbone, source_head, loader, num_classes, lam=2.3)
        optimizer.add_param_group(*reg.parameter_groups(lr))     # the source head trains too
        loss = F.cross_entropy(logits, y) + reg(features, y)
    """

    Params = CoTuningParams

    def __init__(self, source_head: nn.Module, relationship: torch.Tensor, *, params: CoTuningParams | None = None,
                 **hyperparameters):
        super().__init__(params, **hyperparameters)
        self.source_head = source_head
        self.relationship = relationship

    @classmethod
    def from_loader(cls, extractor: nn.Module, source_head: nn.Module, loader, num_classes: int, *,
                    device=None, cache_dir: str | Path | None = None, amp: str = "off", **hyperparameters):
        """The relationship from one pass of the pretrained extractor and source head over
        ``loader`` (eval transform); the source head is copied, then trained."""
        stats = class_statistics(source_softmax(extractor, source_head), loader, num_classes, device, cache_dir, amp)
        head = copy.deepcopy(source_head)
        return cls(head, relationship_from_statistics(stats.sums, stats.counts).to(stats.sums.device), **hyperparameters)

    def parameter_groups(self, lr: float) -> list[dict]:
        return [{"params": list(self.source_head.parameters()), "lr": lr * self.params.source_lr_mult,
                 "name": "source_head"}]

    def terms(self, features, labels, *, logits=None, images=None) -> dict[str, torch.Tensor]:
        source_logits = self.source_head(features)
        return {"co_tuning": self.params.lam * soft_source_loss(source_logits, labels, self.relationship)}

    def state_dict(self) -> dict:
        return {"relationship": self.relationship.clone(), "source_head": self.source_head.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.relationship = state["relationship"].to(self.relationship.device)
        self.source_head.load_state_dict(state["source_head"])
