"""The classification task: ``(logits, features)`` models, the cross-entropy, accuracy and loss,
selection on the best validation accuracy with ties to the lower loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.config import Config
from ..core.step import StepState, autocast, prepare_input
from ..datasets import create_datasets
from ..datasets.transforms import InferenceTransform
from ..models import create_model
from .evaluator import create_evaluator
from .task import Task


def classification_forward(model, batch, device: torch.device, amp: str, channels_last: bool) -> StepState:
    """(logits, features) = model(x); loss term ``ce`` = cross-entropy of the logits."""
    x, y = batch
    x = prepare_input(x, device, channels_last)
    y = y.to(device, non_blocking=True)
    with autocast(device, amp):
        logits, features = model(x)
    logits, features = logits.float(), features.float()
    step = StepState(x=x, y=y, logits=logits, features=features)
    step.losses["ce"] = F.cross_entropy(logits, y)
    return step


def classification_model(cfg: Config, data):
    return create_model(cfg.model, data.num_classes, in_channels=1 if cfg.data.grayscale else 3,
                        image_size=cfg.data.image_size)


def classification_evaluator(model, device, amp="off", channels_last=False):
    return create_evaluator(model, device, amp, channels_last)


def classification_summary(m: dict) -> str:
    return f"val acc {100 * float(m['accuracy']):.2f} % loss {float(m['loss']):.4g}"


CLASSIFICATION = Task(name="classification", metrics=("accuracy", "loss"),
                      selection=(("accuracy", True), ("loss", False)), create_model=classification_model,
                      forward=classification_forward, create_evaluator=classification_evaluator,
                      summary=classification_summary, best=lambda m: f"{100 * float(m['accuracy']):.2f} %",
                      labels=(("accuracy", "accuracy (%)"), ("loss", "loss")), min_classes=2,
                      create_datasets=lambda cfg, progress=False: create_datasets(cfg.data, cfg.cache_dir, progress=progress),
                      inference_transform=lambda cfg: InferenceTransform(cfg.data))
