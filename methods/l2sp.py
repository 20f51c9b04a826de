"""L2-SP: keep the backbone near its pretrained starting point (SPEC §8).

    loss += lambda_b / 2 * sum_w ||w - w_s||^2 over the backbone's parameters
          + lambda_h / 2 * ||head||^2 over the new head's parameters (weight and bias)

Use it with no weight decay (the L2 terms replace it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .base import Method


def sum_sq(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([t.float().pow(2).sum() for t in tensors]).sum()


def l2sp_terms(params: list[torch.Tensor], start: list[torch.Tensor], head: list[torch.Tensor]):
    """(sum_w ||w - w_s||^2 over the backbone, sum ||head||^2)."""
    return sum_sq([w - w_s for w, w_s in zip(params, start, strict=True)]), sum_sq(head)


@dataclass(kw_only=True)
class L2SPParams:
    # the weight of ||w - w_0||^2 over the backbone (w_0 pretrained)
    lambda_backbone: float = field(default=0.01, metadata={"range": ">= 0"})
    lambda_head: float = field(default=0.01, metadata={"range": ">= 0"})  # the weight of ||w||^2 over the new head


class L2SP(Method):
    """L2-SP: ``lambda_b / 2 ||w - w_s||^2`` over the backbone's trainable parameters (w_s: their
    values when the object is made, i.e. the pretrained ones) ``+ lambda_h / 2 ||head||^2``.

        reg = L2SP(model.backbone, model.head, lambda_backbone=0.01, lambda_head=0.01)
        loss = F.cross_entropy(logits, y) + reg(features, y)
    """

    Params = L2SPParams

    def __init__(self, backbone: nn.Module, head: nn.Module, *, params: L2SPParams | None = None, **hyperparameters):
        super().__init__(params, **hyperparameters)
        self.params_list = [p for p in backbone.parameters() if p.requires_grad]
        self.start = [p.detach().clone() for p in self.params_list]
        self.head = list(head.parameters())

    def terms(self, features, labels, *, logits=None, images=None) -> dict[str, torch.Tensor]:
        backbone, head = l2sp_terms(self.params_list, self.start, self.head)
        return {"l2sp": 0.5 * self.params.lambda_backbone * backbone + 0.5 * self.params.lambda_head * head}

    def to(self, device) -> L2SP:
        self.start = [t.to(device) for t in self.start]
        return self
