"""The detection task (SPEC §8b): Mask R-CNN on the pretrained backbone, its losses as the step's
loss terms, COCO's AP as the evaluator's metrics, selection on validation bbox AP, ties broken by
mask AP.

AP is COCO's: the mean over IoU thresholds 0.50:0.05:0.95 of the 101-point interpolated precision,
over classes (``bbox_ap``, ``mask_ap``), and at IoU 0.50 and 0.75 (``*_ap50``, ``*_ap75``),
computed by torchmetrics' ``MeanAveragePrecision`` (faster-coco-eval's COCOeval where installed,
else pycocotools'); several processes' detections are gathered before it is computed.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import torch
from ignite.engine import Engine
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced
from torchvision.transforms import v2

from ..core.config import Config
from ..core.step import StepState, autocast, to_device
from ..datasets import create_datasets
from ..models import create_model
from ..models.detection import build_detector
from .task import Task

AP_NAMES = {"ap": "map", "ap50": "map_50", "ap75": "map_75"}  # ours -> torchmetrics' suffix
# COCOeval's thresholds, in float64 as it builds them (torchmetrics' defaults are float32: 0.550000012, ...)
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True).tolist()
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True).tolist()


def ap_backend() -> str:
    return "faster_coco_eval" if importlib.util.find_spec("faster_coco_eval") else "pycocotools"


def map_inputs(detections: list[dict], targets: list[dict], masks: bool) -> tuple[list[dict], list[dict]]:
    """torchmetrics' inputs: boxes, scores and labels, and boolean masks (Mask R-CNN's soft masks
    at 0.5, as torchvision's references do)."""
    preds, gts = [], []
    for d, t in zip(detections, targets, strict=True):
        p = {"boxes": d["boxes"].float(), "scores": d["scores"].float(), "labels": d["labels"]}
        g = {"boxes": t["boxes"].float(), "labels": t["labels"]}
        if "iscrowd" in t:  # COCO's crowd regions: a detection they cover is ignored, not a false positive
            g["iscrowd"] = t["iscrowd"]
        if masks:
            p["masks"] = d["masks"][:, 0] > 0.5
            g["masks"] = t["masks"].bool()
        preds.append(p)
        gts.append(g)
    return preds, gts


