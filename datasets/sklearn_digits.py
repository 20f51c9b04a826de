"""The offline demo's data: scikit-learn's bundled handwritten digits (8 x 8 grey images).

Written once as PNG files into an image folder (``root/{train,test}/<class>/``), then read by
the ordinary folder loader. Two disjoint tasks: ``source`` (digits 0-4, used to pretrain the
demo extractor) and ``target`` (digits 5-9, the fine-tuning task).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

TASK_CLASSES = {"source": [0, 1, 2, 3, 4], "target": [5, 6, 7, 8, 9]}
TEST_SHARE = 0.5  # of each class's images go to test/
SEED = 1234


def materialize_digits(root: Path, task: str) -> Path:
    """Write the task's images under ``root/task`` unless already there; return that folder."""
    out = root / task
    if (out / "train").is_dir() and (out / "test").is_dir():
        return out
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    rng = np.random.default_rng(SEED)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{task}-"))
    try:
        for c in TASK_CLASSES[task]:
            idx = np.flatnonzero(digits.target == c)
            rng.shuffle(idx)
            n_test = int(round(TEST_SHARE * len(idx)))
            for split, chunk in (("test", idx[:n_test]), ("train", idx[n_test:])):
                d = tmp / split / f"digit{c}"
                d.mkdir(parents=True)
                for i in chunk:
                    Image.fromarray(images[i]).save(d / f"{i:04d}.png")
        try:
            tmp.rename(out)
        except OSError:  # another process finished first: keep its complete copy
            if not (out / "train").is_dir():
                raise
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
