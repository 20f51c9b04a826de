"""Reading an image file into a uint8 tensor (C x H x W) or a PIL image, by ``data.decoder``:

``torchcodec`` (the default)
    JPEG and PNG decoded by TorchCodec (``torchcodec.decoders.decode_image``: libjpeg-turbo and
    libpng), any other format by PIL; the transforms then run on tensors (transforms v2). Where
    TorchCodec is not installed or does not load against the installed torch, PIL decodes every
    image into the same tensor (said once per process, with the reason), so a run still goes on.
``torchvision``
    JPEG by ``torchvision.io.decode_jpeg``, other formats by PIL, then tensors: the pipeline of
    earlier runs, kept so that they reproduce; torchvision 0.29 deprecates its decoding.
``pil``
    the PIL image itself, for torchvision's PIL transforms (the published code's pipeline).

EXIF orientation is applied by none of them, as PIL's ``Image.open`` does not apply it.
"""

from __future__ import annotations

import functools
import logging

import torch
from PIL import Image
from torchvision.transforms.v2.functional import pil_to_tensor

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
log = logging.getLogger(__name__)


def file_magic(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read(8)


def is_jpeg(path: str) -> bool:
    return file_magic(path).startswith(JPEG_MAGIC)


def read_pil(path: str, grayscale: bool = False) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("L" if grayscale else "RGB")


@functools.cache
def torchcodec_decode():
    """TorchCodec's ``decode_image``, or None (once per process, one line why) where it is not
    installed or does not load against this torch."""
    try:
        from torchcodec.decoders import decode_image
    except (ImportError, OSError, RuntimeError) as e:  # not installed, or its libraries do not load here
        reason = "not installed" if isinstance(e, ModuleNotFoundError) else f"does not load ({str(e).splitlines()[0]})"
        log.warning("data.decoder: torchcodec %s; PIL decodes the images instead (pip install torchcodec)", reason)
        return None
    return decode_image


def decoder_in_use(decoder: str) -> str:
    """What decodes the images for ``data.decoder``: ``torchcodec``, ``pil (torchcodec unavailable)``,
    ``torchvision`` or ``pil``; a resized cache is keyed by it."""
    if decoder == "torchcodec" and torchcodec_decode() is None:
        return "pil (torchcodec unavailable)"
    return decoder


def read_tensor(path: str, grayscale: bool = False, decoder: str = "torchcodec") -> torch.Tensor:
    """The image as a uint8 tensor (1 or 3 channels): JPEG (and PNG, by TorchCodec) decoded by the
    decoder, anything else by PIL."""
    magic = file_magic(path)
    if decoder == "torchcodec" and (magic.startswith(JPEG_MAGIC) or magic.startswith(PNG_MAGIC)):
        decode = torchcodec_decode()
        if decode is not None:
            return decode(path, mode="GRAY" if grayscale else "RGB")
    elif decoder == "torchvision" and magic.startswith(JPEG_MAGIC):
        from torchvision.io import ImageReadMode, decode_jpeg, read_file
        return decode_jpeg(read_file(path), mode=ImageReadMode.GRAY if grayscale else ImageReadMode.RGB)
    return pil_to_tensor(read_pil(path, grayscale))


def read_image(path: str, grayscale: bool, decoder: str):
    """A PIL image (``decoder: pil``) or a uint8 tensor (``torchcodec``, ``torchvision``)."""
    return read_pil(path, grayscale) if decoder == "pil" else read_tensor(path, grayscale, decoder)
