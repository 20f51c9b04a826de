"""Target datasets: train / val / test splits with the paper's transforms."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

from ..core.config import STANDARD_PREPROCESSING, DataConfig, DetectionConfig
from ..core.distributed import rank0_first
from ..core.errors import UserError
from ..core.moved import MovedModules
from .cub import load_cub
from .data_splits import DataSplits
from .detection.detection_data import create_detection_datasets
from .folder import load_image_folder, scan_class_folders
from .image_list import ImageList
from .list_file import class_order, labelled, load_lists, read_list
from .resized_cache import build_resized_cache
from .scan import scan_images
from .sklearn_digits import materialize_digits
from .splits import reduce_and_split
from .stanford_cars import load_stanford_cars
from .synthetic_shapes import materialize_shapes
from .torchvision_sets import SPECS, load_torchvision_dataset
from .transforms import eval_transform, train_transform

MOVED = {f"adarand.datasets.{name}": f"adarand.datasets.detection.{name}"
         for name in ("coco_instances", "voc_instances", "instances", "detection_data")}
if not any(isinstance(f, MovedModules) and f.moved == MOVED for f in sys.meta_path):
    sys.meta_path.append(MovedModules(MOVED, until="0.3"))


def config_path(value: str, cache_dir: str) -> Path:
    """A path of the config: ``{cache_dir}`` replaced, ``~`` expanded."""
    return Path(value.replace("{cache_dir}", cache_dir)).expanduser()


def dataset_root(cfg: DataConfig, cache_dir: str) -> Path:
    if cfg.name == "list":
        return config_path(cfg.train_list, cache_dir).resolve().parent
    root = config_path(cfg.root, cache_dir)
    if cfg.name == "sklearn_digits":
        root = materialize_digits(root, cfg.digits_task)
    if cfg.name == "synthetic_shapes" and cfg.shapes_task == "source":  # the classification task
        root = materialize_shapes(root, "source")
    return root.resolve()


def check_images(splits: list[list], cfg: DataConfig, cache_dir: str, progress: bool, key: str,
                 expected_sizes: dict[str, tuple[int, int]] | None = None) -> list[list]:
    """The sample lists of ``splits`` (scanned together) without unreadable images: one stops the
    run with one line naming it, or, with ``data.skip_bad_images``, is left out with a warning.
    ``expected_sizes``: {path: (width, height)} the annotations give (detection); an image of
    another size stops the run with one line, before anything of it is written."""
    bad, sizes = scan_images([p for samples in splits for p, _ in samples], Path(cache_dir).expanduser(), progress)
    wrong = [(p, sizes[p], size) for p, size in (expected_sizes or {}).items() if p in sizes and tuple(sizes[p]) != size]
    if wrong:
        p, (w, h), (ew, eh) = wrong[0]
        raise UserError(f"{key}: {len(wrong)} image(s) of another size than their annotation says, e.g. {p}: "
                        f"{w} x {h} pixels, its annotation {ew} x {eh}")
    if not bad:
        return splits
    listed = "; ".join(f"{p} ({why})" for p, why in list(bad.items())[:5]) + ("; ..." if len(bad) > 5 else "")
    if not cfg.skip_bad_images:
        raise UserError(f"{key}: {len(bad)} unreadable image(s): {listed} "
                        "(data.skip_bad_images: true leaves them out)")
    warnings.warn(f"{key}: leaving out {len(bad)} unreadable image(s): {listed}", stacklevel=2)
    return [[s for s in samples if s[0] not in bad] for samples in splits]


def check_classes(train: list, test: list, classes: list[str], root: Path, key: str) -> None:
    """A class without training images is refused (its head row could learn nothing, and a
    silently smaller class count would renumber the labels); a training class without test
    images is allowed with a warning that names it (the test accuracy is then over fewer classes).
    A test class that is not a training class is refused where the test split is read: it has no
    logit to score."""
    in_train = {label for _, label in train}
    empty = [c for i, c in enumerate(classes) if i not in in_train]
    if empty:
        raise UserError(f"{key}: {root}: class(es) {', '.join(empty[:10])} have no training images (an empty class "
                        "folder?); add images or remove the class")
    in_test = {label for _, label in test}
    untested = [c for i, c in enumerate(classes) if i not in in_test]
    if untested:
        warnings.warn(f"{key}: {root}: class(es) {', '.join(untested[:10])} have no test images; the test accuracy "
                      f"is over {len(classes) - len(untested)} of {len(classes)} classes", stacklevel=2)


def create_datasets(cfg: DataConfig, cache_dir: str, progress: bool = False,
                    detection: DetectionConfig | None = None) -> DataSplits:
    """The splits of ``cfg``: images and labels; with ``detection`` (``task: detection``), images and
    their instances (``detection_data.py``)."""
    root = dataset_root(cfg, cache_dir)
    if detection is not None:
        return create_detection_datasets(cfg, detection, root, cache_dir, progress, check_images)
    val_given = None
    if cfg.name == "list":
        train_all, test, val_given, classes = load_lists(
            config_path(cfg.train_list, cache_dir), config_path(cfg.test_list, cache_dir),
            config_path(cfg.val_list, cache_dir) if cfg.val_list else None)
    elif cfg.name == "stanford_cars":
        train_all, test, classes = load_stanford_cars(root)
    elif cfg.name == "birds":
        train_all, test, classes = load_cub(root)
    elif cfg.name in ("coco", "voc_instances"):
        raise UserError(f"data.name: {cfg.name} holds instance annotations, for task: detection")
    elif cfg.name in SPECS:
        train_all, test, classes = load_torchvision_dataset(cfg.name, root)
    else:
        train_all, test, classes = load_image_folder(root)
    if cfg.val_root:
        val_given, _ = scan_class_folders(config_path(cfg.val_root, cache_dir), classes, key="data.val_root",
                                          layout="val_root/<class>/<image>, classes named as in training")
    key = "data.train_list" if cfg.name == "list" else "data.root"
    check_classes(train_all, test, classes, root, key)
    if val_given is None:
        train_all, test = check_images([train_all, test], cfg, cache_dir, progress, key)
        train, val = reduce_and_split(train_all, cfg.use_ratio, cfg.val_ratio, cfg.split_seed)
    else:  # a validation set of its own: use_ratio reduces the training set only
        train_all, test, val = check_images([train_all, test, val_given], cfg, cache_dir, progress, key)
        train, _ = reduce_and_split(train_all, cfg.use_ratio, 0.0, cfg.split_seed)
    cfg = cfg.with_preprocessing(STANDARD_PREPROCESSING)  # what the run's backbone did not set
    tt, et = train_transform(cfg), eval_transform(cfg)
    g, dec = cfg.grayscale, cfg.decoder
    extra = {}
    for i, extra_cfg in enumerate(cfg.extra_test):
        key = f"data.extra_test[{i}].root"
        folder = config_path(extra_cfg.root, cache_dir)
        samples, _ = scan_class_folders(folder, classes, key=key, layout="root/<class>/<image>, classes named as in training")
        (samples,) = check_images([samples], cfg, cache_dir, progress, key)
        extra[extra_cfg.name] = (ImageList(samples, et, g, dec), sorted({label for _, label in samples}))
    data = DataSplits(train=ImageList(train, tt, g, dec), train_eval=ImageList(train, et, g, dec),
                      val=ImageList(val, et, g, dec), test=ImageList(test, et, g, dec), classes=classes,
                      root=str(root), extra_test=extra)
    if cfg.cache == "resized":
        lists = [data.train, data.train_eval, data.val, data.test] + [ds for ds, _ in extra.values()]
        cache = rank0_first(lambda: build_resized_cache(  # built by rank 0, read by the other processes
            [p for ds in lists for p, _ in ds.samples], Path(cache_dir).expanduser(),
            cfg.cache_short_side or round(1.15 * cfg.resize_size), cfg.decoder, cfg.interpolation, g,
            cfg.num_workers or os.cpu_count() or 1, progress))
        for ds in lists:
            ds.cache = cache
    return data


class ImageSets:
    """Labelled image sets beside the run's own, read and checked as the run's are, with the run's
    transforms: what a method that trains on other images (UOT's source data) asks the engine for."""

    def __init__(self, cfg: DataConfig, cache_dir: str):
        self.cfg = cfg.with_preprocessing(STANDARD_PREPROCESSING)
        self.cache_dir = cache_dir

    def read(self, root: str | None, list_file: str | None, key: str) -> tuple[list[tuple[str, int]], list[str]]:
        """(samples, class names) of a class-folder tree ``root/<class>/<image>`` or a file of
        ``path,label`` lines; ``root: sklearn_digits:source`` is the digits 0-4 the demo extractor
        was pretrained on. Unreadable images stop with one line naming them (as data.skip_bad_images says)."""
        if list_file is not None:
            path = config_path(list_file, self.cache_dir)
            rows = read_list(path, key)
            classes = class_order({label for _, label in rows})
            samples = labelled(rows, classes, path, key)
        else:
            if root == "sklearn_digits:source":
                folder = materialize_digits(config_path("{cache_dir}/digits", self.cache_dir), "source") / "train"
            else:
                folder = config_path(root, self.cache_dir)
            samples, classes = scan_class_folders(folder, key=key, layout=f"{key.split('.')[-1]}/<class>/<image>")
        (samples,) = check_images([samples], self.cfg, self.cache_dir, False, key)
        return samples, classes

    def dataset(self, samples: list[tuple[str, int]], train: bool) -> ImageList:
        """The images with the run's training (augmenting) or evaluation transform."""
        transform = train_transform(self.cfg) if train else eval_transform(self.cfg)
        return ImageList(samples, transform, self.cfg.grayscale, self.cfg.decoder)
