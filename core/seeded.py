"""Augmentations that depend only on (run seed, epoch, image), never on the global RNG.

The training loader's sampler yields ``(index, seed)`` pairs (``SeededSampler``) and the
dataset applies its random transform to image ``index`` with the CPU generator seeded with
``seed`` (``SeededDataset``), restoring the generator's state afterwards. So the images a
step sees are the same whichever method runs beside them (a regularizer that draws random numbers
does not move the augmentations), whatever the number of loader workers, and after a resume.
torchvision's random transforms draw from torch's CPU generator, which is the one seeded.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Sampler

_MASK = (1 << 63) - 1


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one image in one epoch (a SplitMix64 hash of the three numbers)."""
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) & ((1 << 64) - 1)
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & ((1 << 64) - 1)
    x ^= x >> 31
    return x & _MASK


class SeededSampler(Sampler):
    """Wraps a sampler of indices: yields ``(index, sample_seed(seed, epoch, index))``.
    ``set_epoch`` is passed on to the wrapped sampler (a ``DistributedSampler``'s order)."""

    def __init__(self, sampler: Sampler, seed: int):
        self.sampler = sampler
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self.sampler:
            yield int(index), sample_seed(self.seed, self.epoch, int(index))

    def __len__(self) -> int:
        return len(self.sampler)


class SeededDataset(Dataset):
    """``dataset[index]`` drawn with torch's CPU generator seeded with ``seed``, for keys
    ``(index, seed)``; the generator's state is restored afterwards."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return self.dataset[index]
