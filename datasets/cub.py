"""Caltech-UCSD Birds-200-2011: the official folder with its train/test split file.

``root`` (or ``root/CUB_200_2011``) holds images/, images.txt, image_class_labels.txt,
train_test_split.txt and classes.txt, as in CUB_200_2011.tgz.
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import UserError

FILES = ["images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt", "images/"]
SOURCE = "CUB_200_2011.tgz from https://www.vision.caltech.edu/datasets/cub_200_2011/"


def _table(path: Path) -> dict[int, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            key, value = line.strip().split(" ", 1)
            out[int(key)] = value
    return out


def load_cub(root: Path):
    base = next((b for b in (root / "CUB_200_2011", root) if all((b / f.rstrip("/")).exists() for f in FILES)), None)
    if base is None:
        raise UserError(f"data.root: CUB-200-2011 not found at {root}; download {SOURCE} and extract it so that "
                        f"{root}/CUB_200_2011/ holds " + ", ".join(FILES))
    images = _table(base / "images.txt")
    labels = {k: int(v) - 1 for k, v in _table(base / "image_class_labels.txt").items()}
    is_train = {k: v.strip() == "1" for k, v in _table(base / "train_test_split.txt").items()}
    classes = [name for _, name in sorted(_table(base / "classes.txt").items())]
    train, test = [], []
    for k, rel in sorted(images.items()):
        (train if is_train[k] else test).append((str(base / "images" / rel), labels[k]))
    return sorted(train), sorted(test), classes
