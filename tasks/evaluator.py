"""The evaluation Engine: accuracy and cross-entropy of ``(logits, features)`` models."""

from __future__ import annotations

import torch
from ignite.engine import Engine
from ignite.metrics import Accuracy, Loss

from ..core.step import autocast, prepare_input


def create_evaluator(model: torch.nn.Module, device: torch.device, amp: str = "off",
                     channels_last: bool = False, classes: list[int] | None = None) -> Engine:
    """Accuracy and cross-entropy of the model's logits. ``classes``: a test set holding only these
    classes is scored over their logits alone (labels renumbered in that order)."""
    subset = torch.tensor(classes, device=device) if classes is not None else None
    position = None
    if subset is not None:  # training class index -> its position among ``classes``
        position = torch.full((int(subset.max()) + 1,), -1, dtype=torch.long, device=device)
        position[subset] = torch.arange(len(classes), device=device)

    @torch.no_grad()
    def eval_step(engine: Engine, batch):
        model.eval()
        x, y = batch
        with autocast(device, amp):
            logits, _ = model(prepare_input(x, device, channels_last))
        logits, y = logits.float(), y.to(device, non_blocking=True)
        if subset is not None:
            logits, y = logits.index_select(1, subset), position[y]
        return logits, y

    evaluator = Engine(eval_step)
    Accuracy(device=device).attach(evaluator, "accuracy")
    Loss(torch.nn.CrossEntropyLoss(), device=device).attach(evaluator, "loss")
    return evaluator
