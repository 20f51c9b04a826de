"""Preparations that transform the model before training: plain functions.

LP-FT (``linear_probe``): the new head starts from a multinomial logistic regression fitted on
the frozen pretrained features of the training split (eval transform), minimising
mean CE + weight_decay / 2 * ||W||^2 (bias not penalised) to convergence with full-batch L-BFGS.

DAFT (``convert_batchnorm``, ``zero_head``): (1) one pass over the training loader with the
pretrained model in eval mode: every BatchNorm normalises with its original running statistics
(mu_s, var_s) while its input's batch mean mu_t and unbiased variance var_t are recorded (averaged
over batches). Then

    beta' = beta + gamma (mu_t - mu_s) / sqrt(var_s + eps),   gamma' = gamma sqrt(var_t + eps) / sqrt(var_s + eps)
    running_mean, running_var <- mu_t, var_t

which leaves the eval-mode function unchanged exactly. Fine-tuning then runs with BN in train mode.
(2) The new head starts at zero and trains at a much higher lr than the backbone.

    linear_probe(model.backbone, model.head, eval_loader, num_classes)        # LP-FT
    convert_batchnorm(model.backbone, augmented_loader, device); zero_head(model.head)   # DAFT
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .statistics import extract_features


def fit_linear_probe(feats: torch.Tensor, labels: torch.Tensor, num_classes: int, weight_decay: float,
                     max_iter: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) minimising mean CE(x W^T + b, y) + weight_decay / 2 ||W||^2, in float64 (L-BFGS).

        w, b = fit_linear_probe(*extract_features(model.backbone, loader, device), num_classes, 1e-4)
    """
    x = feats.double()
    w = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, device=x.device, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-10, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w.t() + b, labels) + 0.5 * weight_decay * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def linear_probe(extractor: nn.Module, head: nn.Linear, loader, num_classes: int, weight_decay: float = 1e-4,
                 max_iter: int = 500, device: torch.device | None = None, amp: str = "off") -> None:
    """LP-FT's first stage: ``head`` (a Linear layer) set to the probe fitted on ``extractor``'s
    features over ``loader`` (``fit_linear_probe``).

        linear_probe(model.backbone, model.head, eval_loader, num_classes)
    """
    device = device or next(extractor.parameters()).device
    feats, labels = extract_features(extractor, loader, device, amp)
    w, b = fit_linear_probe(feats, labels, num_classes, weight_decay, max_iter)
    with torch.no_grad():
        head.weight.copy_(w.to(head.weight.dtype))
        head.bias.copy_(b.to(head.bias.dtype))


def has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, BATCH_NORMS) for m in module.modules())


@torch.no_grad()
def zero_head(head: nn.Linear) -> None:
    """DAFT's head: W = 0, b = 0.

        zero_head(model.head)
    """
    head.weight.zero_()
    head.bias.zero_()


BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@torch.no_grad()
def convert_batchnorm(model: nn.Module, loader, device: torch.device) -> int:
    """Re-parameterise every BatchNorm of ``model`` to the statistics of ``loader``'s inputs (the
    module docstring's beta', gamma'); returns how many layers changed. The model's eval-mode
    output is unchanged.

        convert_batchnorm(model.backbone, augmented_train_loader, torch.device("cpu"))
    """
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
class LPFTParams:
    # weight decay of the linear probe fitted before fine-tuning
    probe_weight_decay: float = field(default=1e-4, metadata={"range": ">= 0"})
    probe_max_iter: int = field(default=500, metadata={"range": ">= 1"})  # the linear probe's L-BFGS iterations at most


@dataclass(kw_only=True)
class DAFTParams:
    convert_bn: bool = True  # DAFT: BatchNorm layers reset to the target data's statistics
    zero_head: bool = True  # DAFT: the new head starts at zero
