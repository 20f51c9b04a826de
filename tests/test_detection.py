"""Detection (task: detection): the VOC and COCO readers, the image-level label, COCO AP on a
hand-worked case, AdaRand's updates on detection features, methods refused on detection, and a
resumed detection run against an uninterrupted one."""

import contextlib
import io
import json
import math
from pathlib import Path

import ignite.distributed as idist
import numpy as np
import pytest
import torch
from PIL import Image

from adarand.core.errors import ConfigError, UserError
from adarand.datasets.detection.coco_instances import read_coco_split
from adarand.datasets.detection.instances import InstanceDataset, box_of_mask, detection_transforms, image_label
from adarand.datasets.detection.voc_instances import read_voc_split
from adarand.engine.config import load_config
from adarand.experiments import evaluation, report
from adarand.handlers.adarand import ema_class_means, prior_loss, prior_lr_factor
from adarand.tasks.detection import AveragePrecision

from conftest import REPO, run_entry, run_main

PALETTE = [0, 0, 0] * 256


def write_voc(root, objects: np.ndarray, classes: np.ndarray, image_id="2007_000001"):
    for sub in ("ImageSets/Segmentation", "JPEGImages", "SegmentationObject", "SegmentationClass"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text(image_id + "\n")
    Image.fromarray(np.zeros((*objects.shape, 3), np.uint8)).save(root / "JPEGImages" / f"{image_id}.jpg")
    for arr, sub in ((objects, "SegmentationObject"), (classes, "SegmentationClass")):
        img = Image.fromarray(arr.astype(np.uint8), mode="P")
        img.putpalette(PALETTE)
        img.save(root / sub / f"{image_id}.png")


def test_voc_reader_instances_classes_by_majority_void_ignored_boxes(tmp_path):
    objects = np.zeros((12, 16), np.uint8)
    classes = np.zeros((12, 16), np.uint8)
    objects[1:5, 2:8] = 1  # instance 1: 4 x 6 = 24 pixels
    classes[1:5, 2:8] = 3
    classes[1, 2:5] = 9  # 3 of its pixels say class 9: the majority (21) says 3
    objects[6:11, 9:12] = 2  # instance 2: 5 x 3
    classes[6:11, 9:12] = 255  # its class map is void except one column
    classes[6:11, 11] = 7
    objects[0, :] = 255  # a void border row, no instance
    objects[5, 2:8] = 255
    write_voc(tmp_path, objects, classes)
    (record,) = read_voc_split(tmp_path, "train")
    a, b = record["instances"]
    assert (a["label"], a["area"], a["box"]) == (2, 24.0, [2.0, 1.0, 8.0, 5.0])  # class 3 is index 2
    assert (b["label"], b["area"], b["box"]) == (6, 15.0, [9.0, 6.0, 12.0, 11.0])  # void votes left out
    assert (record["height"], record["width"]) == (12, 16)
    # the dataset's masks are the instances' pixels; labels 1-based for the detector
    _, target = InstanceDataset([{**record, "label": 2}])[0]
    assert target["labels"].tolist() == [3, 7]
    assert target["masks"][0].bool().equal(torch.from_numpy(objects == 1))
    assert target["masks"][1].sum() == 15


def test_the_training_flip_moves_image_boxes_and_masks_together(tmp_path):
    objects = np.zeros((12, 16), np.uint8)
    objects[2:6, 1:5] = 1
    objects[7:11, 10:15] = 2
    classes = np.where(objects > 0, objects + 2, 0).astype(np.uint8)
    write_voc(tmp_path, objects, classes)
    (record,) = read_voc_split(tmp_path, "train")
    image = np.zeros((12, 16, 3), np.uint8)
    image[2:6, 1:5] = 255  # the first instance's pixels are white in the image
    Image.fromarray(image).save(record["file"].replace(".jpg", ".png"))
    record = {**record, "file": record["file"].replace(".jpg", ".png"), "label": 2}
    train, _ = detection_transforms(hflip=True)
    flipped = 0
    for seed in range(8):
        torch.manual_seed(seed)
        img, target = InstanceDataset([record], train)[0]
        for box, mask in zip(target["boxes"].tolist(), target["masks"].numpy(), strict=True):
            assert box == box_of_mask(mask)  # the boxes follow the masks
        white = (img[0] > 0.5).numpy()
        assert np.array_equal(white, target["masks"][0].numpy().astype(bool))  # the masks follow the image
        flipped += target["boxes"][0, 0].item() == 16 - 5
    assert 0 < flipped < 8  # a coin per image


def test_voc_reader_names_the_missing_files(tmp_path):
    with pytest.raises(UserError, match=r"ImageSets/Segmentation/train.txt not found .*SegmentationObject"):
        read_voc_split(tmp_path, "train")


def write_coco(root, split, annotations, images=None):
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / split).mkdir(exist_ok=True)
    images = images or [{"id": 7, "file_name": "a.png", "height": 8, "width": 8}]
    for img in images:
        Image.fromarray(np.zeros((img["height"], img["width"], 3), np.uint8)).save(root / split / img["file_name"])
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(
        {"images": images, "annotations": annotations,
         "categories": [{"id": 5, "name": "cat"}, {"id": 2, "name": "dog"}]}))


