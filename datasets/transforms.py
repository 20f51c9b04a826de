"""The paper's transforms: train RandomResizedCrop + flip, test Resize + CenterCrop, at the
sizes, normalisation and interpolation of ``DataConfig`` (its unset fields resolved first)."""

from __future__ import annotations

from torchvision import transforms as T

from ..core.config import DataConfig


def train_transform(cfg: DataConfig) -> T.Compose:
    ops = [T.RandomResizedCrop(cfg.image_size, scale=tuple(cfg.crop_scale), interpolation=T.InterpolationMode(cfg.interpolation))]
    if cfg.hflip:
        ops.append(T.RandomHorizontalFlip())
    ops += [T.ToTensor(), T.Normalize(cfg.mean, cfg.std)]
    return T.Compose(ops)


def eval_transform(cfg: DataConfig) -> T.Compose:
    return T.Compose([T.Resize(cfg.resize_size, interpolation=T.InterpolationMode(cfg.interpolation)),
                      T.CenterCrop(cfg.image_size), T.ToTensor(), T.Normalize(cfg.mean, cfg.std)])
