"""Aircraft, DTD, Pets (torchvision's classes), Birds (CUB folder) on small layouts written here;
Flowers' missing-files message (torchvision checks its files' md5, which a test file cannot match)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adarand.core.config import DataConfig
from adarand.core.errors import UserError
from adarand.datasets import create_datasets


def img(path: Path, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (9, 9, 3), dtype=np.uint8)).save(path)


def load(name, root):
    return create_datasets(DataConfig(name=name, root=str(root), image_size=8, resize_size=8, val_ratio=0.25), "")


def test_aircraft(tmp_path):
    d = tmp_path / "fgvc-aircraft-2013b" / "data"
    (d / "images").mkdir(parents=True)
    (d / "variants.txt").write_text("707-320\nA300B4\n")
    rows = {"trainval": [("0001", "707-320"), ("0002", "A300B4"), ("0003", "707-320"), ("0004", "A300B4")],
            "test": [("0005", "A300B4"), ("0006", "707-320")]}
    for split, items in rows.items():
        (d / f"images_variant_{split}.txt").write_text("".join(f"{i} {c}\n" for i, c in items))
        for i, _ in items:
            img(d / "images" / f"{i}.jpg")
    data = load("aircraft", tmp_path)
    assert data.classes == ["707-320", "A300B4"]
    assert len(data.train) + len(data.val) == 4 and len(data.test) == 2
    assert sorted(data.test.samples)[0][0].endswith("0005.jpg") and sorted(data.test.samples)[0][1] == 1


def test_dtd_train_and_val_make_the_training_set(tmp_path):
    d = tmp_path / "dtd" / "dtd"
    names = {"train": ["banded/b1.jpg", "dotted/d1.jpg"], "val": ["banded/b2.jpg", "dotted/d2.jpg"],
             "test": ["banded/b3.jpg", "dotted/d3.jpg"]}
    for split, items in names.items():
        (d / "labels").mkdir(parents=True, exist_ok=True)
        (d / "labels" / f"{split}1.txt").write_text("\n".join(items) + "\n")
        for rel in items:
            img(d / "images" / rel)
    data = load("dtd", tmp_path)
    assert data.classes == ["banded", "dotted"]
    assert len(data.train) + len(data.val) == 4 and len(data.test) == 2


def test_pets(tmp_path):
    d = tmp_path / "oxford-iiit-pet"
    (d / "annotations").mkdir(parents=True)
    train = ["Abyssinian_1 1 1 1", "Abyssinian_2 1 1 1", "beagle_1 2 2 1", "beagle_2 2 2 1"]
    (d / "annotations" / "trainval.txt").write_text("\n".join(train) + "\n")
    (d / "annotations" / "test.txt").write_text("Abyssinian_3 1 1 1\nbeagle_3 2 2 1\n")
    for name in ["Abyssinian_1", "Abyssinian_2", "Abyssinian_3", "beagle_1", "beagle_2", "beagle_3"]:
        img(d / "images" / f"{name}.jpg")
    data = load("pets", tmp_path)
    assert data.classes == ["Abyssinian", "Beagle"]
    assert sorted(y for _, y in data.test.samples) == [0, 1]


def test_birds_uses_the_official_split_file(tmp_path):
    d = tmp_path / "CUB_200_2011"
    d.mkdir()
    (d / "classes.txt").write_text("1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n")
    rows = [(1, "001.Black_footed_Albatross/a.jpg", 1, 1), (2, "001.Black_footed_Albatross/b.jpg", 1, 0),
            (3, "002.Laysan_Albatross/c.jpg", 2, 1), (4, "002.Laysan_Albatross/d.jpg", 2, 1),
            (5, "001.Black_footed_Albatross/e.jpg", 1, 1)]
    (d / "images.txt").write_text("".join(f"{i} {p}\n" for i, p, _, _ in rows))
    (d / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, _, c, _ in rows))
    (d / "train_test_split.txt").write_text("".join(f"{i} {t}\n" for i, _, _, t in rows))
    for _, p, _, _ in rows:
        img(d / "images" / p)
    data = load("birds", tmp_path)
    assert data.classes == ["001.Black_footed_Albatross", "002.Laysan_Albatross"]
    assert [Path(p).name for p, _ in data.test.samples] == ["b.jpg"]
    assert len(data.train) + len(data.val) == 4


@pytest.mark.parametrize("name,fragments", [
    ("flowers", ["Oxford Flowers-102", "102flowers.tgz", "flowers-102/"]),
    ("aircraft", ["FGVC-Aircraft", "fgvc-aircraft-2013b.tar.gz", "fgvc-aircraft-2013b/"]),
    ("dtd", ["DTD", "dtd-r1.0.1.tar.gz"]),
    ("pets", ["Oxford-IIIT Pet", "annotations.tar.gz"]),
    ("birds", ["CUB-200-2011", "CUB_200_2011.tgz", "train_test_split.txt"]),
])
def test_missing_dataset_names_source_and_folder(tmp_path, name, fragments):
    with pytest.raises(UserError) as e:
        load(name, tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path) in msg
    for frag in fragments:
        assert frag in msg, msg
