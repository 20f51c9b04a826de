"""Image folders, the seeded splits, use_ratio, Stanford Cars in torchvision's layout."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adarand.core.config import DataConfig
from adarand.core.errors import UserError
from adarand.datasets import create_datasets
from adarand.datasets.splits import reduce_and_split

from conftest import make_image_folder


def samples(counts):
    return [(f"c{k}/{i}.png", k) for k, n in counts.items() for i in range(n)]


def test_split_is_stratified_disjoint_and_seeded():
    s = samples({0: 20, 1: 10, 2: 1})
    train, val = reduce_and_split(s, 1.0, 0.1, seed=0)
    assert set(train).isdisjoint(val) and sorted(train + val) == sorted(s)
    assert Counter(k for _, k in val) == {0: 2, 1: 1}  # the single-image class stays in train
    assert reduce_and_split(s, 1.0, 0.1, seed=0) == (train, val)
    assert reduce_and_split(s, 1.0, 0.1, seed=1) != (train, val)


def test_use_ratio_keeps_a_fixed_stratified_fraction():
    s = samples({0: 40, 1: 20})
    train, val = reduce_and_split(s, 0.5, 0.1, seed=3)
    kept = train + val
    assert Counter(k for _, k in kept) == {0: 20, 1: 10}
    train2, val2 = reduce_and_split(s, 0.5, 0.1, seed=3)
    assert (train2, val2) == (train, val)
    # smaller fractions are subsets of larger ones (a learning curve adds images, never swaps them)
    subsets = [set(sum(reduce_and_split(s, r, 0.0, seed=3), [])) for r in (0.25, 0.5, 0.75, 1.0)]
    assert [len(k) for k in subsets] == [15, 30, 45, 60]
    assert subsets[0] < subsets[1] < subsets[2] < subsets[3] == set(s)


def test_split_seed_fixes_the_split_whatever_the_run_seed(tmp_path):
    from adarand.engine.build import build_run
    from adarand.engine.config import load_config

    from conftest import write_tiny_config

    cfg = write_tiny_config(tmp_path, counts={0: 12, 1: 10, 2: 8})

    def split(*overrides, seed):
        data = build_run(load_config(cfg, ["data.use_ratio=0.5", *overrides], seed=seed)).data
        return sorted(data.train.samples), sorted(data.val.samples)

    fixed = split("data.split_seed=4", seed=0)
    assert split("data.split_seed=4", seed=7) == fixed  # another run seed: the same images in each split
    assert split("data.split_seed=5", seed=0) != fixed  # another split seed: another split


def test_folder_dataset_and_transforms(tmp_path):
    root = make_image_folder(tmp_path / "d", {0: 6, 1: 4})
    cfg = DataConfig(root=str(root), image_size=8, resize_size=10, val_ratio=0.25)
    data = create_datasets(cfg, str(tmp_path))
    assert data.classes == ["class0", "class1"]
    assert len(data.train) + len(data.val) == 10 and len(data.val) == 3 and len(data.test) == 4
    x, y = data.train[0]
    assert tuple(x.shape) == (3, 8, 8) and y in (0, 1)
    assert data.train.samples == data.train_eval.samples
    assert "RandomResizedCrop" in repr(data.train.transform) and "CenterCrop" in repr(data.val.transform)


def test_missing_folder_says_what_goes_where(tmp_path):
    cfg = DataConfig(root=str(tmp_path / "none"))
    with pytest.raises(UserError, match=r"train/<class>/<image>"):
        create_datasets(cfg, str(tmp_path))


def test_stanford_cars_torchvision_layout(tmp_path):
    from scipy.io import savemat

    base = tmp_path / "cars" / "stanford_cars"
    (base / "devkit").mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012"]
    savemat(base / "devkit/cars_meta.mat", {"class_names": np.array(names, dtype=object)})

    def annos(folder, n):
        (base / folder).mkdir()
        recs = []
        for i in range(n):
            fname = f"{i:05d}.jpg"
            Image.fromarray(rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)).save(base / folder / fname)
            recs.append((1, 1, 5, 5, i % 3 + 1, fname))
        dt = [("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"), ("class", "O"), ("fname", "O")]
        return np.array(recs, dtype=dt)

    savemat(base / "devkit/cars_train_annos.mat", {"annotations": annos("cars_train", 12)})
    savemat(base / "cars_test_annos_withlabels.mat", {"annotations": annos("cars_test", 6)})
    cfg = DataConfig(name="stanford_cars", root=str(tmp_path / "cars"), image_size=8, resize_size=8, val_ratio=0.25)
    data = create_datasets(cfg, str(tmp_path))
    assert data.classes == names
    assert len(data.train) + len(data.val) == 12 and len(data.test) == 6
    assert sorted({y for _, y in data.test.samples}) == [0, 1, 2]
    assert Path(data.test.samples[0][0]).name == "00000.jpg" and data.test.samples[0][1] == 0
    x, _ = data.val[0]
    assert tuple(x.shape) == (3, 8, 8)


def test_stanford_cars_missing_names_the_files(tmp_path):
    cfg = DataConfig(name="stanford_cars", root=str(tmp_path))
    with pytest.raises(UserError) as e:
        create_datasets(cfg, str(tmp_path))
    msg = str(e.value)
    assert "cars_train_annos.mat" in msg and "cars_test/" in msg and "train/<class>" in msg


def test_sklearn_digits_tasks_are_disjoint(tmp_path):
    src = create_datasets(DataConfig(name="sklearn_digits", root=str(tmp_path / "dg"), digits_task="source",
                                     grayscale=True, mean=[0.3], std=[0.4], image_size=16, resize_size=16), "")
    tgt = create_datasets(DataConfig(name="sklearn_digits", root=str(tmp_path / "dg"), digits_task="target",
                                     grayscale=True, mean=[0.3], std=[0.4], image_size=16, resize_size=16), "")
    assert src.classes == [f"digit{k}" for k in range(5)] and tgt.classes == [f"digit{k}" for k in range(5, 10)]
    x, _ = tgt.test[0]
    assert tuple(x.shape) == (1, 16, 16)
    # about half of sklearn's 1797 images per task, half of those for test
    assert 400 < len(tgt.test) < 500 and 400 < len(tgt.train) + len(tgt.val) < 500


def write_lists(tmp_path):
    """train / val / test lists over an image folder: a header, a comment, relative and absolute
    paths, class names as labels (numbers among them, sorted by value)."""
    root = make_image_folder(tmp_path / "imgs", {0: 6, 1: 5, 2: 4})
    names = {"class0": "10", "class1": "2", "class2": "zebra"}
    lists = tmp_path / "lists"
    lists.mkdir()
    rows = {split: [] for split in ("train", "val", "test")}
    for p in sorted((root / "train").rglob("*.png")):
        split = "val" if p.stem == "000" else "train"
        rows[split].append((p, names[p.parent.name]))
    rows["test"] = [(p, names[p.parent.name]) for p in sorted((root / "test").rglob("*.png"))]
    for split, items in rows.items():
        text = "path,label\n# a comment\n\n" + "".join(
            f"{('../' + str(p.relative_to(tmp_path))) if i % 2 else p},{label}\n" for i, (p, label) in enumerate(items))
        (lists / f"{split}.csv").write_text(text)
    return lists, rows


def test_image_lists_with_a_validation_list(tmp_path):
    lists, rows = write_lists(tmp_path)
    cfg = DataConfig(name="list", train_list=str(lists / "train.csv"), test_list=str(lists / "test.csv"),
                     val_list=str(lists / "val.csv"), image_size=12, resize_size=12, mean=[0.5] * 3, std=[0.25] * 3)
    data = create_datasets(cfg, str(tmp_path / "cache"))
    assert data.classes == ["2", "10", "zebra"]  # numbers by value
    index = {c: i for i, c in enumerate(data.classes)}
    for split, ds in (("train", data.train), ("val", data.val), ("test", data.test)):
        got = sorted((str(Path(p).resolve()), y) for p, y in ds.samples)
        assert got == sorted((str(Path(p).resolve()), index[c]) for p, c in rows[split]), split
    assert len(data.val) == 3  # the given list, not a split of train (val_ratio unused)


def test_a_folder_with_a_validation_folder(tmp_path):
    root = make_image_folder(tmp_path / "d", {0: 6, 1: 5})
    val = make_image_folder(tmp_path / "v", {0: 2, 1: 2}, seed=1) / "train"
    cfg = DataConfig(root=str(root), val_root=str(val), image_size=12, resize_size=12, mean=[0.5] * 3, std=[0.25] * 3)
    data = create_datasets(cfg, str(tmp_path / "cache"))
    assert len(data.train) == 11 and sorted(p for p, _ in data.val.samples) == sorted(
        str(p) for p in val.rglob("*.png"))


def test_image_list_errors_name_the_file_and_line(tmp_path):
    lists, _ = write_lists(tmp_path)
    base = dict(name="list", train_list=str(lists / "train.csv"), test_list=str(lists / "test.csv"),
                image_size=12, resize_size=12, mean=[0.5] * 3, std=[0.25] * 3)
    bad = lists / "bad.csv"
    cases = [("path,label\nnope.png,2\n", f"data.test_list: {bad}, line 2: no image at {lists / 'nope.png'}"),
             ("just-a-path\n", f"data.test_list: {bad}, line 1: expected 'path,label', got 'just-a-path'"),
             (f"{next((tmp_path / 'imgs').rglob('*.png'))},giraffe\n",
              f"data.test_list: {bad} has labels that are not training classes: giraffe")]
    for text, message in cases:
        bad.write_text(text)
        with pytest.raises(UserError) as err:
            create_datasets(DataConfig(**{**base, "test_list": str(bad)}), str(tmp_path / "cache"))
        assert str(err.value) == message
