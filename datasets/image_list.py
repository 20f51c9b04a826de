"""A dataset over a list of (image path, label) pairs."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch.utils.data import Dataset
from torchvision.transforms.v2.functional import to_pil_image

from .decode import read_image
from .resized_cache import ResizedCache

Sample = tuple[str, int]


class ImageList(Dataset):
    """``(transform(image), label)`` for each (path, label); the image read by ``decoder``
    (``torchvision``: a uint8 tensor, JPEG by libjpeg-turbo; ``pil``: a PIL image). From the
    resized cache, the image is its stored copy, as a PIL image for ``decoder: pil``: the
    transforms are the decoder's either way."""

    def __init__(self, samples: Sequence[Sample], transform: Callable | None = None, grayscale: bool = False,
                 decoder: str = "torchcodec", cache: ResizedCache | None = None):
        self.samples = list(samples)
        self.cache = cache  # data.cache: resized, the images already decoded (uint8 tensors)
        self.targets = [label for _, label in self.samples]
        self.transform = transform
        self.grayscale = grayscale
        self.decoder = decoder

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        if self.cache is None:
            img = read_image(path, self.grayscale, self.decoder)
        else:
            img = self.cache.image(path)
            if self.decoder == "pil":
                img = to_pil_image(img)
        if self.transform is not None:
            img = self.transform(img)
        return img, label
