"""Image folders ``root/{train,test}/<class>/<image>``."""

from __future__ import annotations

from pathlib import Path

from ..core.errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
LAYOUT_HINT = "root/train/<class>/<image> and root/test/<class>/<image>"


def is_image_folder(root: Path) -> bool:
    return (root / "train").is_dir() and (root / "test").is_dir()


def scan_split(root: Path, split: str, classes: list[str] | None = None) -> tuple[list[tuple[str, int]], list[str]]:
    """Samples of ``root/split`` (sorted) and the class names (sorted folder names of train)."""
    return scan_class_folders(root / split, classes)


def scan_class_folders(folder: Path, classes: list[str] | None = None, key: str = "data.root",
                       layout: str = LAYOUT_HINT) -> tuple[list[tuple[str, int]], list[str]]:
    """Samples of ``folder/<class>/<image>`` (sorted), labelled by their index in ``classes``
    (default: the sorted folder names), and the class names. ``key`` names the config key in errors."""
    if not folder.is_dir():
        raise UserError(f"{key}: {folder} does not exist; expected the layout {layout}")
    found = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if classes is None:
        classes = found
    if not classes:
        raise UserError(f"{key}: {folder} has no class folders; expected the layout {layout}")
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise UserError(f"{key}: {folder} has class folders that are not training classes: {', '.join(unknown[:5])}")
    index = {c: i for i, c in enumerate(classes)}
    samples = []
    for c in found:
        for p in sorted((folder / c).rglob("*")):
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
                samples.append((str(p), index[c]))
    if not samples:
        raise UserError(f"{key}: {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return samples, classes


def load_image_folder(root: Path):
    train, classes = scan_split(root, "train")
    test, _ = scan_split(root, "test", classes)
    return train, test, classes
