"""The train step's state and events (the precision helpers live in ``precision.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from ignite.engine import EventEnum

from .precision import AMP_DTYPES, autocast, prepare_input, to_device  # noqa: F401 (the step's helpers, by their old names)


class TrainEvents(EventEnum):
    """Fired inside the train step (see ``engine/trainer.py``):

    forward -> CE -> COMPUTE_LOSS -> backward -> optimizer step -> ITERATION_COMPLETED
    """

    COMPUTE_LOSS = "compute_loss"  # after the forward pass and the CE; handlers add loss terms


@dataclass
class StepState:
    """What one train step knows; ``trainer.state.step`` during the step, ``state.output`` after.

    ``losses`` holds the terms of the network's loss (each already weighted); their sum is
    minimised. ``logs`` holds other per-iteration scalars to log (detached tensors).
    """

    x: torch.Tensor | list[torch.Tensor]  # a batch of images (detection: a list, sizes differ)
    y: torch.Tensor  # a label per image (detection: the image-level label)
    logits: torch.Tensor | None  # None where the task has no image-level classifier (detection)
    features: torch.Tensor  # g(x), B x d
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    logs: dict[str, torch.Tensor] = field(default_factory=dict)
    loss: torch.Tensor | None = None
    # detection: the gradient the task's losses send into the backbone's last stage, read in the
    # backward pass (models.detection.GradientProbe), the gradient-norm diagnostic
    grad_probe: object | None = None
