"""LP-FT: fit the linear head on frozen pretrained features first, then fine-tune everything.

The probe is a multinomial logistic regression on the training split's features (eval transform,
pretrained extractor), minimising mean CE + weight_decay / 2 * ||W||^2 (bias not penalised) to
convergence with full-batch L-BFGS; the new head starts from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .features import extract_features
from .registry import Regularizer, register


def fit_linear_probe(feats: torch.Tensor, labels: torch.Tensor, num_classes: int, weight_decay: float,
                     max_iter: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) minimising mean CE(x W^T + b, y) + weight_decay / 2 ||W||^2, in float64."""
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


@dataclass(kw_only=True)
class LPFTParams:
    probe_weight_decay: float = field(default=1e-4, metadata={"range": ">= 0"})
    probe_max_iter: int = field(default=500, metadata={"range": ">= 1"})


@register("lp_ft")
class LPFT(Regularizer):
    Params = LPFTParams

    def prepare(self) -> None:
        """The probe: the new head's starting point (the head itself is in the model's checkpoint)."""
        feats, labels = extract_features(self.ctx.net.backbone, self.ctx.feature_loader(), self.ctx.device,
                                         self.ctx.cfg.train.amp)
        w, b = fit_linear_probe(feats, labels, self.ctx.data.num_classes, self.params.probe_weight_decay,
                                self.params.probe_max_iter)
        head = self.ctx.net.head
        with torch.no_grad():
            head.weight.copy_(w.to(head.weight.dtype))
            head.bias.copy_(b.to(head.bias.dtype))
