"""DAFT in the engine: ``adarand.methods.zero_head`` when the run is built and
``adarand.methods.convert_batchnorm`` before the first epoch, on augmented training batches seeded
by the run seed (the converted statistics are in the model's checkpoint). The head's higher
learning rate is ``optim.head_lr_mult`` in the method's config (e.g. 100)."""

from __future__ import annotations

from ..core.errors import UserError
from ..methods.preparations import BATCH_NORMS, DAFTParams, convert_batchnorm, has_batchnorm, zero_head  # noqa: F401
from .registry import Regularizer, register


@register("daft")
class DAFT(Regularizer):
    Params = DAFTParams

    def __init__(self, params: DAFTParams, ctx):
        super().__init__(params, ctx)
        if params.convert_bn and not has_batchnorm(ctx.net.backbone):
            raise UserError("method.convert_bn: daft converts BatchNorm statistics, and this backbone has no BatchNorm "
                            "layer (a ViT?); set method.convert_bn: false for the integrated linear probing alone")
        if params.zero_head:
            zero_head(ctx.net.head)
        self.layers = 0

    def prepare(self) -> None:
        """The BN conversion."""
        if self.params.convert_bn:
            self.layers = convert_batchnorm(self.ctx.net.backbone, self.ctx.augmented_loader(), self.ctx.device)

    def state_dict(self) -> dict:
        return {"layers": self.layers}

    def load_state_dict(self, state: dict) -> None:
        self.layers = int(state["layers"])

    def report(self) -> dict:
        return {"bn_layers_converted": self.layers}
