"""Co-Tuning in the engine: an adapter over ``adarand.methods.CoTuning`` (the formulas are there).
The source head is the pretrained model's; the relationship comes from the run's cached pass."""

from __future__ import annotations

import torch
from torch import nn

from ..core.errors import UserError
from ..methods import co_tuning
from ..methods.co_tuning import CoTuningParams, relationship_from_statistics, soft_source_loss  # noqa: F401
from ..methods.frozen import average_gradients_across_processes, tensors_mib
from .registry import MethodAdapter, register


@register("co_tuning")
class CoTuning(MethodAdapter):
    Params = CoTuningParams

    def __init__(self, params: CoTuningParams, ctx):
        super().__init__(params, ctx)
        head = ctx.pretrained.source_head
        if head is None:
            raise UserError("method.name: co_tuning needs the pretrained model's source classifier, and "
                            f"model.pretrained ({ctx.cfg.model.pretrained}) provides none")
        source_head = nn.Linear(head["weight"].shape[1], head["weight"].shape[0]).to(ctx.device)
        source_head.load_state_dict(head)
        average_gradients_across_processes(source_head)
        relationship = torch.zeros(ctx.data.num_classes, head["weight"].shape[0], device=ctx.device)
        self.method = co_tuning.CoTuning(source_head, relationship, params=params)

    def prepare(self) -> None:
        """The relationship p(y_s | y_t) from the pretrained model."""
        # the pretrained extractor and source head (no copies: the pass runs without gradients)
        stats = self.ctx.class_statistics(co_tuning.source_softmax(self.ctx.net.backbone, self.source_head))
        self.method.relationship = relationship_from_statistics(stats.sums, stats.counts).to(self.ctx.device)

    def report(self) -> dict:
        return {"relationship_mib": tensors_mib(self.relationship),
                "source_head_mib": tensors_mib(*self.source_head.parameters())}
