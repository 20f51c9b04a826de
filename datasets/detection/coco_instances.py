"""COCO-format instance annotations: ``root/<split>/`` images and ``root/annotations/instances_<split>.json``
for the splits ``train`` and ``test`` (and ``val``, if there is one).

The JSON's ``images`` (id, file_name, height, width), ``annotations`` (image_id, category_id,
bbox as [x, y, w, h], segmentation as polygons or RLE, iscrowd) and ``categories`` (id, name).
Classes are the categories in order of their ids. Crowd annotations (``iscrowd: 1``) are kept as
instances marked ``crowd``: training leaves them out, evaluation passes them to COCO's AP as
crowds, which ignores a detection they cover, as COCOeval does. An annotation that cannot be read
stops with one line naming the file and the annotation's id.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ...core.errors import UserError, short_repr

LAYOUT = "root/annotations/instances_<split>.json and root/<split>/<file_name> for the splits train and test (val optional)"


def annotation_file(root: Path, split: str) -> Path:
    return root / "annotations" / f"instances_{split}.json"


def coco_ids(root: Path) -> tuple[dict[str, int], list[int]]:
    """(each image's id by its file's path, the category ids in the order of the classes) over the
    dataset's annotation files: the ids a COCO results file names."""
    images: dict[str, int] = {}
    categories: list[int] | None = None
    for split in ("train", "val", "test"):
        path = annotation_file(root, split)
        if not path.is_file():
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        images.update({str(root / split / img["file_name"]): img["id"] for img in data["images"]})
        if categories is None:
            categories = [c["id"] for c in sorted(data["categories"], key=lambda c: c["id"])]
    return images, categories or []


def read_coco_split(root: Path, split: str, classes: list[str] | None = None) -> tuple[list[dict], list[str]]:
    """(records, classes) of one split (``datasets/detection/instances.py`` gives a record's form). ``classes``:
    the training split's, which a later split must name alike."""
    path = annotation_file(root, split)
    if not path.is_file():
        raise UserError(f"data.root: {path} not found (expected {LAYOUT})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        images, annotations, categories = data["images"], data["annotations"], data["categories"]
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: not a COCO instances file ({e.__class__.__name__}: {e}; expected images, "
                        "annotations and categories)") from None
    for k, c in enumerate(categories):
        missing = [key for key in ("id", "name") if not isinstance(c, dict) or key not in c]
        if missing:
            raise UserError(f"{path}: category entry {k} ({short_repr(c)}) has no {' and no '.join(missing)}")
    cats = sorted(categories, key=lambda c: c["id"])
    names = [str(c["name"]) for c in cats]
    if classes is not None and names != classes:
        raise UserError(f"{path}: categories {names} differ from the training split's {classes}")
    index = {c["id"]: k for k, c in enumerate(cats)}
    records, by_id = [], {}
    for k, img in enumerate(images):
        missing = [key for key in ("id", "file_name", "height", "width") if not isinstance(img, dict) or key not in img]
        if missing:
            raise UserError(f"{path}: image entry {k} ({short_repr(img)}) has no {', '.join(missing)}")
        r = {"file": str(root / split / img["file_name"]), "height": int(img["height"]), "width": int(img["width"]),
             "instances": []}
        by_id[img["id"]] = r
        records.append(r)
    for ann in annotations:
        where = f"{path}: annotation {ann.get('id')}"
        if ann.get("image_id") not in by_id:
            raise UserError(f"{where}: image_id {ann.get('image_id')!r} is not among the images")
        if ann.get("category_id") not in index:
            raise UserError(f"{where}: category_id {ann.get('category_id')!r} is not among the categories")
        crowd = bool(ann.get("iscrowd", 0))
        box = ann.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) and math.isfinite(v)
                                                                 for v in box) and box[2] > 0 and box[3] > 0):
            raise UserError(f"{where}: bbox {box!r} is not [x, y, width, height] with a positive width and height")
        seg = ann.get("segmentation")
        polygons_ok = isinstance(seg, list) and seg and all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0
                                                             for p in seg)
        rle_ok = isinstance(seg, dict) and "counts" in seg and "size" in seg
        odd = [i for i, p in enumerate(seg) if isinstance(p, list) and len(p) % 2] if isinstance(seg, list) else []
        if odd:
            raise UserError(f"{where}: polygon {odd[0]} has an odd number of coordinates ({len(seg[odd[0]])}); a "
                            "polygon is x, y pairs")
        if not (polygons_ok or rle_ok):
            raise UserError(f"{where}: segmentation is neither polygons (lists of at least 3 x, y pairs) nor RLE "
                            "(counts and size)")
        x, y, w, h = (float(v) for v in box)
        r = by_id[ann["image_id"]]
        instance = {"label": index[ann["category_id"]], "box": [x, y, x + w, y + h],
                    "area": float(ann.get("area") or w * h), "mask": {"coco": seg}}
        r["instances"].append({**instance, "crowd": True} if crowd else instance)
    return records, names
