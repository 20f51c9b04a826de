"""The preprocessing a backbone was pretrained with: input size, resize, mean/std, interpolation.

From timm's pretrained config for ``timm/<name>`` (CLIP's own normalisation and bicubic
interpolation for the CLIP towers; resize = image size / crop_pct), from torchvision's weights
for ``pretrained: imagenet``; otherwise the standard ImageNet preprocessing. Read without
building the model or downloading anything.
"""

from __future__ import annotations

import math

from ..core.config import STANDARD_PREPROCESSING, ModelConfig
from .torchvision_models import imagenet_weights, torchvision_names


def backbone_preprocessing(cfg: ModelConfig) -> dict:
    if cfg.arch.startswith("timm/"):
        from timm.models import get_pretrained_cfg  # loaded for timm models only

        pcfg = get_pretrained_cfg(cfg.arch[len("timm/"):])
        if pcfg is None:
            return dict(STANDARD_PREPROCESSING)
        size = int(pcfg.input_size[-1])
        return {"image_size": size, "resize_size": int(math.floor(size / pcfg.crop_pct)), "mean": list(pcfg.mean),
                "std": list(pcfg.std), "interpolation": pcfg.interpolation if pcfg.interpolation in
                ("bilinear", "bicubic", "nearest") else "bicubic"}
    if cfg.pretrained == "imagenet" and cfg.arch in torchvision_names():
        t = imagenet_weights(cfg.arch).transforms()
        return {"image_size": int(t.crop_size[0]), "resize_size": int(t.resize_size[0]), "mean": list(t.mean),
                "std": list(t.std), "interpolation": t.interpolation.value}
    return dict(STANDARD_PREPROCESSING)
