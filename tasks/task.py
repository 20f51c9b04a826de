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
* ``summary(metrics)``: the validation part of the epoch line; ``best(metrics)`` its best so far;
* ``test_features``: whether the run keeps g(x) of test images with a label each (Figure 3);
* ``create_datasets(cfg, progress)`` -> the run's DataSplits; ``min_classes`` the fewest classes
  it trains on; ``inference_transform(cfg)`` one image -> the model's input (``adarand.load_model``);
* ``labels``: each metric's name in tables and figures (``accuracy (%)``, ``bbox AP``), and
  ``grad_norm_label`` what the gradient-norm diagnostic measures on this task.

``tasks/__init__.py`` names the tasks (``task:``); each lives in a module of its own
(``classification.py``, ``detection.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


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
    test_features: bool = True
    create_datasets: Callable | None = None
    inference_transform: Callable | None = None
    min_classes: int = 1
    labels: tuple[tuple[str, str], ...] = ()
    grad_norm_label: str = "gradient norm ‖∇_W ℓ‖²"

    def label(self, metric: str) -> str:
        """The metric's name in tables and figures (its unit included)."""
        return dict(self.labels).get(metric, metric)

    @property
    def primary(self) -> str:
        """The metric that selects first (accuracy, bbox_ap)."""
        return self.selection[0][0]

    def selection_key(self, metrics: dict) -> tuple[float, ...]:
        """Larger is better: each selection metric, negated where lower is better."""
        return tuple(float(metrics[m]) if higher else -float(metrics[m]) for m, higher in self.selection)
