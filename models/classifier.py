"""A feature extractor g and a new linear head W: ``model(x) -> (logits, features)``."""

from __future__ import annotations

import torch
from torch import nn


class Classifier(nn.Module):
    """``features = backbone(x)`` (pooled penultimate features, shape B x d), ``logits = head(features)``.

    ``stages`` names the backbone's inner blocks (for methods that read feature maps);
    ``source_head`` the key prefix of the pretrained model's own classifier in its weights files
    (``fc.`` for a torchvision ResNet; None where the pretrained model has none, as CLIP's towers).
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, stages: dict[str, str] | None = None,
                 source_head: str | None = "fc."):
        super().__init__()
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.stages = dict(stages or {})
        self.source_head = source_head
        self.head = nn.Linear(feature_dim, num_classes)
        init_head(self.head)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(x)
        return self.head(features), features


def init_head(head: nn.Linear, std: float = 0.01) -> None:
    """The new head: W ~ N(0, std^2), bias 0 (SPEC §3)."""
    nn.init.normal_(head.weight, mean=0.0, std=std)
    nn.init.zeros_(head.bias)
