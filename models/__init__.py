"""Backbones that return ``(logits, features)``: torchvision models by name, any timm model as
``timm/<name>``, and the demo's small CNN."""

from __future__ import annotations

from ..core.config import ModelConfig
from ..core.errors import UserError
from .classifier import Classifier, accept_grey, init_head
from .preprocessing import backbone_preprocessing
from .pretrained import PretrainedInfo, load_pretrained
from .small_cnn import create_small_cnn
from .timm_models import create_timm
from .torchvision_models import create_torchvision, torchvision_names

__all__ = ["Classifier", "PretrainedInfo", "backbone_preprocessing", "create_model", "init_head", "load_pretrained",
           "unknown_arch", "detection_arch_problem"]


def unknown_arch(arch: str) -> str | None:
    """Why ``model.arch`` names no model this package can build, or None (checked when the config
    loads, without building anything)."""
    if arch == "small_cnn":
        return None
    if arch.startswith("timm/"):
        import timm  # loaded for timm models only (a second or more of start-up)

        name = arch[len("timm/"):]
        return None if timm.is_model(name) else f"timm {timm.__version__} has no model {name!r}"
    if arch in torchvision_names():
        return None
    return f"{arch!r} is neither a torchvision classification model, timm/<name>, nor small_cnn"


def detection_arch_problem(arch: str) -> str | None:
    """Why ``model.arch`` cannot be a detector's backbone (``task: detection``), or None."""
    if arch == "small_cnn" or (arch.startswith(("resnet", "resnext", "wide_resnet")) and arch in torchvision_names()):
        return None
    return f"{arch!r}: the detector takes a torchvision ResNet (resnet18 ... resnet152, resnext, wide_resnet) or small_cnn"


def create_model(cfg: ModelConfig, num_classes: int, in_channels: int = 3,
                 image_size: int = 224) -> tuple[Classifier, PretrainedInfo]:
    """Build the model with its pretrained backbone and a new head N(0, 0.01^2), bias 0."""
    imagenet = None
    if cfg.arch == "small_cnn":
        model = create_small_cnn(num_classes, in_channels=in_channels, width=cfg.width)
    elif cfg.arch.startswith("timm/"):
        model = create_timm(cfg.arch[len("timm/"):], num_classes, image_size, from_hub=cfg.pretrained == "hub")
        if cfg.pretrained == "hub":  # timm loaded them
            if in_channels == 1:
                accept_grey(model)
            return model, PretrainedInfo(source="hub")
    else:
        model, imagenet = create_torchvision(cfg.arch, num_classes, image_size)
    if in_channels == 1 and cfg.arch != "small_cnn":
        accept_grey(model)
    if cfg.pretrained == "hub":
        raise UserError(f"model.pretrained: hub is timm's weights, for model.arch timm/<name> (not {cfg.arch})")
    if cfg.pretrained == "imagenet" and cfg.arch.startswith("timm/"):
        raise UserError("model.pretrained: imagenet is torchvision's weights; for a timm model use hub or a file")
    return model, load_pretrained(model, cfg.pretrained, imagenet, strict=cfg.pretrained_strict)
