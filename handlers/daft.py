"""DAFT: BN conversion before fine-tuning and integrated linear probing (seed paper; SPEC §8).

(1) One pass over the training loader with the pretrained model in eval mode: every BatchNorm
normalises with its original running statistics (mu_s, var_s) while its input's batch mean mu_t and
unbiased variance var_t are recorded (averaged over batches). Then

    beta' = beta + gamma (mu_t - mu_s) / sqrt(var_s + eps),   gamma' = gamma sqrt(var_t + eps) / sqrt(var_s + eps)
    running_mean, running_var <- mu_t, var_t

which leaves the eval-mode function unchanged exactly. Fine-tuning then runs with BN in train mode.
(2) The new head starts at zero and trains at a much higher lr than the backbone
(``optim.head_lr_mult`` in the method's config, e.g. 100).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..core.errors import UserError
from .registry import Regularizer, register

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@torch.no_grad()
def convert_batchnorm(model: nn.Module, loader, device: torch.device) -> int:
    """Re-parameterise every BatchNorm of ``model`` to the statistics of ``loader``'s inputs; returns
    how many layers changed. The model's eval-mode output is unchanged."""
    bns = [m for m in model.modules() if isinstance(m, BATCH_NORMS)]
    sums = {m: [0, 0.0, 0.0] for m in bns}  # batches, sum of batch means, sum of batch variances

    def record(mod, inputs):
        x = inputs[0].transpose(0, 1).reshape(inputs[0].shape[1], -1).double()
        acc = sums[mod]
        acc[0] += 1
        acc[1] = acc[1] + x.mean(1)
        acc[2] = acc[2] + x.var(1, unbiased=True)

    hooks = [m.register_forward_pre_hook(record) for m in bns]
    was_training = model.training
    model.eval()
    try:
        for x, _ in loader:
            model(x.to(device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    for m in bns:
        n, mean_sum, var_sum = sums[m]
        if n == 0:
            continue
        mu_t, var_t = mean_sum / n, var_sum / n
        mu_s, var_s = m.running_mean.double(), m.running_var.double()
        gamma = m.weight.double() if m.affine else torch.ones_like(mu_s)
        beta = m.bias.double() if m.affine else torch.zeros_like(mu_s)
        scale_s = (var_s + m.eps).sqrt()
        if m.affine:
            m.bias.copy_(beta + gamma * (mu_t - mu_s) / scale_s)
            m.weight.copy_(gamma * (var_t + m.eps).sqrt() / scale_s)
        m.running_mean.copy_(mu_t)
        m.running_var.copy_(var_t)
    return sum(1 for m in bns if sums[m][0] > 0)


@dataclass(kw_only=True)
class DAFTParams:
    convert_bn: bool = True
    zero_head: bool = True


@register("daft")
class DAFT(Regularizer):
    Params = DAFTParams

    def __init__(self, params: DAFTParams, ctx):
        super().__init__(params, ctx)
        if params.convert_bn and not any(isinstance(m, BATCH_NORMS) for m in ctx.net.backbone.modules()):
            raise UserError("method.convert_bn: daft converts BatchNorm statistics, and this backbone has no BatchNorm "
                            "layer (a ViT?); set method.convert_bn: false for the integrated linear probing alone")
        if params.zero_head:
            with torch.no_grad():
                ctx.net.head.weight.zero_()
                ctx.net.head.bias.zero_()
        self.layers = 0

    def prepare(self) -> None:
        """The BN conversion (the converted statistics are in the model's checkpoint)."""
        if self.params.convert_bn:
            self.layers = convert_batchnorm(self.ctx.net.backbone, self.ctx.augmented_loader(), self.ctx.device)

    def state_dict(self) -> dict:
        return {"layers": self.layers}

    def load_state_dict(self, state: dict) -> None:
        self.layers = int(state["layers"])

    def report(self) -> dict:
        return {"bn_layers_converted": self.layers}
