"""``adarand-eval``: a trained model on a split of its dataset, an image folder or an image list.

    adarand-eval RUN_OR_CHECKPOINT [--split test|val|train] [--folder DIR | --list FILE] [--output FILE.json]

RUN is a run folder (its selected model, ``checkpoints/best_model_<epoch>.pt``, is evaluated) or a
checkpoint file in one (a best model, or a last checkpoint's model). The run's ``config.yaml``
gives the backbone, the classes and the evaluation transform. The JSON written holds the
accuracy, each class's accuracy (recall) and the confusion matrix (rows: true class, columns:
predicted), with the class names; the per-class table is printed (worst class first), and
``--predictions FILE.csv`` writes each image's path, label, prediction and confidence.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import sys
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Events
from ignite.metrics import ConfusionMatrix
from torch.utils.data import DataLoader

from ..core.config import Config
from ..core.errors import UserError
from ..core.files import write_json_atomic, write_text_atomic
from ..datasets import create_datasets
from ..datasets.detection.coco_instances import coco_ids
from ..datasets.folder import scan_class_folders
from ..datasets.image_list import ImageList
from ..datasets.list_file import load_list
from ..datasets.transforms import eval_transform
from ..engine.config import load_config
from ..engine.trained import load_model, locate
from ..tasks.detection import create_detection_evaluator
from ..tasks.evaluator import create_evaluator


def samples_to_evaluate(cfg: Config, args: argparse.Namespace) -> tuple[ImageList, list[str], str]:
    """The images, the run's classes, and a name for what is evaluated."""
    data = create_datasets(cfg.data, cfg.cache_dir)
    transform = eval_transform(cfg.data)
    if args.folder:
        samples, _ = scan_class_folders(Path(args.folder), data.classes, key="--folder",
                                        layout="DIR/<class>/<image>, classes named as in training")
        return ImageList(samples, transform, cfg.data.grayscale, cfg.data.decoder), data.classes, str(args.folder)
    if args.list:
        samples = load_list(Path(args.list), data.classes, "--list")
        return ImageList(samples, transform, cfg.data.grayscale, cfg.data.decoder), data.classes, str(args.list)
    split = {"test": data.test, "val": data.val, "train": data.train_eval}[args.split]
    return split, data.classes, f"{args.split} split"


def evaluate(model: torch.nn.Module, dataset, num_classes: int, device: torch.device, batch_size: int,
             amp: str = "off") -> tuple[dict, list[tuple[int, int, float]]]:
    """Accuracy, per-class accuracy and confusion matrix (rows: true class) of ``model`` on
    ``dataset``, and each image's (label, prediction, confidence: the predicted class's softmax
    probability), in the dataset's order."""
    evaluator = create_evaluator(model, device, amp)
    ConfusionMatrix(num_classes, device=device).attach(evaluator, "confusion")
    predictions: list[tuple[int, int, float]] = []

    @evaluator.on(Events.ITERATION_COMPLETED)
    def keep(engine) -> None:
        logits, y = engine.state.output
        confidence, predicted = logits.float().softmax(1).max(1)
        predictions.extend(zip(y.tolist(), predicted.tolist(), confidence.tolist(), strict=True))

    evaluator.run(DataLoader(dataset, batch_size=batch_size, shuffle=False))
    cm = evaluator.state.metrics["confusion"].long().cpu()
    per_class = [float(cm[k, k] / cm[k].sum()) if cm[k].sum() > 0 else None for k in range(num_classes)]
    return {"accuracy": float(evaluator.state.metrics["accuracy"]), "loss": float(evaluator.state.metrics["loss"]),
            "images": int(cm.sum()), "per_class_accuracy": per_class, "confusion_matrix": cm.tolist()}, predictions


