"""Stanford Cars: a prepared image folder, or torchvision's ``StanfordCars`` layout.

torchvision's layout (``download=False``), under ``root`` or ``root/stanford_cars``::

    devkit/cars_meta.mat  devkit/cars_train_annos.mat  cars_test_annos_withlabels.mat
    cars_train/*.jpg  cars_test/*.jpg
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import UserError
from .folder import LAYOUT_HINT, is_image_folder, load_image_folder

TV_FILES = ["devkit/cars_meta.mat", "devkit/cars_train_annos.mat", "cars_test_annos_withlabels.mat",
            "cars_train/", "cars_test/"]


def _tv_base(root: Path) -> Path | None:
    for base in (root / "stanford_cars", root):
        if all((base / f.rstrip("/")).exists() for f in TV_FILES):
            return base
    return None


def _read_annotations(mat_path: Path, image_dir: Path) -> list[tuple[str, int]]:
    from scipy.io import loadmat

    annos = loadmat(mat_path, squeeze_me=True)["annotations"]
    return sorted((str(image_dir / str(a["fname"])), int(a["class"]) - 1) for a in annos)


def load_stanford_cars(root: Path):
    if is_image_folder(root):
        return load_image_folder(root)
    base = _tv_base(root)
    if base is None:
        raise UserError(
            f"data.root: Stanford Cars not found at {root}; expected either a prepared folder "
            f"({LAYOUT_HINT}) or torchvision's StanfordCars files under {root}/stanford_cars/: "
            + ", ".join(TV_FILES))
    from scipy.io import loadmat

    names = [str(n) for n in loadmat(base / "devkit/cars_meta.mat", squeeze_me=True)["class_names"]]
    train = _read_annotations(base / "devkit/cars_train_annos.mat", base / "cars_train")
    test = _read_annotations(base / "cars_test_annos_withlabels.mat", base / "cars_test")
    missing = [p for p, _ in train + test if not Path(p).is_file()]
    if missing:
        raise UserError(f"data.root: {len(missing)} images listed in the annotations are missing, e.g. {missing[0]}")
    return train, test, names
