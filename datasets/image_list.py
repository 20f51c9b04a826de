"""A dataset over a list of (image path, label) pairs."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from PIL import Image
from torch.utils.data import Dataset

Sample = tuple[str, int]


class ImageList(Dataset):
    def __init__(self, samples: Sequence[Sample], transform: Callable | None = None, grayscale: bool = False):
        self.samples = list(samples)
        self.targets = [label for _, label in self.samples]
        self.transform = transform
        self.mode = "L" if grayscale else "RGB"

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        with Image.open(path) as img:
            img = img.convert(self.mode)
        if self.transform is not None:
            img = self.transform(img)
        return img, label
