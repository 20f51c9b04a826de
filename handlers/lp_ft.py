"""LP-FT in the engine: ``adarand.methods.linear_probe`` before the first epoch (the head it sets is
in the model's checkpoint)."""

from __future__ import annotations

from ..methods.preparations import LPFTParams, fit_linear_probe, linear_probe  # noqa: F401
from .registry import Regularizer, register


@register("lp_ft")
class LPFT(Regularizer):
    Params = LPFTParams

    def prepare(self) -> None:
        """The probe: the new head's starting point."""
        ctx = self.ctx
        linear_probe(ctx.net.backbone, ctx.net.head, ctx.feature_loader(), ctx.data.num_classes,
                     self.params.probe_weight_decay, self.params.probe_max_iter, ctx.device, ctx.cfg.train.amp)
