"""Seeded, stratified subsets: ``use_ratio`` reduction and the train/val split."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence


def _by_class(samples: Sequence[tuple[str, int]]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = defaultdict(list)
    for i, (_, label) in enumerate(samples):
        groups[label].append(i)
    return groups


def stratified_take(samples: Sequence[tuple[str, int]], ratio: float, seed: int) -> tuple[list, list]:
    """Split each class's samples into (taken, rest) with ``round(ratio * n)`` taken.

    Every class keeps at least one sample in ``rest``. The draw depends
    only on ``seed`` and the (sorted) sample list, so it is the same in every run.
    """
    rng = random.Random(seed)
    taken, rest = [], []
    groups = _by_class(samples)
    for label in sorted(groups):
        idx = list(groups[label])
        rng.shuffle(idx)
        k = min(int(round(ratio * len(idx))), len(idx) - 1)
        taken.extend(samples[i] for i in sorted(idx[:k]))
        rest.extend(samples[i] for i in sorted(idx[k:]))
    return taken, rest


def reduce_and_split(samples: Sequence[tuple[str, int]], use_ratio: float, val_ratio: float,
                     seed: int) -> tuple[list, list]:
    """Keep ``use_ratio`` of the samples, then hold out ``val_ratio`` of those for validation."""
    if use_ratio < 1.0:
        _, samples = stratified_take(samples, 1.0 - use_ratio, seed)
    val, train = stratified_take(samples, val_ratio, seed + 1)
    return train, val
