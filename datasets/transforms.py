"""The paper's transforms: train RandomResizedCrop + flip, test Resize + CenterCrop, at the
sizes, normalisation and interpolation of ``DataConfig`` (its unset fields resolved first).

With ``data.decoder: torchcodec`` or ``torchvision`` they are transforms v2 on uint8 tensors (resizing with
antialiasing, as PIL does; the result differs from PIL's by rounding, at most a few levels of 255
in a pixel); with ``decoder: pil`` torchvision's transforms on PIL images.
"""

from __future__ import annotations

import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import v2

from ..core.config import DataConfig
from .decode import read_image


def on_pil_images(cfg: DataConfig) -> bool:
    """Whether the images reach the transforms as PIL images (``decoder: pil``, also from the resized
    cache, whose copies go back to PIL images)."""
    return cfg.decoder == "pil"


def train_transform(cfg: DataConfig):
    mode = T.InterpolationMode(cfg.interpolation)
    if on_pil_images(cfg):
        ops = [T.RandomResizedCrop(cfg.image_size, scale=tuple(cfg.crop_scale), interpolation=mode)]
        if cfg.hflip:
            ops.append(T.RandomHorizontalFlip())
        return T.Compose(ops + [T.ToTensor(), T.Normalize(cfg.mean, cfg.std)])
    ops = [v2.RandomResizedCrop(cfg.image_size, scale=tuple(cfg.crop_scale), interpolation=mode, antialias=True)]
    if cfg.hflip:
        ops.append(v2.RandomHorizontalFlip())
    return v2.Compose(ops + [v2.ToDtype(torch.float32, scale=True), v2.Normalize(cfg.mean, cfg.std)])


def eval_transform(cfg: DataConfig):
    mode = T.InterpolationMode(cfg.interpolation)
    if on_pil_images(cfg):
        return T.Compose([T.Resize(cfg.resize_size, interpolation=mode), T.CenterCrop(cfg.image_size), T.ToTensor(),
                          T.Normalize(cfg.mean, cfg.std)])
    return v2.Compose([v2.Resize(cfg.resize_size, interpolation=mode, antialias=True), v2.CenterCrop(cfg.image_size),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(cfg.mean, cfg.std)])


class InferenceTransform:
    """A trained model's preprocessing for one image: a file path, a PIL image or a uint8 tensor
    (C x H x W) in, the normalised float tensor the model takes out. A path is decoded as the
    run's data was (``data.decoder``), a PIL image converted to grey or RGB as the run's were;
    then the evaluation transform (resize, centre crop, scale to [0, 1], normalise)."""

    def __init__(self, cfg: DataConfig):
        self.grayscale, self.decoder = cfg.grayscale, cfg.decoder
        self.transform = eval_transform(cfg)
        self.mean, self.std = list(cfg.mean), list(cfg.std)

    def __call__(self, image) -> torch.Tensor:
        if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__"):
            image = read_image(str(image), self.grayscale, self.decoder)
        elif isinstance(image, Image.Image):
            image = image.convert("L" if self.grayscale else "RGB")
            if self.decoder != "pil":
                image = v2.functional.pil_to_tensor(image)
        elif self.decoder == "pil":  # a tensor, for the PIL pipeline
            image = v2.functional.to_pil_image(image)
        return self.transform(image)

    def __repr__(self) -> str:
        return f"InferenceTransform({self.transform!r})"
