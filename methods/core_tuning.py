"""Core-tuning: contrast-regularized fine-tuning (Zhang et al., NeurIPS 2021; SPEC §8).

From the batch's features g_i (the step's one forward pass) and one-hot labels y_i, 3B rows:

    originals       f_i = g_i                                      y_i
    hard negatives  f = (1 - l_i) g_i + l_i g_pi(i)                 mixed alike,  l_i = max(Beta(a, a), 0.8)
    hard positives  f = m_i g_p(i) + (1 - m_i) g_n(i)               mixed alike,  m_i ~ Beta(a, a)

with pi a random permutation, p(i) the least similar (cosine) other sample of i's class (i itself
when it has none) and n(i) the most similar sample of another class (i itself when there is none).
The loss replaces the cross-entropy:

    L = soft-label CE of the classifier over the 3B rows  +  eta * L_con

    L_con = sum_i l_i / #{i : P(i) non-empty},   l_i = -(1/3B) sum_{j in P(i)} (1 - p_ij) log p_ij,
    p_ij = exp(z_i . z_j / tau) / sum_{k != i} exp(z_i . z_k / tau),  z = h(f) (L2-normalised),

P(i) the other rows whose soft label is identical to row i's (0 when no row has one). The
projection head h (Linear d -> d, ReLU, Linear d -> 256, L2-normalise) trains at the backbone's lr
and is saved with the object's state. The published code's details are options: ``detach_originals`` (the
originals enter without gradient) and ``zero_index_as_none`` (its hard-positive search: the
argmin of the similarities masked to the class, index 0 read as "none found").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import Method

# ---------------------------------------------------------------------------------------------
# The formulas


def hard_pairs(features: torch.Tensor, labels: torch.Tensor, zero_index_as_none: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(p, n): p_i the index of the least similar (cosine) other sample of i's class, i if none;
    n_i the index of the most similar sample of another class, i if none.

    ``zero_index_as_none``: p as the published code finds it: the argmin over j of
    cos(g_i, g_j) * [y_j = y_i, j != i] (zeros elsewhere), the index 0 replaced by i."""
    b = features.shape[0]
    u = F.normalize(features.detach().float(), dim=1)
    cos = u @ u.t()
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(b, dtype=torch.bool, device=features.device)
    rows = torch.arange(b, device=features.device)
    if zero_index_as_none:
        p = (cos * (same & ~eye)).argmin(1)
        p = torch.where(p == 0, rows, p)
    else:
        positive = same & ~eye
        p = cos.masked_fill(~positive, float("inf")).argmin(1)
        p = torch.where(positive.any(1), p, rows)
    negative = ~same
    n = cos.masked_fill(~negative, float("-inf")).argmax(1)
    n = torch.where(negative.any(1), n, rows)
    return p, n


def mixed_rows(features: torch.Tensor, onehot: torch.Tensor, perm: torch.Tensor, lam_neg: torch.Tensor,
               lam_pos: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The B hard negatives and B hard positives (rows, soft labels), stacked: (2B, d), (2B, K).
    ``lam_neg``, ``lam_pos``: (B,) mixing weights (lam_neg already raised to its floor)."""
    ln, lp = lam_neg[:, None], lam_pos[:, None]
    negatives = (1 - ln) * features + ln * features[perm]
    negative_labels = (1 - ln) * onehot + ln * onehot[perm]
    positives = lp * features[p] + (1 - lp) * features[n]
    positive_labels = lp * onehot[p] + (1 - lp) * onehot[n]
    return torch.cat([negatives, positives]), torch.cat([negative_labels, positive_labels])


def soft_cross_entropy(logits: torch.Tensor, soft_labels: torch.Tensor) -> torch.Tensor:
    """(1/N) sum_i -sum_k y_ik log softmax(logits_i)_k."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return -(soft_labels * F.log_softmax(logits, dim=1)).sum(1).mean()


def focal_supcon(z: torch.Tensor, soft_labels: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
    """L_con of the module docstring. Positives: rows with an identical soft-label vector (found
    with ``torch.unique(dim=0)``, exact equality)."""
    count = z.shape[0]
    _, group = torch.unique(soft_labels, dim=0, return_inverse=True)
    eye = torch.eye(count, dtype=torch.bool, device=z.device)
    positive = (group[:, None] == group[None, :]) & ~eye
    z = z.to(torch.promote_types(z.dtype, torch.float32))  # float32 at least (float64 stays)
    logits = (z @ z.t()) / tau
    log_p = logits - torch.logsumexp(logits.masked_fill(eye, float("-inf")), dim=1, keepdim=True)
    terms = torch.where(positive, (1 - log_p.exp()) * log_p, torch.zeros_like(log_p))
    per_row = -terms.sum(1) / count
    anchors = positive.any(1).sum()
    return per_row.sum() / anchors.clamp(min=1)


def projection_head(d: int, dim: int) -> nn.Module:
    """h: Linear d -> d, ReLU, Linear d -> dim (the L2 normalisation follows in the loss)."""
    return nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, dim))


