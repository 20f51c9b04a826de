"""L2-SP in the engine: an adapter over ``adarand.methods.L2SP`` (the pretrained starting point is
rebuilt from the same weights when a run is resumed)."""

from __future__ import annotations

import warnings

from ..methods import l2sp
from ..methods.frozen import tensors_mib
from ..methods.l2sp import L2SPParams, l2sp_terms, sum_sq  # noqa: F401
from .registry import MethodAdapter, register


@register("l2sp")
class L2SP(MethodAdapter):
    """L2-SP: keep the backbone near its pretrained starting point, and the head small."""

    Params = L2SPParams
    tasks = ("classification", "detection")

    def __init__(self, params: L2SPParams, ctx):
        super().__init__(params, ctx)
        self.method = l2sp.L2SP(ctx.net.backbone, ctx.net.head, params=params)
        if ctx.cfg.optim.weight_decay:
            warnings.warn(f"l2sp: optim.weight_decay is {ctx.cfg.optim.weight_decay}; L2-SP is meant with 0",
                          stacklevel=2)

    def report(self) -> dict:
        return {"start_weights_mib": tensors_mib(*self.method.start)}

    def close(self) -> None:
        self.method.start = []
