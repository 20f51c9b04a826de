"""The task seam: what differs between classification and detection, and nothing else.

A task supplies the model, the train step's forward pass and loss terms, the evaluator's metrics
and the metric that selects the checkpoint. The trainer and its ``COMPUTE_LOSS`` event, the
regularizers, the prior pass, checkpoints and resume, logging and the command line are shared.

* ``metrics``: the evaluator's metric names (``results.json`` has ``val_<name>`` and ``test_<name>``);
* ``selection``: (metric, higher is better) in order of precedence: the best validation epoch is
  the first in this order, a tie in all of them going to the earlier epoch;
* ``create_model(cfg, data)`` -> (net, pretrained info): ``net.backbone`` maps images to g(x),
  ``net.head`` holds the new parameters;
* ``forward(model, batch, device, amp, channels_last)`` -> StepState with ``features`` (g(x)),
  ``y`` (a label per image) and the task's loss terms in ``losses``;
* ``create_evaluator(model, device, amp, channels_last)`` -> an Engine whose metrics are ``metrics``;
* ``summary(metrics)``: the validation part of the epoch line; ``best(metrics)`` its best so far.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.config import Config
from ..core.step import StepState, autocast, prepare_input
from ..models import create_model
from .evaluator import create_evaluator


@dataclass(frozen=True)
class Task:
    name: str
    metrics: tuple[str, ...]
    selection: tuple[tuple[str, bool], ...]
    create_model: Callable
    forward: Callable
    create_evaluator: Callable
    summary: Callable[[dict], str]
    best: Callable[[dict], str]  # the best epoch's figure in the epoch line

    @property
    def primary(self) -> str:
        """The metric that selects first (accuracy, bbox_ap)."""
        return self.selection[0][0]

    def selection_key(self, metrics: dict) -> tuple[float, ...]:
        """Larger is better: each selection metric, negated where lower is better."""
        return tuple(float(metrics[m]) if higher else -float(metrics[m]) for m, higher in self.selection)


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
                      summary=classification_summary, best=lambda m: f"{100 * float(m['accuracy']):.2f} %")
