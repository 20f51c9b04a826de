"""The training Engine: forward, cross-entropy, the regularizers' terms, backward, step."""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from ignite.engine import Engine, EventEnum


class TrainEvents(EventEnum):
    """Fired inside the train step."""

    COMPUTE_LOSS = "compute_loss"  # after the forward pass and the CE; handlers add loss terms


@dataclass
class StepState:
    """What one train step knows; ``trainer.state.step`` during the step, ``state.output`` after.

    ``losses`` holds the terms of the network's loss (each already weighted); their sum is
    minimised. ``logs`` holds other per-iteration scalars to log (detached tensors).
    """

    x: torch.Tensor
    y: torch.Tensor
    logits: torch.Tensor
    features: torch.Tensor
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    logs: dict[str, torch.Tensor] = field(default_factory=dict)
    loss: torch.Tensor | None = None


AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, amp: str):
    """The forward pass's autocast context for ``amp`` (off | bf16 | fp16)."""
    dtype = AMP_DTYPES[amp]
    return torch.autocast(device_type=device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def prepare_input(x: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def create_trainer(model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
                   amp: str = "off", channels_last: bool = False) -> Engine:
    """An Ignite Engine whose step is: forward -> CE -> COMPUTE_LOSS -> backward -> step.

    With ``amp`` only the forward pass runs under autocast; the CE, the regularizers' terms
    (COMPUTE_LOSS handlers) and everything after the step run in float32. ``fp16`` scales the
    loss with a GradScaler (``trainer.state.grad_scaler``, saved in checkpoints)."""
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

    def train_step(engine: Engine, batch) -> StepState:
        if not model.training:  # back from an evaluation (cheaper than model.train() every step)
            model.train()
        x, y = batch
        x = prepare_input(x, device, channels_last)
        y = y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp):
            logits, features = model(x)
        logits, features = logits.float(), features.float()
        step = StepState(x=x, y=y, logits=logits, features=features)
        step.losses["ce"] = F.cross_entropy(logits, y)
        engine.state.step = step
        engine.fire_event(TrainEvents.COMPUTE_LOSS)
        loss = functools.reduce(operator.add, (t.float() for t in step.losses.values()))
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        step.loss = loss.detach()
        return step

    trainer = Engine(train_step)
    trainer.register_events(*TrainEvents)
    trainer.state.step = None
    trainer.state.grad_scaler = scaler
    return trainer
