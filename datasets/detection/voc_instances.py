"""Pascal VOC-2012 instance segmentation (SPEC §8b), from ``data.root`` = the ``VOC2012`` folder:

    ImageSets/Segmentation/{train,val}.txt   JPEGImages/<id>.jpg
    SegmentationObject/<id>.png              SegmentationClass/<id>.png

SegmentationObject holds an instance id per pixel (0 background, 255 the void border);
SegmentationClass the class per pixel (1..20, 0 background, 255 void). An instance's class is the
majority class over its pixels (void left out), its box the box around its pixels. The official
``train`` list is the training pool (split 9:1 into train / val by the engine), ``val`` the test set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ...core.errors import UserError
from .instances import box_of_mask

VOC_CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]
VOID = 255
LAYOUT = ("VOC2012/ImageSets/Segmentation/{train,val}.txt, JPEGImages/<id>.jpg, SegmentationObject/<id>.png, "
          "SegmentationClass/<id>.png")


def instances_of(objects: np.ndarray, classes: np.ndarray, object_png: str) -> list[dict]:
    """The instances of one image: for each instance id (not 0, not void) its majority class
    (void and background pixels of the class map left out), mask area and box."""
    out = []
    for instance in np.unique(objects):
        if instance in (0, VOID):
            continue
        mask = objects == instance
        votes = classes[mask]
        votes = votes[(votes != 0) & (votes != VOID)]
        if votes.size == 0:
            continue
        label = int(np.bincount(votes).argmax()) - 1  # class 1 is index 0
        out.append({"label": label, "box": box_of_mask(mask), "area": float(mask.sum()),
                    "mask": {"png": [object_png, int(instance)]}})
    return out


def read_voc_split(root: Path, split: str) -> list[dict]:
    ids_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not ids_file.is_file():
        raise UserError(f"data.root: {ids_file} not found (expected {LAYOUT}; data.root is the VOC2012 folder)")
    records = []
    for image_id in ids_file.read_text().split():
        files = [root / "JPEGImages" / f"{image_id}.jpg", root / "SegmentationObject" / f"{image_id}.png",
                 root / "SegmentationClass" / f"{image_id}.png"]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise UserError(f"data.root: {', '.join(missing)} not found (listed in {ids_file}; expected {LAYOUT})")
        try:
            objects, classes = (np.asarray(Image.open(f)) for f in files[1:])
        except OSError as e:
            raise UserError(f"{files[1]}: unreadable segmentation ({e})") from None
        if objects.shape != classes.shape:
            raise UserError(f"{files[1]}: {objects.shape} pixels, its SegmentationClass {classes.shape}")
        records.append({"file": str(files[0]), "height": int(objects.shape[0]), "width": int(objects.shape[1]),
                        "instances": instances_of(objects, classes, str(files[1]))})
    return records
