"""DR-Tune in the engine: an adapter over ``adarand.methods.DRTune`` (the formulas are there); the
banks are filled before training with augmented training batches seeded by the run seed."""

from __future__ import annotations

from ..core.errors import UserError
from ..methods import dr_tune
from ..methods.dr_tune import DRTuneParams, class_shift, procrustes_rotation, rescale_rows  # noqa: F401
from ..methods.frozen import module_mib, tensors_mib
from .registry import MethodAdapter, register


@register("dr_tune")
class DRTune(MethodAdapter):
    Params = DRTuneParams

    def __init__(self, params: DRTuneParams, ctx):
        super().__init__(params, ctx)
        b = ctx.cfg.data.batch_size
        if params.bank_size % b:
            raise UserError(f"method.bank_size: {params.bank_size} is not a multiple of data.batch_size {b}")
        self.method = dr_tune.DRTune(ctx.net.backbone, ctx.net.head, ctx.net.feature_dim, params=params)
        self.frozen_mib = module_mib(self.method.frozen)

    def prepare(self) -> None:
        """Fill both banks with pretrained features of augmented training batches."""
        self.method.fill(self.ctx.augmented_loader(drop_last=True), self.ctx.device)

    def report(self) -> dict:
        m = self.method
        return {"frozen_model_mib": self.frozen_mib, "bank_mib": tensors_mib(m.bank_p, m.bank_d, m.bank_y, m.rotation)}

    def close(self) -> None:
        self.method.frozen = None
