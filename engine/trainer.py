"""The training Engine: forward, cross-entropy, the regularizers' terms, backward, step."""

from __future__ import annotations

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


def create_trainer(model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device) -> Engine:
    """An Ignite Engine whose step is: forward -> CE -> COMPUTE_LOSS -> backward -> step."""

    def train_step(engine: Engine, batch) -> StepState:
        model.train()
        x, y = batch
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        logits, features = model(x)
        step = StepState(x=x, y=y, logits=logits, features=features)
        step.losses["ce"] = F.cross_entropy(logits, y)
        engine.state.step = step
        engine.fire_event(TrainEvents.COMPUTE_LOSS)
        loss = torch.stack([t.float() for t in step.losses.values()]).sum()
        loss.backward()
        optimizer.step()
        step.loss = loss.detach()
        return step

    trainer = Engine(train_step)
    trainer.register_events(*TrainEvents)
    trainer.state.step = None
    return trainer
