"""A feature extractor g and a new linear head W: ``model(x) -> (logits, features)``."""

from __future__ import annotations

import torch
from torch import nn

from ..core.errors import UserError


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


def repeat_grey_channel(module: nn.Module, args: tuple):
    """A forward pre-hook: a three-channel backbone given a grey image (B x 1 x H x W) sees the grey
    channel three times, as a grey photograph is to an RGB-pretrained network. On the backbone
    itself, so that every pass through it (training, the prior pass, frozen copies) does the same."""
    x = args[0]
    if x.dim() == 4 and x.shape[1] == 1:
        return (x.expand(-1, 3, -1, -1), *args[1:])
    return None


def accept_grey(model: Classifier) -> None:
    model.backbone.register_forward_pre_hook(repeat_grey_channel)


def feature_width(backbone: nn.Module, image_size: int, arch: str) -> int:
    """The width d of the backbone's features, read from one image of the run's size; a backbone
    that cannot take that size stops with one line naming it."""
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            return int(backbone(torch.zeros(1, 3, image_size, image_size)).shape[1])
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else e.__class__.__name__
        raise UserError(f"data.image_size: a {image_size} x {image_size} image does not pass through model.arch {arch} "
                        f"({first}); a larger data.image_size (and data.resize_size) is needed") from None
    finally:
        backbone.train(was_training)


def init_head(head: nn.Linear, std: float = 0.01) -> None:
    """The new head: W ~ N(0, std^2), bias 0 (SPEC §3)."""
    nn.init.normal_(head.weight, mean=0.0, std=std)
    nn.init.zeros_(head.bias)
