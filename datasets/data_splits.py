"""The splits a run reads: train (training transform), train_eval (the same samples with the
evaluation transform, for the prior pass), val and test, with the class names."""

from __future__ import annotations

from dataclasses import dataclass, field

from .image_list import ImageList


@dataclass
class DataSplits:
    train: ImageList  # train transform
    train_eval: ImageList  # the same samples with the eval transform (prior statistics)
    val: ImageList
    test: ImageList
    classes: list[str]
    root: str
    # further test sets by name: (images with the eval transform, the training classes they hold)
    extra_test: dict[str, tuple[ImageList, list[int]]] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)