def test_coco_reader_polygon_and_rle(tmp_path):
    polygon = {"id": 1, "image_id": 7, "category_id": 5, "bbox": [1, 1, 4, 4], "iscrowd": 0,
               "segmentation": [[1, 1, 5, 1, 5, 5, 1, 5]]}
    # uncompressed RLE, column-major over an 8 x 8 image: 10 off, 3 on (column 1, rows 2-4), the rest off
    rle = {"id": 2, "image_id": 7, "category_id": 2, "bbox": [1, 2, 1, 3], "iscrowd": 0, "area": 3,
           "segmentation": {"size": [8, 8], "counts": [10, 3, 51]}}
    crowd = {**rle, "id": 3, "iscrowd": 1}
    write_coco(tmp_path, "train", [polygon, rle, crowd])
    records, classes = read_coco_split(tmp_path, "train")
    assert classes == ["dog", "cat"]  # in the order of the category ids
    (r,) = records
    assert [(i["label"], i.get("crowd", False)) for i in r["instances"]] == [(1, False), (0, False), (0, True)]
    assert r["instances"][0]["box"] == [1.0, 1.0, 5.0, 5.0]
    _, target = InstanceDataset([{**r, "label": 1}])[0]  # training: the crowd region left out
    assert target["labels"].tolist() == [2, 1] and "iscrowd" not in target
    _, evaluated = InstanceDataset([{**r, "label": 1}], crowds=True)[0]  # evaluation: kept, marked
    assert evaluated["labels"].tolist() == [2, 1, 1] and evaluated["iscrowd"].tolist() == [0, 0, 1]
    expected_rle = torch.zeros(8, 8, dtype=torch.bool)
    expected_rle[2:5, 1] = True
    assert target["masks"][1].bool().equal(expected_rle)
    poly = target["masks"][0].bool()
    assert poly[2:5, 2:5].all() and not poly[6:].any() and not poly[:, 6:].any()  # inside the square, nothing beyond


def test_coco_reader_names_a_bad_annotation(tmp_path):
    bad = {"id": 41, "image_id": 7, "category_id": 5, "bbox": [1, 1, 0, 4], "segmentation": [[1, 1, 5, 1, 5, 5]]}
    write_coco(tmp_path, "train", [bad])
    with pytest.raises(UserError, match=r"instances_train.json: annotation 41: bbox .* positive width"):
        read_coco_split(tmp_path, "train")
    write_coco(tmp_path, "train", [{**bad, "bbox": [1, 1, 2, 2], "category_id": 9}])
    with pytest.raises(UserError, match="annotation 41: category_id 9"):
        read_coco_split(tmp_path, "train")
    write_coco(tmp_path, "train", [{**bad, "bbox": [1, 1, 2, 2], "segmentation": [[1, 1, 5, 1, 5, 5, 3]]}])
    with pytest.raises(UserError, match="annotation 41: polygon 0 has an odd number of coordinates \\(7\\)"):
        read_coco_split(tmp_path, "train")
    path = tmp_path / "annotations" / "instances_train.json"
    data = json.loads(path.read_text())
    data["categories"].append({"name": "no_id"})
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"instances_train.json: category entry \d+ \(.*no_id.*\) has no id$"):
        read_coco_split(tmp_path, "train")


