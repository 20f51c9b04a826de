"""The training Engine: forward, the task's loss terms, the regularizers' terms, backward, step."""

from __future__ import annotations

import functools
import operator

import torch
from ignite.engine import Engine

from ..core.step import StepState, TrainEvents
from ..tasks.classification import classification_forward


def create_trainer(model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
                   amp: str = "off", channels_last: bool = False, forward=classification_forward) -> Engine:
    """An Ignite Engine whose step is: forward and the task's loss terms -> COMPUTE_LOSS ->
    backward -> step.

    ``forward(model, batch, device, amp, channels_last)`` is the task's (``tasks/task.py``): the
    forward pass and its loss terms (classification: the CE) in a StepState. With ``amp`` only the
    forward pass runs under autocast; the task's and the regularizers' terms (COMPUTE_LOSS handlers)
    and everything after the step run in float32. ``fp16`` scales the loss with a GradScaler
    (``trainer.state.grad_scaler``, saved in checkpoints)."""
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

    def train_step(engine: Engine, batch) -> StepState:
        if not model.training:  # back from an evaluation (cheaper than model.train() every step)
            model.train()
        optimizer.zero_grad(set_to_none=True)
        step = forward(model, batch, device, amp, channels_last)
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
