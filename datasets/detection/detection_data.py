"""The splits of a detection run (``task: detection``): COCO-format files, VOC-2012 instance
segmentation or the demo's synthetic shapes, read into records (``instances.py``), images checked,
image labels set, and the training pool split into train / val as for classification."""

from __future__ import annotations

from pathlib import Path

from ...core.config import DataConfig, DetectionConfig
from ...core.errors import UserError
from ..data_splits import DataSplits
from ..splits import reduce_and_split
from ..synthetic_shapes import materialize_shapes
from .coco_instances import annotation_file, read_coco_split
from .instances import ImageLabels, InstanceDataset, detection_transforms, with_image_labels
from .voc_instances import VOC_CLASSES, read_voc_split

DETECTION_DATASETS = ("coco", "voc_instances", "synthetic_shapes")


def read_records(cfg: DataConfig, root: Path) -> tuple[list[dict], list[dict], list[dict] | None, list[str]]:
    """(training pool, test, given validation split or None, classes)."""
    if cfg.name == "voc_instances":
        return read_voc_split(root, "train"), read_voc_split(root, "val"), None, list(VOC_CLASSES)
    train, classes = read_coco_split(root, "train")
    test, _ = read_coco_split(root, "test", classes)
    val = read_coco_split(root, "val", classes)[0] if annotation_file(root, "val").is_file() else None
    return train, test, val, classes


def split_pool(records: list[dict], cfg: DataConfig) -> tuple[list[dict], list[dict]]:
    """(train, val): ``use_ratio`` and ``val_ratio`` stratified by the image label, as for images."""
    train, val = reduce_and_split([(i, r["label"]) for i, r in enumerate(records)], cfg.use_ratio, cfg.val_ratio,
                                  cfg.split_seed)
    return [records[i] for i, _ in train], [records[i] for i, _ in val]


def create_detection_datasets(cfg: DataConfig, det: DetectionConfig, root: Path, cache_dir: str, progress: bool,
                              check_images):
    """The DataSplits of a detection run (``check_images``: the image scan of ``datasets``)."""
    if cfg.name == "synthetic_shapes":
        root = materialize_shapes(root, "target")
    if not root.is_dir():
        raise UserError(f"data.root: {root} is not a folder")
    pool, test, val, classes = read_records(cfg, root)
    if len(classes) < 1:
        raise UserError(f"data.root: {root} has no categories")
    key = "data.root"
    files = [[(r["file"], 0) for r in split] for split in (pool, test, val or [])]
    sizes = {r["file"]: (r["width"], r["height"]) for split in (pool, test, val or []) for r in split}
    kept = [{p for p, _ in split} for split in check_images(files, cfg, cache_dir, progress, key, sizes)]
    pool, test = [r for r in pool if r["file"] in kept[0]], [r for r in test if r["file"] in kept[1]]
    val = None if val is None else [r for r in val if r["file"] in kept[2]]
    pool = with_image_labels(pool, det.image_label, det.single_class_only)
    if not pool:
        raise UserError(f"data.root: {root}: no training image holds an instance"
                        + (" of a single class (detection.single_class_only: true)" if det.single_class_only else ""))
    if val is None:
        train, val = split_pool(pool, cfg)
    else:
        train, _ = reduce_and_split([(i, r["label"]) for i, r in enumerate(pool)], cfg.use_ratio, 0.0, cfg.split_seed)
        train = [pool[i] for i, _ in train]
        val = with_image_labels(val, det.image_label, det.single_class_only)
    tt, et = detection_transforms(cfg.hflip)
    train_ds = InstanceDataset(train, tt, det.masks)
    return DataSplits(train=train_ds, train_eval=ImageLabels(InstanceDataset(train, et, det.masks)),
                      val=InstanceDataset(val, et, det.masks, crowds=True),
                      test=InstanceDataset(test, et, det.masks, crowds=True),
                      classes=classes, root=str(root))