def test_image_label_rules():
    def inst(label, area):
        return {"label": label, "area": area}

    insts = [inst(0, 10), inst(0, 10), inst(2, 50), inst(1, 5)]
    assert image_label(insts, "largest") == 2
    assert image_label(insts, "majority") == 0
    # a tie in counts goes to the larger total area, then to the lower class index
    assert image_label([inst(3, 10), inst(1, 4), inst(1, 5)] + [inst(3, 1)], "majority") == 3
    assert image_label([inst(3, 5), inst(1, 5)], "majority") == 1
    assert image_label([], "largest") is None


def coco_ap(scores_tp: list[bool], n_gt: int) -> float:
    """COCO's 101-point interpolated AP of detections sorted by score (True: a match)."""
    tp = np.cumsum(scores_tp)
    precision = tp / np.arange(1, len(scores_tp) + 1)
    recall = tp / n_gt
    for i in range(len(precision) - 2, -1, -1):  # precision made monotone from the right
        precision[i] = max(precision[i], precision[i + 1])
    points = []
    for r in np.linspace(0, 1, 101):
        above = np.nonzero(recall >= r - 1e-12)[0]
        points.append(precision[above[0]] if len(above) else 0.0)
    return float(np.mean(points))


def test_average_precision_on_a_hand_worked_case():
    """Two ground-truth boxes: a perfect match (score 0.9), its duplicate (0.8, a false positive),
    and a box over the second at IoU 0.625 (0.7): a match at IoU thresholds 0.50-0.60 only."""
    gt = {"boxes": torch.tensor([[0.0, 0, 10, 10], [20.0, 20, 30, 30]]), "labels": torch.tensor([1, 1])}
    det = {"boxes": torch.tensor([[0.0, 0, 10, 10], [0.0, 0, 10, 10], [20.0, 20, 30, 26.25]]),
           "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([1, 1, 1])}
    metric = AveragePrecision(masks=False)
    metric.update(([det], [gt]))
    out = metric.compute()
    matched, missed = coco_ap([True, False, True], 2), coco_ap([True, False, False], 2)
    assert matched == pytest.approx((51 + 50 * 2 / 3) / 101) and missed == pytest.approx(51 / 101)
    assert out["bbox_ap50"] == pytest.approx(matched, abs=1e-6)
    assert out["bbox_ap75"] == pytest.approx(missed, abs=1e-6)
    assert out["bbox_ap"] == pytest.approx((3 * matched + 7 * missed) / 10, abs=1e-6)
    metric.reset()
    metric.update(([{**det, "boxes": det["boxes"][:1], "scores": det["scores"][:1], "labels": det["labels"][:1]}],
                   [{"boxes": gt["boxes"][:1], "labels": gt["labels"][:1]}]))
    assert metric.compute()["bbox_ap"] == pytest.approx(1.0)


def demo_detection_config(cache_dir, *extra):
    return load_config(REPO / "yaml" / "demo_detection_adarand.yaml",
                       [f"cache_dir={cache_dir}", "data.use_ratio=0.2", "train.progress=false", "train.epochs=2",
                        "diagnostics.max_samples=20", *extra])


def test_adarand_updates_on_detection_features_equal_the_formulas(cache_dir):
    """One step of the detection trainer with AdaRand: mu_bar and mu after it are the EMA and the
    Adam step of the classification code applied to the step's own features and labels."""
    from ignite.engine import Events

    from adarand.engine.build import build_run

    run = build_run(demo_detection_config(cache_dir))
    run.regularizer.prepare()
    run.regularizer.attach(run.trainer)
    reg = run.regularizer
    mu0, mu_bar0 = reg.mu.detach().clone(), reg.mu_bar.clone()
    seen = {}

    @run.trainer.on(Events.ITERATION_COMPLETED)
    def keep(engine):
        seen["features"], seen["y"] = engine.state.output.features.detach().clone(), engine.state.output.y.clone()
        engine.terminate()

    run.trainer.run(run.loaders.train, max_epochs=1)
    assert seen["features"].shape == (run.cfg.data.batch_size, run.net.feature_dim)
    mu_bar = ema_class_means(mu_bar0, seen["features"], seen["y"], 0.5)
    assert torch.allclose(reg.mu_bar, mu_bar, atol=1e-6)
    mu = mu0.clone().requires_grad_(True)  # Adam's first step: mu - lr * g / (|g| + eps), elementwise
    prior_loss(mu, mu_bar)[0].backward()
    lr = run.cfg.method.params.prior_lr * prior_lr_factor("published", 0, run.ctx.total_iterations)
    expected = mu0 - lr * mu.grad / (mu.grad.abs() + 1e-8)
    assert torch.allclose(reg.mu.detach(), expected, atol=1e-6)
    # the priors are the pretrained backbone's class means of g(x) over the training images
    assert reg.mu.shape == (3, run.net.feature_dim) and torch.isfinite(reg.mu).all()
    # their cache key follows the detector's resizing (g(x) depends on it; the weights do not say it)
    key = run.ctx.features_key(run.net.backbone)
    other = build_run(demo_detection_config(cache_dir, "detection.min_size=48"))
    assert other.ctx.features_key(other.net.backbone) != key


@pytest.mark.parametrize("method", ["co_tuning", "delta", "dr_tune", "daft", "lp_ft"])
def test_methods_that_need_a_classifier_stop_on_detection(method, cache_dir):
    with pytest.raises(ConfigError, match=f"method.name': {method} does not run on task: detection.*adarand"):
        demo_detection_config(cache_dir, f"method={{name: {method}}}")


def test_detection_data_on_a_classification_task_is_refused(cache_dir):
    with pytest.raises(ConfigError, match="data.name.: synthetic_shapes holds instance annotations, for task: detection"):
        demo_detection_config(cache_dir, "task=classification")


def test_a_resumed_detection_run_gives_the_uninterrupted_ap(tmp_path, cache_dir):
    common = ["demo_detection_adarand", f"cache_dir={cache_dir}", "data.use_ratio=0.2", "train.epochs=2",
              "train.progress=false", "diagnostics.max_samples=20"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    r = run_main(*common, "--output", whole)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "test bbox AP: " in r.stdout and "mask AP: " in r.stdout
    r = run_main(*common, "train.stop_after=1", "--output", parts)
    assert r.returncode == 0 and not (parts / "results.json").exists(), r.stderr[-3000:]
    r = run_main(*common, "--resume", parts)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = (json.loads((d / "results.json").read_text()) for d in (whole, parts))
    for key in ("val_bbox_ap", "val_mask_ap", "test_bbox_ap", "test_mask_ap", "test_bbox_ap50", "test_mask_ap75"):
        assert a[key] == b[key] and math.isfinite(a[key]), key
    assert a["task"] == "detection" and a["metric"] == "bbox_ap" and 0.0 <= a["test_bbox_ap"] <= 1.0
    # adarand-eval scores the selected model as the run did; adarand-table reports AP
    r = run_entry(evaluation.main, str(whole))
    assert r.returncode == 0, r.stderr
    evaluated = json.loads((whole / "eval_test.json").read_text())
    assert evaluated["bbox_ap"] == a["test_bbox_ap"] and evaluated["mask_ap"] == a["test_mask_ap"]
    assert set(evaluated["bbox_ap_per_class"]) <= {"triangle", "disk", "diamond"}
    r = run_entry(report.main, str(whole))
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if line.startswith("| synthetic_shapes"))
    assert f"| {100 * a['test_bbox_ap']:.2f} | {100 * a['test_mask_ap']:.2f} | {100 * a['val_bbox_ap']:.2f} |" in row
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(whole))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("val/bbox_ap", "val/mask_ap", "val/bbox_ap50", "loss/mask", "loss/objectness", "loss/reg",
                "diagnostics/feature_norm", "diagnostics/grad_norm", "diagnostics/feature_entropy",
                "diagnostics/mutual_info", "ap/test_bbox", "ap/test_mask", "ap/best_val_bbox", "prior/ada"):
        assert tag in tags, (tag, sorted(tags))
    assert [e.value for e in events.Scalars("ap/test_bbox")] == pytest.approx([a["test_bbox_ap"]])
    rows = [line.split(",") for line in (whole / "epochs.csv").read_text().splitlines()]
    for column in ("loss_classifier", "loss_mask", "loss_reg", "feature_norm", "grad_norm", "feature_entropy",
                   "mutual_info", "val_bbox_ap", "val_mask_ap"):
        assert column in rows[0], column
    check_detection_export(whole, tmp_path)


