"""Core-tuning in the engine: an adapter over ``adarand.methods.CoreTuning`` (the formulas are
there). The mixing draws come from a numpy stream of its own per run seed and process (on the
host: no device read in the step), saved in checkpoints with the projection head."""

from __future__ import annotations

import numpy as np

from ..core.distributed import rank
from ..core.seeded import sample_seed
from ..methods import core_tuning
from ..methods.core_tuning import (  # noqa: F401
    CoreTuningParams,
    focal_supcon,
    hard_pairs,
    mixed_rows,
    projection_head,
    soft_cross_entropy,
)
from ..methods.frozen import average_gradients_across_processes, module_mib
from .registry import MethodAdapter, register


@register("core_tuning")
class CoreTuning(MethodAdapter):
    """Core-tuning: the soft-label cross-entropy over the batch and its hard negative and hard
    positive mixtures, plus eta times a focal supervised contrastive loss on a projection head."""

    Params = CoreTuningParams

    def __init__(self, params: CoreTuningParams, ctx):
        super().__init__(params, ctx)
        rng = np.random.default_rng(sample_seed(ctx.cfg.seed, -4, rank()))
        self.method = core_tuning.CoreTuning(ctx.net.head, ctx.net.feature_dim, ctx.data.num_classes, rng, params=params)
        average_gradients_across_processes(self.method.projection)

    def report(self) -> dict:
        return {"projection_head_mib": module_mib(self.projection)}
