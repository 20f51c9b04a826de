"""The training Engine: forward, cross-entropy, the regularizers' terms, backward, step."""

from __future__ import annotations

import functools
import operator

import torch
import torch.nn.functional as F
from ignite.engine import Engine

from ..core.step import StepState, TrainEvents, autocast, prepare_input


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
