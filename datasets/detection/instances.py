"""Instance-segmentation data: images with their instances (class, box, mask), the image-level
label y that AdaRand's class-conditional priors use, and the detector's batches.

A record is plain data (it goes into cache keys): ``{"file", "height", "width", "instances":
[{"label", "box", "area", "mask"[, "crowd"]}], "label"}`` with 0-based class indices, boxes
``[x1, y1, x2, y2]`` in pixels and ``mask`` how to draw the instance's mask: ``{"coco": polygons or
RLE}`` or ``{"png": [SegmentationObject file, instance id]}``. ``label`` is the image's y (SPEC
§8b), from its instances that are not crowds. A crowd region (``"crowd": true``, COCO's
``iscrowd``) is left out of training targets and kept in evaluation targets as ``iscrowd``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from ...core.errors import UserError
from ..decode import read_tensor


def image_label(instances: Sequence[dict], rule: str) -> int | None:
    """y of an image from its instances (None for an image without any).

    largest:  the class of the instance with the largest mask area
    majority: the class with the most instances; a tie goes to the larger total mask area of the
              tied classes, then to the lower class index"""
    if not instances:
        return None
    if rule == "largest":
        return int(max(instances, key=lambda inst: (inst["area"], -inst["label"]))["label"])
    count: dict[int, int] = {}
    area: dict[int, float] = {}
    for inst in instances:
        count[inst["label"]] = count.get(inst["label"], 0) + 1
        area[inst["label"]] = area.get(inst["label"], 0.0) + inst["area"]
    return int(max(count, key=lambda k: (count[k], area[k], -k)))


def with_image_labels(records: list[dict], rule: str, single_class_only: bool) -> list[dict]:
    """The records of images with at least one instance, each with its ``label`` set by ``rule``
    (and, with ``single_class_only``, only those whose instances share one class)."""
    out = []
    for r in records:
        solid = [inst for inst in r["instances"] if not inst.get("crowd")]
        classes = {inst["label"] for inst in solid}
        if not classes or (single_class_only and len(classes) > 1):
            continue
        out.append({**r, "label": image_label(solid, rule)})
    return out


def decode_coco_mask(segmentation, height: int, width: int) -> np.ndarray:
    """A COCO segmentation (polygons, uncompressed or compressed RLE) as an (H, W) uint8 mask,
    through pycocotools."""
    from pycocotools import mask as coco_mask

    if isinstance(segmentation, list):  # polygons: one RLE each, merged
        rle = coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        rle = coco_mask.frPyObjects(segmentation, height, width)
    else:
        rle = dict(segmentation)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode()
    return np.ascontiguousarray(coco_mask.decode(rle), dtype=np.uint8)


def instance_mask(spec: dict, height: int, width: int, pngs: dict) -> np.ndarray:
    if "coco" in spec:
        return decode_coco_mask(spec["coco"], height, width)
    path, instance = spec["png"]
    if path not in pngs:
        pngs[path] = np.asarray(Image.open(path))
    return (pngs[path] == instance).astype(np.uint8)


class InstanceDataset(Dataset):
    """``(image, target)`` for each record: the image as a float tensor in [0, 1] (C x H x W),
    the target ``{"boxes", "labels" (1-based: 0 is the detector's background), "masks",
    "image_label", "image_id"}``; ``transform`` (torchvision transforms v2) moves image, boxes and
    masks together. ``masks: false`` leaves the masks out (Faster R-CNN)."""

    def __init__(self, records: Sequence[dict], transform: Callable | None = None, masks: bool = True,
                 crowds: bool = False):
        self.records = list(records)
        self.samples = self.records  # what the feature caches key on
        self.transform = transform
        self.masks = masks
        self.crowds = crowds  # evaluation: crowd regions kept, marked ``iscrowd``; training: left out

    def __len__(self) -> int:
        return len(self.records)

    def image(self, index: int) -> torch.Tensor:
        path = self.records[index]["file"]
        return read_tensor(path)  # RGB, uint8: TorchCodec, or PIL where it does not load

    def __getitem__(self, index: int):
        r = self.records[index]
        img = tv_tensors.Image(self.image(index))
        h, w = img.shape[-2:]
        if (h, w) != (r["height"], r["width"]):
            raise UserError(f"{r['file']}: the image is {w} x {h} pixels, its annotation says "
                            f"{r['width']} x {r['height']}")
        insts = [i for i in r["instances"] if self.crowds or not i.get("crowd")]
        target = {
            "boxes": tv_tensors.BoundingBoxes(torch.tensor([i["box"] for i in insts], dtype=torch.float32).reshape(-1, 4),
                                              format="XYXY", canvas_size=(h, w)),
            "labels": torch.tensor([i["label"] + 1 for i in insts], dtype=torch.int64),
            "image_label": torch.tensor(-1 if r.get("label") is None else r["label"]),
            "image_id": torch.tensor(index),
        }
        if self.crowds:
            target["iscrowd"] = torch.tensor([int(bool(i.get("crowd"))) for i in insts], dtype=torch.int64)
        if self.masks:
            pngs: dict = {}
            stack = [instance_mask(i["mask"], h, w, pngs) for i in insts]
            target["masks"] = tv_tensors.Mask(torch.from_numpy(np.stack(stack)) if stack else
                                              torch.zeros(0, h, w, dtype=torch.uint8))
        if self.transform is not None:
            img, target = self.transform(img, target)
        target = {k: v.as_subclass(torch.Tensor) for k, v in target.items()}
        return img.as_subclass(torch.Tensor), target

    @staticmethod
    def collate(batch):
        """A list of images (sizes differ) and a list of targets."""
        images, targets = zip(*batch, strict=True)
        return list(images), list(targets)


class ImageLabels(Dataset):
    """``(image, y)`` of an InstanceDataset's records with the evaluation transform: what the
    prior pass of the pretrained extractor reads (``collate``: a list of images, a label tensor)."""

    def __init__(self, dataset: InstanceDataset):
        self.dataset = dataset
        self.samples = [{"file": r["file"], "label": r["label"]} for r in dataset.records]
        self.transform = dataset.transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        img = self.dataset.image(index)
        if self.transform is not None:
            img = self.transform(tv_tensors.Image(img))
        return img.as_subclass(torch.Tensor), self.samples[index]["label"]

    @staticmethod
    def collate(batch):
        images, labels = zip(*batch, strict=True)
        return list(images), torch.tensor(labels, dtype=torch.int64)


def detection_transforms(hflip: bool) -> tuple[Callable, Callable]:
    """(train, eval): a horizontal flip of image, boxes and masks together for training; both end
    in float images in [0, 1]. The detector resizes and normalises itself."""
    to_float = v2.ToDtype(torch.float32, scale=True)
    train = v2.Compose([v2.RandomHorizontalFlip(0.5), to_float]) if hflip else to_float
    return train, to_float


def box_of_mask(mask: np.ndarray) -> list[float] | None:
    """[x1, y1, x2, y2] around a mask's pixels (pixel edges: x2 = last column + 1), None if empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
