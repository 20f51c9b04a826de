"""Random feature regularization: pull the features towards reference vectors z from a prior.

    L = CE + lambda * L_reg(g(x), z),  z detached, drawn fresh every iteration (SPEC §5)

| name               | z_i                                   |
|--------------------|---------------------------------------|
| ``fnp``            | 0 (feature norm penalty)              |
| ``randreg_uniform``| U(0, 1) per dimension                 |
| ``randreg_normal`` | N(0, I)                               |
| ``randreg_global`` | N(mu_s, diag sigma_s^2), class-agnostic statistics of the pretrained extractor |
| ``randreg_cp``     | N(mu_{y_i}, diag sigma_{y_i}^2), class statistics, never updated |

The statistics come from the run's shared prior-initialisation pass (one pass, cached on disk),
whichever method asks; AdaRand (``adarand.py``) extends ``randreg_cp`` with prior updates.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events

from ..engine.trainer import TrainEvents
from .priors import class_priors
from .registry import Regularizer, register


def sample_references(mu: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """z_i ~ N(mu[y_i], diag sigma[y_i]^2): standard normal draws scaled by sigma and shifted by mu,
    the numbers ``torch.normal(mean, std)`` gives (the same draws and operations; a test checks),
    without its check that every std is >= 0, which reads a value back to the host (on a GPU, a
    device synchronisation every iteration). The priors' sigma is >= ``sigma_floor`` > 0 by
    construction. The priors carry no autograd history (they are never leaves that require grad),
    so neither does z."""
    mean = mu.index_select(0, labels)
    return torch.randn_like(mean).mul_(sigma.index_select(0, labels)).add_(mean)


# The ATen kernel behind F.mse_loss, called directly: F.mse_loss adds a broadcast_tensors call and
# Python checks that cost more than the kernel itself on a small model (about 20 us a step in a
# CPU training step). tests/test_adarand_math.py checks it against F.mse_loss, value and gradient.
_mse_loss = getattr(torch._C._nn, "mse_loss", None)
_MEAN, _SUM = 1, 2  # torch.nn._reduction.get_enum("mean"), get_enum("sum")


def feature_regularizer(features: torch.Tensor, z: torch.Tensor, reduction: str) -> torch.Tensor:
    """``mean``: mean over samples and dims of (g - z)^2 (the published form);
    ``sum``: the per-sample squared norm ||g - z||^2, averaged over the batch (the written form).
    ``features`` and ``z`` have the same shape and dtype (float32 in the train step)."""
    if _mse_loss is not None:
        loss = _mse_loss(features, z, _MEAN if reduction == "mean" else _SUM)
    else:  # pragma: no cover - a torch build without the binding
        loss = F.mse_loss(features, z, reduction=reduction)
    return loss if reduction == "mean" else loss / features.shape[0]


@dataclass(kw_only=True)
class RandRegParams:
    lam: float = field(default=1.0, metadata={"key": "lambda"})
    reduction: Literal["mean", "sum"] = "mean"


@dataclass(kw_only=True)
class PriorParams(RandRegParams):
    sigma_floor: float = 1e-4  # smallest prior sigma (a class with one image has sigma = 0)

    def check(self):
        if self.sigma_floor <= 0:
            return "sigma_floor", "expected a positive number"
        return None


class FeatureTargetRegularizer(Regularizer):
    """Adds ``lambda * L_reg(features, sample(labels, features))`` to the loss."""

    Params = RandRegParams

    def attach(self, trainer: Engine) -> None:
        trainer.add_event_handler(TrainEvents.COMPUTE_LOSS, self.add_loss)

    def sample(self, labels: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def add_loss(self, engine: Engine) -> None:
        step = engine.state.step
        z = self.sample(step.y, step.features)  # features only for shape, dtype and device
        loss = feature_regularizer(step.features, z, self.params.reduction)
        step.losses["reg"] = loss if self.params.lam == 1.0 else self.params.lam * loss  # (one op less, twice)


@register("fnp")
class FeatureNormPenalty(FeatureTargetRegularizer):
    """z = 0: lambda * mean g^2 (``reduction: mean``)."""

    def sample(self, labels, features):
        return torch.zeros_like(features)


@register("randreg_uniform")
class RandRegUniform(FeatureTargetRegularizer):
    def sample(self, labels, features):
        return torch.rand_like(features)


@register("randreg_normal")
class RandRegNormal(FeatureTargetRegularizer):
    def sample(self, labels, features):
        return torch.randn_like(features)


class StatisticsPrior(FeatureTargetRegularizer):
    """A Gaussian prior per row of ``mu``/``sigma`` (K rows, or one), initialised at the start of
    training from the pretrained extractor's statistics; saved in checkpoints."""

    Params = PriorParams
    rows_per_class = True

    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        k = ctx.data.num_classes if self.rows_per_class else 1
        d, dev = ctx.net.feature_dim, ctx.device
        self.mu = torch.zeros(k, d, device=dev)
        self.sigma = torch.ones(k, d, device=dev)
        self.initialized = False

    def attach(self, trainer: Engine) -> None:
        trainer.add_event_handler(Events.STARTED, self.initialize)
        super().attach(trainer)

    def priors_from_statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        stats = self.ctx.class_statistics()
        if self.rows_per_class:
            return class_priors(stats, self.params.sigma_floor, self.ctx.data.classes)
        sigma = stats.global_var.sqrt()
        if bool((sigma < self.params.sigma_floor).any()):
            warnings.warn(f"prior statistics: class-agnostic sigma below {self.params.sigma_floor:g} in "
                          f"{int((sigma < self.params.sigma_floor).sum())} dims; clamped", stacklevel=2)
        return stats.global_mean.float()[None], sigma.clamp(min=self.params.sigma_floor).float()[None]

    def initialize(self, engine: Engine | None = None) -> None:
        """Priors from the pretrained extractor's statistics (skipped when resumed)."""
        if self.initialized:
            return
        mu, sigma = self.priors_from_statistics()
        self.set_priors(mu.to(self.ctx.device), sigma.to(self.ctx.device))
        self.initialized = True

    def set_priors(self, mu: torch.Tensor, sigma: torch.Tensor) -> None:
        self.mu, self.sigma = mu, sigma

    def sample(self, labels, features):
        rows = labels if self.rows_per_class else torch.zeros_like(labels)
        return sample_references(self.mu, self.sigma, rows)

    def state_dict(self) -> dict:
        return {"mu": self.mu.detach().clone(), "sigma": self.sigma.clone(), "initialized": self.initialized}

    def load_state_dict(self, state: dict) -> None:
        dev = self.ctx.device
        self.set_priors(state["mu"].to(dev), state["sigma"].to(dev))
        self.initialized = bool(state["initialized"])

    def report(self) -> dict:
        return {"prior_cache_hit": self.ctx.prior_cache_hit}


@register("randreg_global")
class RandRegGlobal(StatisticsPrior):
    """z ~ N(mu_s, diag sigma_s^2): the class-agnostic statistics."""

    rows_per_class = False


@register("randreg_cp")
class RandRegCP(StatisticsPrior):
    """z ~ N(mu_{y_i}, diag sigma_{y_i}^2): the class statistics, fixed for the whole run."""
