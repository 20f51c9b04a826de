"""The train step's state and events, and the forward pass's precision and input layout."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from ignite.engine import EventEnum


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


AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, amp: str):
    """The forward pass's autocast context for ``amp`` (off | bf16 | fp16)."""
    dtype = AMP_DTYPES[amp]
    return torch.autocast(device_type=device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def to_device(data, device, non_blocking: bool = True):
    """``data`` on ``device``: a tensor, or the tensors in a list, tuple or dict of them."""
    if isinstance(data, torch.Tensor):
        return data.to(device, non_blocking=non_blocking)
    if isinstance(data, dict):
        return {k: to_device(v, device, non_blocking) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(to_device(v, device, non_blocking) for v in data)
    return data


def prepare_input(x: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x
