"""UOT: fine-tuning jointly on the pre-training classes that unbalanced optimal transport finds
nearest to the target task (Liu et al., NeurIPS 2022; SPEC §8).

Selection, once before training (``select_source_classes``):

    m_s, m_t   class means of the pretrained features g(x) of every source class s and every
               target class t (``adarand.methods.statistics.class_statistics``)
    M_st     = (1 - cos(m_s, m_t)) / p_m
    T        = unbalanced Sinkhorn plan between marginals of ones (entropic reg eps, KL penalties
               reg_source on the source side and reg_target on the target side; POT's
               ``ot.unbalanced.sinkhorn_knopp_unbalanced``)
    score_s  = sum_t T_st;  the ``select_classes`` source classes of highest score are kept

Training: each step takes the target batch and mu B images of the selected source classes through
the backbone (one forward pass); a new source head h_s (N(0, 0.01^2), bias 0) reads their
features (``UOT``):

    L = CE(target head, target rows) + lambda_u * CE(h_s, source rows)

h_s covers every source class and each source image keeps its original label, as the published
code's ``fc_up`` (1,000 outputs on ImageNet): its softmax has S terms, though only the selected
classes' images reach it (``source_head: all``, the default). ``source_head: selected`` gives a
head over the k selected classes only (labels 0 .. k - 1 in the order of selection), for a source
label set too large to hold a head over (ImageNet-21k's 21,843 classes: 2048 x 21,843 weights
with their Adam moments are 0.5 GiB).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

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
    select_classes: int = field(default=100, metadata={"range": ">= 1"})  # source classes kept by the selection
    lam: float = field(default=1.0, metadata={"key": "lambda", "range": ">= 0"})  # lambda_u (published supervised script: 0.3)
    source_ratio: float = field(default=1.0, metadata={"range": "> 0"})  # mu: mu x B source images per step
    p_m: float = field(default=0.1, metadata={"range": "> 0"})  # the cost's scale: M = (1 - cos) / p_m
    eps: float = field(default=1.0, metadata={"range": "> 0"})  # the Sinkhorn iterations' entropic regularisation
    reg_source: float = field(default=1.0, metadata={"range": "> 0"})  # the KL penalty on the source marginal
    reg_target: float = field(default=100.0, metadata={"range": "> 0"})  # the KL penalty on the target marginal
    source_head: Literal["all", "selected"] = "all"  # all: the published fc_up, one output per source class


class UOT(Method):
    """UOT's source term: ``lambda_u * CE(h_s(g(x_s)), y_s)`` over the source rows of the step, with
    a new source head h_s. With ``source_head="all"`` (the default, the published code's) h_s has
    one output per source class and ``y_s`` is each image's original source label; with
    ``"selected"`` it has ``select_classes`` outputs and ``y_s`` is the class's place in the
    selection (``head_labels`` maps either way). ``terms`` takes the *source* rows' features
    and labels.

        chosen, _ = select_source_classes(source_means, target_means, k=100, p_m=0.1, eps=1.0,
                                          reg_source=1.0, reg_target=100.0)
        reg = UOT(feature_dim, source_classes=1000, selected=chosen, lam=1.0)
        _, f = model(torch.cat([x, xs]))                 # target and source images, one pass
        loss = F.cross_entropy(logits[:len(x)], y) + reg(f[len(x):], reg.head_labels(ys))
    """

    Params = UOTParams

    def __init__(self, feature_dim: int, source_classes: int, *, selected: list[int] | None = None,
                 device: torch.device | str | None = None, params: UOTParams | None = None, **hyperparameters):
        super().__init__(params, **hyperparameters)
        if source_classes < self.params.select_classes:
            raise ValueError(f"{source_classes} source classes, fewer than select_classes ({self.params.select_classes})")
        self.source_classes = source_classes
        self.selected: list[int] = list(selected or [])
        outputs = source_classes if self.params.source_head == "all" else self.params.select_classes
        self.source_head = nn.Linear(feature_dim, outputs).to(device)
        nn.init.normal_(self.source_head.weight, std=0.01)  # a new head, as the target's: N(0, 0.01^2), bias 0
        nn.init.zeros_(self.source_head.bias)

    def head_labels(self, source_labels: torch.Tensor) -> torch.Tensor:
        """The source head's targets for images of original source labels ``source_labels`` (each
        from a selected class): the labels themselves for the all-classes head, their places in
        ``selected`` for the selected-classes head."""
        if self.params.source_head == "all":
            return source_labels
        place = torch.full((self.source_classes,), -1, dtype=torch.long)
        place[torch.tensor(self.selected, dtype=torch.long)] = torch.arange(len(self.selected))
        mapped = place.to(source_labels.device)[source_labels]
        if (mapped < 0).any():
            raise ValueError("a source label outside the selected classes")
        return mapped

    def parameter_groups(self, lr: float) -> list[dict]:
        """The source head, at ``lr`` (the engine gives the head's: lr x head_lr_mult)."""
        return [{"params": list(self.source_head.parameters()), "lr": lr, "name": "source_head"}]

    def terms(self, features, labels, *, logits=None, images=None) -> dict[str, torch.Tensor]:
        return {"uot_source": self.params.lam * F.cross_entropy(self.source_head(features), labels)}

    def state_dict(self) -> dict:
        return {"source_head": self.source_head.state_dict(), "selected": list(self.selected)}

    def load_state_dict(self, state: dict) -> None:
        self.source_head.load_state_dict(state["source_head"])
        self.selected = [int(s) for s in state.get("selected", self.selected)]
