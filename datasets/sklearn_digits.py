"""The offline demo's data: scikit-learn's bundled handwritten digits (8 x 8 grey images).

Written once as PNG files into an image folder (``root/{train,test}/<class>/``), then read by
the ordinary folder loader. Two disjoint tasks: ``source`` (digits 0-4, used to pretrain the
demo extractor) and ``target`` (digits 5-9, the fine-tuning task).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..core.files import build_folder_once

TASK_CLASSES = {"source": [0, 1, 2, 3, 4], "target": [5, 6, 7, 8, 9]}
TEST_SHARE = 0.5  # of each class's images go to test/
SEED = 1234


def materialize_digits(root: Path, task: str) -> Path:
    """Write the task's images under ``root/task`` unless already there; return that folder."""
    if (root / task / "train").is_dir() and (root / task / "test").is_dir():
        return root / task
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    rng = np.random.default_rng(SEED)

    def write(folder: Path) -> None:
        for c in TASK_CLASSES[task]:
            idx = np.flatnonzero(digits.target == c)
            rng.shuffle(idx)
            n_test = int(round(TEST_SHARE * len(idx)))
            for split, chunk in (("test", idx[:n_test]), ("train", idx[n_test:])):
                d = folder / split / f"digit{c}"
                d.mkdir(parents=True)
                for i in chunk:
                    Image.fromarray(images[i]).save(d / f"{i:04d}.png")

    return build_folder_once(root / task, write)
