"""Reading an image file: JPEG by libjpeg-turbo into a uint8 tensor, other formats by PIL.

``decoder: torchvision`` (the default) decodes a JPEG with ``torchvision.io.decode_jpeg`` and any
other format with PIL, converted to the same uint8 tensor (C x H x W); the transforms then run on
tensors (transforms v2). ``decoder: pil`` returns the PIL image, for torchvision's PIL transforms
(the pipeline of the published code). EXIF orientation is applied by neither, as PIL's
``Image.open`` does not apply it.
"""

from __future__ import annotations

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg, read_file
from torchvision.transforms.v2.functional import pil_to_tensor

JPEG_MAGIC = b"\xff\xd8\xff"


def is_jpeg(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(3) == JPEG_MAGIC


def read_pil(path: str, grayscale: bool = False) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("L" if grayscale else "RGB")


def read_tensor(path: str, grayscale: bool = False) -> torch.Tensor:
    """The image as a uint8 tensor (1 or 3 channels): a JPEG decoded by libjpeg-turbo, anything else by PIL."""
    if is_jpeg(path):
        return decode_jpeg(read_file(path), mode=ImageReadMode.GRAY if grayscale else ImageReadMode.RGB)
    return pil_to_tensor(read_pil(path, grayscale))


def read_image(path: str, grayscale: bool, decoder: str):
    """A PIL image (``decoder: pil``) or a uint8 tensor (``decoder: torchvision``)."""
    return read_pil(path, grayscale) if decoder == "pil" else read_tensor(path, grayscale)
