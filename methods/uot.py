"""UOT: fine-tuning jointly on the pre-training classes that unbalanced optimal transport finds
nearest to the target task (Liu et al., NeurIPS 2022; SPEC §8).

Selection, once before training (:func:`select_source_classes`):

    m_s, m_t   class means of the pretrained features g(x) of every source class s and every
               target class t (:func:`~adarand.methods.statistics.class_statistics`)
    M_st     = (1 - cos(m_s, m_t)) / p_m
    T        = unbalanced Sinkhorn plan between marginals of ones (entropic reg eps, KL penalties
               reg_source on the source side and reg_target on the target side; POT's
               ``ot.unbalanced.sinkhorn_knopp_unbalanced``)
    score_s  = sum_t T_st;  the ``select_classes`` source classes of highest score are kept

Training: each step takes the target batch and mu B images of the selected source classes through
the backbone (one forward pass); a new source head h_s (N(0, 0.01^2), bias 0) reads their
features (:class:`UOT`):

    L = CE(target head, target rows) + lambda_u * CE(h_s, source rows)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import Method


def cosine_cost(source_means: np.ndarray, target_means: np.ndarray, p_m: float) -> np.ndarray:
    """M_st = (1 - cos(m_s, m_t)) / p_m, shape (S, T)."""
    s = source_means / np.linalg.norm(source_means, axis=1, keepdims=True)
    t = target_means / np.linalg.norm(target_means, axis=1, keepdims=True)
    return (1.0 - s @ t.T) / p_m


def unbalanced_plan(cost: np.ndarray, eps: float, reg_source: float, reg_target: float) -> np.ndarray:
    """The entropic unbalanced OT plan between marginals of ones (POT)."""
    import ot

    a, b = np.ones(cost.shape[0]), np.ones(cost.shape[1])
    return ot.unbalanced.sinkhorn_knopp_unbalanced(a, b, cost, eps, (reg_source, reg_target), numItermax=10_000,
                                                   stopThr=1e-9)


def top_classes(scores, k: int) -> list[int]:
    """The k classes of highest score, highest first (a tie to the lower index)."""
    return sorted(range(len(scores)), key=lambda s: (-scores[s], s))[:k]


def select_source_classes(source_means: np.ndarray, target_means: np.ndarray, k: int, p_m: float, eps: float,
                          reg_source: float, reg_target: float) -> tuple[list[int], np.ndarray]:
    """(the k source classes of highest score sum_t T_st, highest first; every class's score), T the
    unbalanced plan for the cost M_st = (1 - cos(m_s, m_t)) / p_m.

        chosen, scores = select_source_classes(source_means, target_means, 100, 0.1, 1.0, 1.0, 100.0)
    """
    scores = unbalanced_plan(cosine_cost(source_means, target_means, p_m), eps, reg_source, reg_target).sum(1)
    return top_classes(scores, k), scores


@dataclass(kw_only=True)
class UOTParams:
    select_classes: int = field(default=100, metadata={"range": ">= 1"})
    lam: float = field(default=1.0, metadata={"key": "lambda", "range": ">= 0"})  # lambda_u (published supervised script: 0.3)
    source_ratio: float = field(default=1.0, metadata={"range": "> 0"})  # mu: mu x B source images per step
    p_m: float = field(default=0.1, metadata={"range": "> 0"})
    eps: float = field(default=1.0, metadata={"range": "> 0"})
    reg_source: float = field(default=1.0, metadata={"range": "> 0"})
    reg_target: float = field(default=100.0, metadata={"range": "> 0"})


class UOT(Method):
    """UOT's source term: ``lambda_u * CE(h_s(g(x_s)), y_s)`` over the source rows of the step, with
    a new source head h_s over the selected classes (labels 0 .. select_classes - 1 in the order
    of selection). ``terms`` takes the *source* rows' features and labels.

        chosen, _ = select_source_classes(source_means, target_means, k=100, p_m=0.1, eps=1.0,
                                          reg_source=1.0, reg_target=100.0)
        reg = UOT(feature_dim, select_classes=100, lam=1.0)
        _, f = model(torch.cat([x, xs]))                 # target and source images, one pass
        loss = F.cross_entropy(logits[:len(x)], y) + reg(f[len(x):], ys)
    """

    Params = UOTParams

    def __init__(self, feature_dim: int, *, device: torch.device | str | None = None, params: UOTParams | None = None,
                 **hyperparameters):
        super().__init__(params, **hyperparameters)
        self.source_head = nn.Linear(feature_dim, self.params.select_classes).to(device)
        nn.init.normal_(self.source_head.weight, std=0.01)  # a new head, as the target's: N(0, 0.01^2), bias 0
        nn.init.zeros_(self.source_head.bias)

    def parameter_groups(self, lr: float) -> list[dict]:
        """The source head, at ``lr`` (the engine gives the head's: lr x head_lr_mult)."""
        return [{"params": list(self.source_head.parameters()), "lr": lr, "name": "source_head"}]

    def terms(self, features, labels, *, logits=None, images=None) -> dict[str, torch.Tensor]:
        return {"uot_source": self.params.lam * F.cross_entropy(self.source_head(features), labels)}

    def state_dict(self) -> dict:
        return {"source_head": self.source_head.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.source_head.load_state_dict(state["source_head"])
