"""The evaluation Engine: accuracy and cross-entropy of ``(logits, features)`` models."""

from __future__ import annotations

import torch
from ignite.engine import Engine
from ignite.metrics import Accuracy, Loss

from .trainer import autocast, prepare_input


def create_evaluator(model: torch.nn.Module, device: torch.device, amp: str = "off",
                     channels_last: bool = False) -> Engine:
    @torch.no_grad()
    def eval_step(engine: Engine, batch):
        model.eval()
        x, y = batch
        with autocast(device, amp):
            logits, _ = model(prepare_input(x, device, channels_last))
        return logits.float(), y.to(device, non_blocking=True)

    evaluator = Engine(eval_step)
    Accuracy(device=device).attach(evaluator, "accuracy")
    Loss(torch.nn.CrossEntropyLoss(), device=device).attach(evaluator, "loss")
    return evaluator