def coco_detections(detections: dict, image_id, category_ids: list[int]) -> list[dict]:
    """One image's detections as COCO results: ``image_id``, ``category_id`` (the dataset's own),
    ``bbox`` as [x, y, width, height], ``score`` and, with masks, ``segmentation`` as an RLE of the
    mask at 0.5 (what the AP is computed on)."""
    boxes = detections["boxes"].detach().cpu().double()
    out = []
    rles = None
    if "masks" in detections:
        from pycocotools import mask as coco_mask  # the detection extra's

        binary = (detections["masks"][:, 0] > 0.5).cpu().numpy().astype(np.uint8)
        rles = [coco_mask.encode(np.asfortranarray(m)) for m in binary]
    for k, (box, score, label) in enumerate(zip(boxes.tolist(), detections["scores"].tolist(),
                                               detections["labels"].tolist(), strict=True)):
        x1, y1, x2, y2 = box
        row = {"image_id": image_id, "category_id": category_ids[int(label) - 1],
               "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)}
        if rles is not None:
            row["segmentation"] = {"size": [int(v) for v in rles[k]["size"]], "counts": rles[k]["counts"].decode("ascii")}
        out.append(row)
    return out


def dataset_ids(data, records: list[dict]):
    """(image id of a record at an index, category ids by class): a COCO-format dataset's own ids;
    otherwise (VOC) the image's index in the split and the 1-based class index."""
    images, categories = coco_ids(Path(data.root)) if (Path(data.root) / "annotations").is_dir() else ({}, [])
    if images and len(categories) == len(data.classes):
        return (lambda i: images[records[i]["file"]]), categories
    return (lambda i: i), list(range(1, len(data.classes) + 1))


def evaluate_detection(cfg: Config, args: argparse.Namespace, weights: Path) -> tuple[dict, list[str], str]:
    """A detection run's model on a split of its dataset: COCO's AP (bbox and mask; IoU 0.50:0.95,
    0.50, 0.75) and each class's AP, the classes, and a name for what is evaluated. With
    ``--predictions FILE.json`` the detections are written as a COCO results file."""
    if args.folder or args.list:
        raise UserError("--folder and --list are for classification runs; a detection run evaluates a split of its "
                        "dataset (--split)")
    data = create_datasets(cfg.data, cfg.cache_dir, detection=cfg.detection)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = load_model(weights, device).model
    split = {"test": data.test, "val": data.val, "train": data.train}[args.split]
    if args.split == "train":  # without the training augmentation
        split = type(split)(split.records, data.test.transform, cfg.detection.masks, crowds=True)
    evaluator = create_detection_evaluator(net, device, masks=cfg.detection.masks, per_class=True)
    results: list[dict] = []
    if args.predictions:
        image_id, category_ids = dataset_ids(data, split.records)

        @evaluator.on(Events.ITERATION_COMPLETED)
        def keep(engine) -> None:
            for d, t in zip(*engine.state.output, strict=True):
                results.extend(coco_detections(d, image_id(int(t["image_id"])), category_ids))

    evaluator.run(DataLoader(split, batch_size=args.batch_size or cfg.data.eval_batch, collate_fn=split.collate))
    if args.predictions:
        write_text_atomic(Path(args.predictions), json.dumps(results))
    metrics = evaluator.state.metrics["average_precision"]
    result = {k: v for k, v in metrics.items() if not k.endswith("per_class")} | {"images": len(split)}
    for kind in ("bbox", "mask"):
        if f"{kind}_ap_per_class" in metrics:  # by class name (labels are 1-based)
            result[f"{kind}_ap_per_class"] = {data.classes[label - 1]: ap
                                              for label, ap in metrics[f"{kind}_ap_per_class"].items()}
    return result, data.classes, f"{args.split} split"


def per_class_ap_table(result: dict) -> str:
    """A line per class: its bbox AP (and mask AP), in points, worst bbox AP first (-1: no instance)."""
    bbox, mask = result["bbox_ap_per_class"], result.get("mask_ap_per_class", {})
    width = max(len("class"), *(len(name) for name in bbox))
    lines = [f"  {'class':<{width}}  bbox AP" + ("  mask AP" if mask else "")]
    for name in sorted(bbox, key=lambda n: (bbox[n], n)):
        lines.append(f"  {name:<{width}}  {100 * bbox[name]:7.2f}" + (f"  {100 * mask[name]:7.2f}" if mask else ""))
    return "\n".join(lines)


def per_class_table(classes: list[str], result: dict) -> str:
    """A line per class: its name, images, correct predictions and accuracy (worst first)."""
    cm = result["confusion_matrix"]
    rows = [(name, sum(cm[k]), cm[k][k]) for k, name in enumerate(classes)]
    width = max(len("class"), *(len(name) for name in classes))
    lines = [f"  {'class':<{width}}  images  correct  accuracy"]
    for name, n, correct in sorted(rows, key=lambda r: (r[2] / r[1] if r[1] else 2.0, r[0])):
        acc = f"{100 * correct / n:7.2f} %" if n else "      -  "
        lines.append(f"  {name:<{width}}  {n:6d}  {correct:7d}  {acc}")
    return "\n".join(lines)


def write_predictions(path: Path, samples: list, classes: list[str], predictions: list[tuple[int, int, float]]) -> None:
    """path,label,prediction,confidence per image (class names; the predicted class's probability)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["path", "label", "prediction", "confidence"])
    for (image, _), (label, predicted, confidence) in zip(samples, predictions, strict=True):
        w.writerow([image, classes[label], classes[predicted], f"{confidence:.6f}"])
    write_text_atomic(path, out.getvalue())


def build_parser() -> argparse.ArgumentParser:
    """adarand-eval's options (the command-line reference is generated from them)."""
    p = argparse.ArgumentParser(prog="adarand-eval", description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a run folder, or a checkpoint file in one")
    p.add_argument("--split", choices=["test", "val", "train"], default="test", help="a split of the run's dataset")
    p.add_argument("--folder", help="evaluate DIR/<class>/<image> instead (classes named as in training)")
    p.add_argument("--list", help="evaluate a file of path,label lines instead")
    p.add_argument("--output", help="the JSON to write (default: RUN/eval_<split|folder|list>.json)")
    p.add_argument("--batch-size", type=int, help="default: the run's evaluation batch size")
    p.add_argument("--predictions", metavar="FILE",
                   help="also write each image's path, label, prediction and confidence to this CSV (classification), "
                        "or the detections as a COCO results JSON (detection)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    try:
        run_dir, weights = locate(Path(args.run))
        cfg = load_config(run_dir / "config.yaml")
        # the architecture without its pretrained weights: the run's own weights replace them all
        cfg.model = dataclasses.replace(cfg.model, pretrained=None)
        return EVALUATIONS[cfg.task](cfg, args, run_dir, weights)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def evaluate_classification_run(cfg: Config, args: argparse.Namespace, run_dir: Path, weights: Path) -> int:
    data_items, classes, what = samples_to_evaluate(cfg, args)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = load_model(weights, device).model
    result, predictions = evaluate(net, data_items, len(classes), device, args.batch_size or cfg.data.eval_batch)
    kind = "folder" if args.folder else "list" if args.list else args.split
    out = Path(args.output) if args.output else run_dir / f"eval_{kind}.json"
    write_json_atomic(out, {"run": str(run_dir), "checkpoint": str(weights), "evaluated": what, "classes": classes,
                            **result})
    if args.predictions:
        write_predictions(Path(args.predictions), data_items.samples, classes, predictions)
    print(f"{what}: accuracy {100 * result['accuracy']:.2f} % on {result['images']} images; {out}")
    print("per class (worst first):\n" + per_class_table(classes, result))
    if args.predictions:
        print(f"predictions: {args.predictions}")
    return 0


def evaluate_detection_run(cfg: Config, args: argparse.Namespace, run_dir: Path, weights: Path) -> int:
    return report_detection(run_dir, weights, *evaluate_detection(cfg, args, weights), args)


def report_detection(run_dir: Path, weights: Path, result: dict, classes: list[str], what: str,
                     args: argparse.Namespace) -> int:
    out = Path(args.output) if args.output else run_dir / f"eval_{args.split}.json"
    write_json_atomic(out, {"run": str(run_dir), "checkpoint": str(weights), "evaluated": what, "classes": classes,
                            **result})
    figures = ", ".join(f"{kind} AP {100 * result[f'{kind}_ap']:.2f} (AP50 {100 * result[f'{kind}_ap50']:.2f}, "
                        f"AP75 {100 * result[f'{kind}_ap75']:.2f})" for kind in ("bbox", "mask") if f"{kind}_ap" in result)
    print(f"{what}: {figures} on {result['images']} images; {out}")
    print("per class (worst bbox AP first):\n" + per_class_ap_table(result))
    if args.predictions:
        print(f"predictions: {args.predictions} (a COCO results file: score it with COCOeval)")
    return 0


# what adarand-eval does with a run of each task (``task:``)
EVALUATIONS = {"classification": evaluate_classification_run, "detection": evaluate_detection_run}


if __name__ == "__main__":
    sys.exit(main())