def check_detection_export(run_dir, tmp_path):
    """adarand-export's ONNX file of a detection run: ONNX Runtime's detections are PyTorch's (1e-4),
    on an image of another size than the run's; load_model gives the detector in eval mode."""
    import onnxruntime as ort

    import adarand
    from adarand.experiments import export

    r = run_entry(export.main, str(run_dir), "--output", str(tmp_path / "det.onnx"))
    assert r.returncode == 0, r.stderr
    model, transform, classes, _, _ = adarand.load_model(run_dir)
    assert not model.training and classes == ["triangle", "disk", "diamond"]
    image = torch.rand(3, 72, 56, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = model([image])[0][0]
    session = ort.InferenceSession(str(tmp_path / "det.onnx"), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"image": image.numpy()}), strict=True))
    assert set(got) == {"boxes", "labels", "scores", "masks"}
    for key in got:
        assert got[key].shape == tuple(want[key].shape), key
        np.testing.assert_allclose(got[key], want[key].numpy(), atol=1e-4, rtol=0)
    assert run_entry(export.main, str(run_dir), "--format", "pt2").returncode == 2  # onnx only, one line
    check_coco_results_file(run_dir, tmp_path)


def check_coco_results_file(run_dir, tmp_path):
    """adarand-eval --predictions: a COCO results file that pycocotools' COCOeval scores to the
    project's own bbox and mask AP, with the dataset's own image and category ids."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    import adarand
    from adarand.datasets import create_datasets

    preds = tmp_path / "detections.json"
    r = run_entry(evaluation.main, str(run_dir), "--predictions", str(preds), "--output", str(tmp_path / "e.json"))
    assert r.returncode == 0, r.stderr
    ours = json.loads((tmp_path / "e.json").read_text())
    cfg = adarand.load_model(run_dir).config
    root = Path(create_datasets(cfg.data, cfg.cache_dir, detection=cfg.detection).root)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(root / "annotations" / "instances_test.json"))
        dt = gt.loadRes(str(preds))
        for kind, key in (("bbox", "bbox_ap"), ("segm", "mask_ap")):
            ev = COCOeval(gt, dt, kind)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            assert ev.stats[0] == pytest.approx(ours[key], abs=1e-6), kind
    assert {d["category_id"] for d in json.loads(preds.read_text())} <= set(gt.getCatIds())


def _priors_and_ap(local_rank, cache_dir, weights, out):
    from adarand.engine.build import build_run

    run = build_run(demo_detection_config(cache_dir))
    run.net.load_state_dict(torch.load(weights, weights_only=True))
    run.regularizer.prepare()
    run.val_evaluator.run(run.loaders.test)
    metrics = {k: float(run.val_evaluator.state.metrics[k]) for k in run.task.metrics}
    torch.save({"mu": run.regularizer.mu.detach(), "metrics": metrics, "world": idist.get_world_size(),
                "images": len(run.loaders.test.dataset)}, out.with_suffix(f".{local_rank}.pt"))


def test_two_gloo_processes_agree_with_one_on_the_priors_and_the_ap(tmp_path, cache_dir):
    """The priors (a pass over each process's shard, reduced) and the test AP (each process's
    detections gathered before COCO's evaluation) of two processes equal one process's."""
    from ignite.engine import Events

    from adarand.engine.build import build_run

    run = build_run(demo_detection_config(cache_dir))  # a model that has trained a few steps: AP above 0
    run.trainer.add_event_handler(Events.ITERATION_COMPLETED(once=4), lambda e: e.terminate())
    run.trainer.run(run.loaders.train, max_epochs=1)
    weights = tmp_path / "weights.pt"
    torch.save(run.net.state_dict(), weights)
    _priors_and_ap(0, cache_dir, weights, tmp_path / "one")
    with idist.Parallel(backend="gloo", nproc_per_node=2) as parallel:
        parallel.run(_priors_and_ap, cache_dir, weights, tmp_path / "two")
    one = torch.load(tmp_path / "one.0.pt", weights_only=True)
    ranks = [torch.load(tmp_path / f"two.{r}.pt", weights_only=True) for r in (0, 1)]
    assert one["world"] == 1 and [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["images"] + ranks[1]["images"] == one["images"]  # each its shard, no padding
    for r in ranks:
        assert torch.allclose(r["mu"], one["mu"], rtol=1e-5, atol=1e-6)
        assert r["metrics"] == pytest.approx(one["metrics"], abs=1e-9)
    assert one["metrics"]["bbox_ap50"] > 0.0


def test_a_corrupt_image_is_named_before_training(tmp_path):
    from adarand.core.config import DataConfig, DetectionConfig
    from adarand.datasets import create_datasets

    ann = {"id": 1, "image_id": 7, "category_id": 5, "bbox": [1, 1, 4, 4], "segmentation": [[1, 1, 5, 1, 5, 5, 1, 5]]}
    for split in ("train", "test"):
        write_coco(tmp_path, split, [ann])
    (tmp_path / "train" / "a.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match=r"data.root: 1 unreadable image\(s\): .*train/a.png"):
        create_datasets(DataConfig(name="coco", root=str(tmp_path), num_workers=0), str(tmp_path / "cache"),
                        detection=DetectionConfig())


def test_an_image_of_another_size_than_its_annotation_is_named_before_the_run(tmp_path):
    from adarand.engine.launch import train

    ann = {"id": 1, "image_id": 7, "category_id": 5, "bbox": [1, 1, 4, 4], "segmentation": [[1, 1, 5, 1, 5, 5, 1, 5]]}
    for split in ("train", "test"):
        write_coco(tmp_path, split, [ann])
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(tmp_path / "test" / "a.png")  # the JSON says 8 x 8
    cfg = tmp_path / "det.yaml"
    cfg.write_text(f"extends: [{REPO / 'yaml/demo_detection.yaml'}]\ndata: {{name: coco, root: '{tmp_path}'}}\n")
    out = tmp_path / "run"
    with pytest.raises(UserError, match=r"data.root: 1 image\(s\) of another size than their annotation says, "
                                        r"e.g. .*test/a.png: 10 x 8 pixels, its annotation 8 x 8"):
        train(cfg, [f"cache_dir={tmp_path / 'cache'}"], output=out, quiet=True)
    assert not out.exists()  # nothing of the run written


def test_without_masks_the_detector_is_faster_rcnn_scored_on_boxes(cache_dir):
    from adarand.engine.build import build_run

    run = build_run(demo_detection_config(cache_dir, "detection.masks=false"))
    assert run.net.head["roi_heads"].mask_head is None and run.task.metrics == ("bbox_ap", "bbox_ap50", "bbox_ap75")
    run.val_evaluator.run(run.loaders.val)
    metrics = run.val_evaluator.state.metrics["average_precision"]
    assert set(metrics) == {"bbox_ap", "bbox_ap50", "bbox_ap75"} and 0.0 <= metrics["bbox_ap"] <= 1.0
    _, target = run.data.train[0]
    assert "masks" not in target  # no mask is decoded


def test_the_detector_loads_its_backbone_from_a_weights_file_strictly(tmp_path, cache_dir):
    """A torchvision ResNet's weights file (classifier included) goes into the detector's backbone,
    BatchNorm statistics included; a file that misses backbone tensors stops with one line."""
    from types import SimpleNamespace

    import torchvision

    from adarand.tasks.detection import detection_model

    source = torchvision.models.resnet18(num_classes=1000)
    with torch.no_grad():
        source.bn1.running_var.uniform_(0.5, 2.0)
    state = source.state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "r18.pt")
    cfg = demo_detection_config(cache_dir, "model.arch=resnet18", f"model.pretrained={tmp_path / 'r18.pt'}",
                                "detection.min_size=64", "detection.max_size=64")
    net, info = detection_model(cfg, SimpleNamespace(num_classes=3))
    body = net.backbone.body
    assert torch.equal(body.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])
    assert torch.equal(body.bn1.running_var, state["bn1.running_var"]) and type(body.bn1).__name__ == "FrozenBatchNorm2d"
    assert info.source_head is not None and info.source_head["weight"].shape == (1000, 512)  # fc set apart
    assert not body.layer1[0].conv1.weight.requires_grad and body.layer2[0].conv1.weight.requires_grad  # 3 stages train
    partial = {k: v for k, v in state.items() if not k.startswith("layer4.")}
    torch.save(partial, tmp_path / "partial.pt")
    cfg = demo_detection_config(cache_dir, "model.arch=resnet18", f"model.pretrained={tmp_path / 'partial.pt'}")
    with pytest.raises(UserError, match="partial.pt: .* tensors matched; not found: layer4"):
        detection_model(cfg, SimpleNamespace(num_classes=3))


def cocoeval_ap(gts: list[dict], dets: list[dict], size=(200, 200)) -> float:
    """COCOeval's bbox AP (pycocotools, the reference papers report) of one image's detections."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO()
    gt.dataset = {"images": [{"id": 1, "height": size[0], "width": size[1]}], "categories": [{"id": 1, "name": "a"}],
                  "annotations": [{"id": i + 1, "image_id": 1, "category_id": 1, "bbox": g["bbox"],
                                   "area": g["bbox"][2] * g["bbox"][3], "iscrowd": g.get("iscrowd", 0)}
                                  for i, g in enumerate(gts)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes([{"image_id": 1, "category_id": 1, "bbox": d["bbox"], "score": d["score"]} for d in dets])
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


def project_ap(gts: list[dict], dets: list[dict]) -> float:
    from adarand.tasks.detection import AveragePrecision

    def xyxy(b):
        return [b[0], b[1], b[0] + b[2], b[1] + b[3]]

    metric = AveragePrecision(masks=False)
    target = {"boxes": torch.tensor([xyxy(g["bbox"]) for g in gts], dtype=torch.float32),
              "labels": torch.ones(len(gts), dtype=torch.int64),
              "iscrowd": torch.tensor([g.get("iscrowd", 0) for g in gts], dtype=torch.int64)}
    detection = {"boxes": torch.tensor([xyxy(d["bbox"]) for d in dets], dtype=torch.float32),
                 "scores": torch.tensor([d["score"] for d in dets]), "labels": torch.ones(len(dets), dtype=torch.int64)}
    metric.update(([detection], [target]))
    return metric.compute()["bbox_ap"]


def test_ap_is_cocoevals_at_a_threshold_where_float32_and_float64_disagree():
    """IoU exactly 0.55: a match at COCOeval's float64 threshold 0.55, none at float32's 0.550000012
    (AP 0.2 against 0.1)."""
    gts, dets = [{"bbox": [0, 0, 100, 100]}], [{"bbox": [0, 0, 100, 55], "score": 0.9}]
    reference = cocoeval_ap(gts, dets)
    assert reference == pytest.approx(0.2)
    assert project_ap(gts, dets) == pytest.approx(reference, abs=1e-6)  # torchmetrics returns float32


def test_a_detection_on_a_crowd_region_is_ignored_as_cocoeval_ignores_it():
    gts = [{"bbox": [10, 10, 50, 50]}, {"bbox": [120, 120, 60, 60], "iscrowd": 1}]
    dets = [{"bbox": [10, 10, 50, 50], "score": 0.9}, {"bbox": [125, 125, 40, 40], "score": 0.95}]
    reference = cocoeval_ap(gts, dets)
    assert reference == pytest.approx(1.0)  # every ground truth found; the crowd's detection ignored
    assert project_ap(gts, dets) == pytest.approx(reference, abs=1e-6)  # torchmetrics returns float32
