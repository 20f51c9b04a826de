"""A trained model out of a run folder, ready to use: ``adarand.load_model(run)``.

    model, transform, classes = adarand.load_model("runs/demo")
    logits, features = model(transform("digit.png").unsqueeze(0))
    classes[logits.argmax(1).item()]

The model is the run's selected one (``checkpoints/best_model_<epoch>.pt``, or a checkpoint file
named directly), built from the run's ``config.yaml`` without its pretrained weights and loaded
with ``torch.load(..., weights_only=True)``, in eval mode. A classification model returns
``(logits, features)``; a detection model is torchvision's detector (a list of images in, a list
of detections out). The transform takes a path, a PIL image or a uint8 tensor and applies the
run's evaluation preprocessing (``adarand.datasets.transforms.InferenceTransform``); a
detection model normalises inside, and its transform only decodes and scales to [0, 1].
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

import torch

from ..core.config import Config
from ..core.errors import UserError
from ..tasks import get_task
from .checkpoints import BEST_PREFIX, CHECKPOINTS, last_checkpoints, read_checkpoint
from .config import load_config


def locate(path: Path) -> tuple[Path, Path]:
    """(run folder, model file) of a run folder or of a checkpoint file inside one."""
    if path.is_file():
        run_dir = path.parent.parent if path.parent.name == CHECKPOINTS else path.parent
        return run_dir, path
    if not (path / "config.yaml").is_file():
        raise UserError(f"{path}: not a run folder (no config.yaml) nor a checkpoint file")
    lasts = last_checkpoints(path)
    if lasts:  # the selected model the newest last checkpoint names
        state = read_checkpoint(lasts[-1], ("best_checkpoint",))
        names = [name for _, name in state["best_checkpoint"]["_saved"]]
        if names:
            return path, path / CHECKPOINTS / names[-1]
    found = sorted((path / CHECKPOINTS).glob(f"{BEST_PREFIX}_*.pt"))
    if len(found) != 1:
        raise UserError(f"{path}: expected one {CHECKPOINTS}/{BEST_PREFIX}_model_*.pt, found {len(found)}; "
                        "name the checkpoint file instead")
    return path, found[0]


def model_weights(file: Path) -> dict:
    """The model's state dict from a best model file or a training checkpoint."""
    state = read_checkpoint(file)
    state = state.get("model", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{file}: holds no model weights (expected a best_model_*.pt or a last_checkpoint_*.pt)")
    return state


class TrainedModel(NamedTuple):
    model: torch.nn.Module
    transform: object
    classes: list[str]
    config: Config
    checkpoint: Path


def run_classes(run_dir: Path, cfg: Config) -> list[str]:
    """The class names: from ``results.json`` (written by every finished run), else from the dataset."""
    results = run_dir / "results.json"
    if results.is_file():
        classes = json.loads(results.read_text()).get("classes")
        if classes:
            return list(classes)
    return get_task(cfg).create_datasets(cfg).classes


def load_model(run: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
    """The selected model of ``run`` (a run folder, or a checkpoint file in one) in eval mode on
    ``device``, its preprocessing transform, its class names, its config and the weights file read.
    Raises ``UserError`` (one line) for a folder that holds no run or weights that do not fit."""
    run_dir, weights = locate(Path(run))
    cfg = load_config(run_dir / "config.yaml")
    cfg.model = dataclasses.replace(cfg.model, pretrained=None)  # the run's own weights replace them all
    classes = run_classes(run_dir, cfg)
    task = get_task(cfg)
    net, _ = task.create_model(cfg, SimpleNamespace(num_classes=len(classes), classes=classes))
    transform = task.inference_transform(cfg)
    state = model_weights(weights)
    if not any(k.startswith("source_head.") for k in net.state_dict()):  # Co-Tuning's, not used to predict
        state = {k: v for k, v in state.items() if not k.startswith("source_head.")}
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"{weights}: does not fit the run's model ({str(e).splitlines()[0]})") from None
    return TrainedModel(net.to(device).eval(), transform, classes, cfg, weights)
