"""Aircraft, DTD, Flowers and Pets through torchvision's dataset classes (``download=False``).

The training set is the official training data (train + val where the dataset has both); our
own seeded 9:1 split makes train/val from it. The official test split is the test set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torchvision.datasets as tvd

from ..core.errors import UserError


@dataclass(frozen=True)
class Spec:
    title: str
    cls: type
    train_splits: tuple[str, ...]
    folder: str  # what torchvision expects under root
    source: str  # where the files come from
    kwargs: tuple = ()


SPECS = {
    "aircraft": Spec("FGVC-Aircraft", tvd.FGVCAircraft, ("trainval",), "fgvc-aircraft-2013b/",
                     "fgvc-aircraft-2013b.tar.gz from https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/",
                     (("annotation_level", "variant"),)),
    "dtd": Spec("DTD", tvd.DTD, ("train", "val"), "dtd/dtd/ (images/, labels/)",
                "dtd-r1.0.1.tar.gz from https://www.robots.ox.ac.uk/~vgg/data/dtd/", (("partition", 1),)),
    "flowers": Spec("Oxford Flowers-102", tvd.Flowers102, ("train", "val"),
                    "flowers-102/ (jpg/, imagelabels.mat, setid.mat)",
                    "102flowers.tgz, imagelabels.mat and setid.mat from https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"),
    "pets": Spec("Oxford-IIIT Pet", tvd.OxfordIIITPet, ("trainval",), "oxford-iiit-pet/ (images/, annotations/)",
                 "images.tar.gz and annotations.tar.gz from https://www.robots.ox.ac.uk/~vgg/data/pets/"),
}


def _open(spec: Spec, root: Path, split: str):
    try:
        return spec.cls(str(root), split=split, download=False, **dict(spec.kwargs))
    except (RuntimeError, FileNotFoundError) as e:
        raise UserError(f"data.root: {spec.title} not found under {root} ({e.__class__.__name__}: "
                        f"{str(e).splitlines()[0]}); download {spec.source} and extract it so that "
                        f"{root}/{spec.folder} exists") from None


def _samples(ds) -> list[tuple[str, int]]:
    files = getattr(ds, "_image_files", None) or getattr(ds, "_images", None)
    labels = getattr(ds, "_labels", None)
    if files is None or labels is None:  # torchvision changed its internals
        raise RuntimeError(f"cannot read the sample list of torchvision's {type(ds).__name__}")
    return [(str(p), int(y)) for p, y in zip(files, labels, strict=True)]


def load_torchvision_dataset(name: str, root: Path):
    spec = SPECS[name]
    train, classes = [], None
    for split in spec.train_splits:
        ds = _open(spec, root, split)
        train += _samples(ds)
        classes = classes or list(getattr(ds, "classes", []))
    test = _samples(_open(spec, root, "test"))
    n = max(y for _, y in train + test) + 1
    if len(classes) != n:  # Flowers102 has no class names in torchvision
        classes = [f"class{k:03d}" for k in range(n)]
    return sorted(train), sorted(test), classes
