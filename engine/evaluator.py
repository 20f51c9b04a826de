"""The evaluation Engine: accuracy and cross-entropy of ``(logits, features)`` models."""

from __future__ import annotations

import torch
from ignite.engine import Engine
from ignite.metrics import Accuracy, Loss


def create_evaluator(model: torch.nn.Module, device: torch.device) -> Engine:
    @torch.no_grad()
    def eval_step(engine: Engine, batch):
        model.eval()
        x, y = batch
        logits, _ = model(x.to(device, non_blocking=True))
        return logits, y.to(device, non_blocking=True)

    evaluator = Engine(eval_step)
    Accuracy(device=device).attach(evaluator, "accuracy")
    Loss(torch.nn.CrossEntropyLoss(), device=device).attach(evaluator, "loss")
    return evaluator