# ---------------------------------------------------------------------------------------------
# The object


@dataclass(kw_only=True)
class CoreTuningParams:
    eta: float = field(default=0.1, metadata={"range": ">= 0"})  # the published README's command (its script: 10)
    alpha: float = field(default=1.0, metadata={"range": "> 0"})  # Beta(alpha, alpha) of the mixing weights
    negative_floor: float = field(default=0.8, metadata={"range": "[0, 1]"})  # hard negatives' weights raised to it
    tau: float = field(default=0.07, metadata={"range": "> 0"})  # the contrastive loss's temperature
    contrast_dim: int = field(default=256, metadata={"range": ">= 1"})  # the projection head's output dimension
    detach_originals: bool = False  # the published code: only the mixed rows train the backbone
    zero_index_as_none: bool = False  # the published code's hard-positive search


class CoreTuning(Method):
    """Core-tuning: the soft-label cross-entropy over the batch and its hard negative and hard
    positive mixtures, plus eta times a focal supervised contrastive loss on a projection head
    (module docstring). It replaces the cross-entropy: its terms are ``ce`` and ``contrast``.
    ``head``: the classifier (features -> logits); ``rng``: the numpy generator of the mixing
    draws (a seed or a ``numpy.random.Generator``).

        reg = CoreTuning(model.head, feature_dim, num_classes, rng=0, eta=0.1)
        optimizer.add_param_group(*reg.parameter_groups(lr))     # the projection head trains too
        loss = reg(features, y, logits=logits)                    # no cross-entropy of your own
    """

    Params = CoreTuningParams
    replaces_cross_entropy = True

    def __init__(self, head: nn.Module, feature_dim: int, num_classes: int, rng: int | np.random.Generator = 0, *,
                 params: CoreTuningParams | None = None, **hyperparameters):
        super().__init__(params, **hyperparameters)
        self.head, self.num_classes = head, num_classes
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self.projection = projection_head(feature_dim, self.params.contrast_dim).to(next(head.parameters()).device)

    def parameter_groups(self, lr: float) -> list[dict]:
        return [{"params": list(self.projection.parameters()), "lr": lr, "name": "projection"}]

    def mixing_weights(self, b: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(perm, lam_neg, lam_pos) for a batch of ``b``, drawn on the host and copied to ``device``."""
        a = self.params.alpha
        perm = self.rng.permutation(b)
        lam_neg = np.maximum(self.rng.beta(a, a, b), self.params.negative_floor)
        lam_pos = self.rng.beta(a, a, b)
        return (torch.as_tensor(perm).to(device, non_blocking=True),
                torch.as_tensor(lam_neg, dtype=torch.float32).to(device, non_blocking=True),
                torch.as_tensor(lam_pos, dtype=torch.float32).to(device, non_blocking=True))

    def terms(self, features, labels, *, logits=None, images=None) -> dict[str, torch.Tensor]:
        q, g = self.params, features
        onehot = F.one_hot(labels, self.num_classes).float()
        perm, lam_neg, lam_pos = self.mixing_weights(g.shape[0], g.device)
        p, n = hard_pairs(g, labels, q.zero_index_as_none)
        originals = g.detach() if q.detach_originals else g
        mixed, mixed_labels = mixed_rows(g, onehot, perm, lam_neg, lam_pos, p, n)
        rows, soft = torch.cat([originals, mixed]), torch.cat([onehot, mixed_labels])
        first = self.head(originals) if q.detach_originals or logits is None else logits
        z = F.normalize(self.projection(rows), dim=1)
        return {"ce": soft_cross_entropy(torch.cat([first, self.head(mixed)]), soft),
                "contrast": q.eta * focal_supcon(z, soft, q.tau)}

    def state_dict(self) -> dict:
        return {"projection": self.projection.state_dict(), "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.projection.load_state_dict(state["projection"])
        self.rng.bit_generator.state = state["rng"]