class AveragePrecision(Metric):
    """bbox AP (and mask AP) of an epoch's detections, as an Ignite metric over torchmetrics'
    ``MeanAveragePrecision``. ``compute`` gives ``{bbox_ap, bbox_ap50, bbox_ap75[, mask_ap, ...]}``."""

    def __init__(self, masks: bool, device: str = "cpu", per_class: bool = False):
        from torchmetrics.detection import MeanAveragePrecision

        self.masks = masks
        self.per_class = per_class
        self.map = MeanAveragePrecision(iou_type=("bbox", "segm") if masks else "bbox", backend=ap_backend(),
                                        class_metrics=per_class, iou_thresholds=IOU_THRESHOLDS,
                                        rec_thresholds=RECALL_THRESHOLDS)
        super().__init__(device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self.map.reset()

    @reinit__is_reduced
    def update(self, output) -> None:
        detections, targets = output
        preds, gts = map_inputs(detections, targets, self.masks)
        self.map.update([to_device(p, "cpu") for p in preds], [to_device(g, "cpu") for g in gts])

    def compute(self) -> dict:
        """The AP figures; with ``per_class`` also ``{kind}_ap_per_class``: {1-based label: AP}."""
        # several processes: torchmetrics gathers every process's detections and targets (its states)
        # over torch.distributed before computing
        result = self.map.compute()
        out = {}
        for kind, prefix in (("bbox", "bbox"), ("mask", "segm")):
            if kind == "mask" and not self.masks:
                continue
            name = (lambda theirs, prefix=prefix: f"{prefix}_{theirs}") if self.masks else (lambda theirs: theirs)
            for ours, theirs in AP_NAMES.items():
                out[f"{kind}_{ours}"] = float(result[name(theirs)])
            if self.per_class:
                labels = result["classes"].reshape(-1).tolist()
                values = result[name("map_per_class")].reshape(-1).tolist()
                out[f"{kind}_ap_per_class"] = dict(zip(labels, values, strict=True))
        return out


def detection_forward(model, batch, device: torch.device, amp: str, channels_last: bool) -> StepState:
    """Mask R-CNN's losses (``loss_classifier``, ``loss_box_reg``, ``loss_objectness``,
    ``loss_rpn_box_reg``, ``loss_mask``) as the loss terms; g(x) and the image labels y for the
    regularizers."""
    images, targets = batch
    images = [to_device(img, device) for img in images]
    targets = [to_device(t, device) for t in targets]
    with autocast(device, amp):
        losses, g, probe = model(images, targets)
    y = torch.stack([t["image_label"] for t in targets])
    step = StepState(x=images, y=y, logits=None, features=g.float(), grad_probe=probe)
    step.losses.update({name.removeprefix("loss_"): value.float() for name, value in losses.items()})
    return step


def create_detection_evaluator(model, device: torch.device, amp: str = "off", channels_last: bool = False,
                               masks: bool = True, per_class: bool = False) -> Engine:
    @torch.no_grad()
    def eval_step(engine: Engine, batch):
        model.eval()
        images, targets = batch
        with autocast(device, amp):
            detections, _ = model([to_device(img, device) for img in images])
        return detections, targets

    evaluator = Engine(eval_step)
    AveragePrecision(masks, per_class=per_class).attach(evaluator, "average_precision")
    return evaluator


def detection_model(cfg: Config, data):
    """The detector on the backbone of ``model.arch``, its pretrained weights loaded as for
    classification (``model.pretrained``), then frozen BatchNorm, the FPN and Mask R-CNN's heads."""
    classifier, info = create_model(cfg.model, data.num_classes, image_size=max(64, cfg.detection.min_size // 4))
    return build_detector(classifier, cfg.model.arch, data.num_classes, cfg.detection, cfg.data.mean,
                          cfg.data.std), info


def detection_summary(m: dict) -> str:
    text = f"val bbox AP {100 * float(m['bbox_ap']):.2f}"
    return text + (f" mask AP {100 * float(m['mask_ap']):.2f}" if "mask_ap" in m else "")


def detection_labels() -> tuple[tuple[str, str], ...]:
    """bbox AP, bbox AP50, ..., mask AP75: COCO's AP in points."""
    return tuple((f"{k}_{n}", f"{k} {n.replace('ap', 'AP')}") for k in ("bbox", "mask") for n in AP_NAMES)


def detection_task(cfg: Config | None = None, masks: bool | None = None) -> Task:
    """Detection as ``cfg`` sets it (or with ``masks`` given: the task of a finished run, for its labels)."""
    masks = cfg.detection.masks if masks is None else masks
    kinds = ("bbox", "mask") if masks else ("bbox",)
    metrics = tuple(f"{k}_{n}" for k in kinds for n in AP_NAMES)
    return Task(name="detection", metrics=metrics, selection=tuple((f"{k}_ap", True) for k in kinds),
                create_model=detection_model, forward=detection_forward,
                create_evaluator=lambda model, device, amp="off", channels_last=False: create_detection_evaluator(
                    model, device, amp, channels_last, masks),
                summary=detection_summary, best=lambda m: f"bbox AP {100 * float(m['bbox_ap']):.2f}",
                test_features=False, labels=detection_labels(),
                create_datasets=lambda cfg, progress=False: create_datasets(cfg.data, cfg.cache_dir, progress=progress,
                                                                            detection=cfg.detection),
                # the detector resizes and normalises inside: one image -> float in [0, 1]
                inference_transform=lambda cfg: v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]),
                grad_norm_label="gradient norm into C5 ‖∂ℓ/∂C5‖²")
