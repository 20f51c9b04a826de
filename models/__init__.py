"""Backbones that return ``(logits, features)``."""

from __future__ import annotations

from ..core.config import ModelConfig
from .classifier import Classifier, init_head
from .pretrained import PretrainedInfo, load_pretrained
from .resnet import ARCHS, create_resnet
from .small_cnn import create_small_cnn

__all__ = ["Classifier", "PretrainedInfo", "create_model", "init_head", "load_pretrained"]


def create_model(cfg: ModelConfig, num_classes: int, in_channels: int = 3) -> tuple[Classifier, PretrainedInfo]:
    """Build the model with its pretrained backbone and a new head N(0, 0.01^2), bias 0."""
    if cfg.arch in ARCHS:
        model = create_resnet(cfg.arch, num_classes)
        weights = ARCHS[cfg.arch][1]
    else:
        model = create_small_cnn(num_classes, in_channels=in_channels, width=cfg.width)
        weights = None
    info = load_pretrained(model, cfg.pretrained, weights)
    return model, info
