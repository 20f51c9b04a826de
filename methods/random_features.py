"""AdaRand and the random-feature family it extends (SPEC §4-5): the formulas, then the objects.

Every method of the family adds one term to the cross-entropy:

    L(theta) = (1/B) sum_i CE(f(x_i), y_i) + lambda * L_reg(g(x), z),   z_i drawn from a prior, detached

and differs only in its prior (``RandReg``, one class parameterised by ``prior``; the engine's
names in the first column):

| name               | prior     | z_i                                                        |
|--------------------|-----------|------------------------------------------------------------|
| ``fnp``            | zero      | 0 (feature norm penalty)                                   |
| ``randreg_uniform``| uniform   | U(0, 1) per dimension                                      |
| ``randreg_normal`` | normal    | N(0, I)                                                    |
| ``randreg_global`` | global    | N(mu_s, diag sigma_s^2), class-agnostic pretrained statistics |
| ``randreg_cp``     | class     | N(mu_{y_i}, diag sigma_{y_i}^2), class statistics, fixed   |
| ``adarand``        | class     | as ``randreg_cp``, with mu updated every iteration         |

AdaRand (``AdaRand``: ``RandReg`` plus the prior update, ``AdaRand.update``), after each
optimizer step:

1. the running class means mu_bar move towards this batch's class means (``ema_class_means``);
2. one Adam step on mu along the gradient of L_ada = l_intra + l_inter (``intra_loss``,
   ``inter_loss``, ``prior_step``), its lr on the published schedule (``prior_lr_factor``).
   sigma stays at its initial value.

``adarand_no_intra`` and ``adarand_no_inter`` are ``AdaRand(intra=False)`` and ``AdaRand(inter=False)``.
The random draws come from the ``generator`` an object is given (the engine gives the run's own,
so that the data pipeline's global RNG is not moved and at one seed every method sees the same
data); without one, from torch's global generator.

In a plain loop (the prior pass included)::

    reg = AdaRand.from_loader(model.backbone, train_loader, num_classes, total_steps=epochs * len(train_loader))
    for x, y in train_loader:                                # each epoch
        logits, features = model(x)
        loss = F.cross_entropy(logits, y) + reg(features, y)
        optimizer.zero_grad(); loss.backward(); optimizer.step()
        reg.update(features, y)
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..core.distributed import all_reduce, world_size
from .base import Method, make_params
from .statistics import ClassStatistics, class_priors, class_statistics, class_sums

# ---------------------------------------------------------------------------------------------
# The formulas


def sample_references(mu: torch.Tensor, sigma: torch.Tensor, rows: torch.Tensor,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """z_i ~ N(mu[r_i], diag sigma[r_i]^2): z = mu[r] + sigma[r] * eps, eps ~ N(0, I) drawn from
    ``generator``. (``torch.normal(mean, std)`` would read min(std) >= 0 back to the host every
    call; sigma >= sigma_floor > 0 here by construction.) ``mu`` and ``sigma``: (K, d); ``rows``:
    (B,) row indices; returns (B, d) without autograd history."""
    mean = mu.detach().index_select(0, rows)
    eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + sigma.index_select(0, rows) * eps


def feature_regularizer(features: torch.Tensor, z: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """L_reg for features and references of shape (B, d).

    ``mean``: (1 / (B d)) sum_i ||g_i - z_i||^2 (the published form, ``mse_loss``);
    ``sum``:  (1 / B) sum_i ||g_i - z_i||^2 (the paper's written form: d times the ``mean`` one)."""
    if reduction == "mean":
        return F.mse_loss(features, z, reduction="mean")
    return F.mse_loss(features, z, reduction="sum") / features.shape[0]


def ema_class_means(mu_bar: torch.Tensor, features: torch.Tensor, labels: torch.Tensor, alpha: float,
                    reduce=None) -> torch.Tensor:
    """mu_bar_k <- alpha mu_bar_k + (1 - alpha) mean_{i: y_i = k} g_i, for the classes k in the batch.

    With the class sums S_k and counts n_k (``class_sums``) this is
    mu_bar_k + (1 - alpha)(S_k - n_k mu_bar_k) / max(n_k, 1), which leaves a class absent from the
    batch (S_k = 0, n_k = 0) as it was. ``reduce`` (an all-reduce in a multi-process run) is
    applied once, to S and n side by side. ``mu_bar``: (K, d); ``features``: (B, d), detached by
    the caller; returns the new (K, d)."""
    sums, counts = class_sums(features.to(mu_bar.dtype), labels, mu_bar.shape[0])
    counts = counts.unsqueeze(1)
    if reduce is not None:
        sums, counts = reduce(torch.cat([sums, counts], 1)).split([sums.shape[1], 1], dim=1)
    return mu_bar + (1.0 - alpha) * (sums - counts * mu_bar) / counts.clamp(min=1.0)


def intra_loss(mu: torch.Tensor, mu_bar: torch.Tensor, form: str = "paper") -> torch.Tensor:
    """l_intra, pulling each prior mean towards its class's running feature mean (mu_bar detached).

    paper:    (1/K) sum_k D(mu_k, mu_bar_k),  D(u, v) = 1 - cos(u, v)
    official: (1/K) sum_k (cos(mu_k, mu_bar_k) - 1)^2"""
    cos = F.cosine_similarity(mu, mu_bar.detach(), dim=1, eps=1e-12)
    return (1.0 - cos).mean() if form == "paper" else (cos - 1.0).pow(2).mean()


def inter_loss(mu: torch.Tensor, form: str = "paper") -> torch.Tensor:
    """l_inter, pushing the prior means of different classes apart (0 for one class).

    paper:    -(1/(K(K-1))) sum_k sum_{l != k} D(mu_k, mu_l)
              = -1 + (||sum_k u_k||^2 - sum_k ||u_k||^2) / (K(K-1)),  u_k = mu_k / ||mu_k||
              (the sum of cos(mu_k, mu_l) over k != l without the K x K matrix: O(K d))
    official:  (1/(K(K-1))) sum_k sum_{l != k} cos(mu_k, mu_l)^2"""
    k = mu.shape[0]
    if k < 2:
        return mu.new_zeros(())
    pairs = k * (k - 1)
    u = F.normalize(mu, dim=1)
    if form == "paper":
        return -1.0 + (u.sum(0).pow(2).sum() - u.pow(2).sum()) / pairs
    cos = u @ u.t()
    return (cos.pow(2).sum() - cos.diagonal().pow(2).sum()) / pairs


def prior_loss(mu: torch.Tensor, mu_bar: torch.Tensor, intra: bool = True, inter: bool = True,
               form: str = "paper") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(L_ada, l_intra, l_inter), L_ada = [intra] l_intra + [inter] l_inter; a dropped term is 0."""
    zero = mu.new_zeros(())
    l_intra = intra_loss(mu, mu_bar, form) if intra else zero
    l_inter = inter_loss(mu, form) if inter else zero
    return l_intra + l_inter, l_intra, l_inter


def prior_lr_factor(schedule: str, step: int, total: int) -> float:
    """xi_t / xi for update ``step`` (0-based) of ``total``:

    published: cos(7 pi / 16 * t / T)          (the published code; ends near cos(7 pi / 16) = 0.195)
    cosine:    (1 + cos(pi * t / T)) / 2      (to 0)
    constant:  1"""
    t = min(step, total) / max(total, 1)
    if schedule == "published":
        return math.cos(7.0 * math.pi / 16.0 * t)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    return 1.0


def prior_step(mu: torch.Tensor, mu_bar: torch.Tensor, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler, intra: bool, inter: bool,
               form: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of ``optimizer`` on the leaf ``mu`` along dL_ada/dmu (autograd through
    ``prior_loss``), then one step of its lr ``scheduler``. Returns the detached losses."""
    optimizer.zero_grad(set_to_none=True)
    with torch.enable_grad():
        losses = prior_loss(mu, mu_bar, intra, inter, form)
        losses[0].backward()
    optimizer.step()
    scheduler.step()
    return tuple(t.detach() for t in losses)


@torch.no_grad()
def prior_diagnostics(mu: torch.Tensor, mu_bar: torch.Tensor, features: torch.Tensor) -> dict[str, torch.Tensor]:
    """What the prior is doing, for logs (no host sync):

    mu_norm:           (1/K) sum_k ||mu_k||
    feature_norm:      (1/B) sum_i ||g(x_i)||          (the batch's, to compare with mu_norm)
    negative_fraction: #{(k, j): mu_kj < 0} / (K d)   (features after a ReLU are >= 0)
    mu_distance:       (1/K) sum_k ||mu_k - mu_bar_k||"""
    mu = mu.detach()
    return {"mu_norm": mu.norm(dim=1).mean(), "feature_norm": features.detach().float().norm(dim=1).mean(),
            "negative_fraction": (mu < 0).float().mean(), "mu_distance": (mu - mu_bar).norm(dim=1).mean()}


# ---------------------------------------------------------------------------------------------
# The objects


@dataclass(kw_only=True)
class RandRegParams:
    # lambda: the weight of L_reg = ||g(x) - z||^2 against the cross-entropy
    lam: float = field(default=1.0, metadata={"key": "lambda", "range": ">= 0"})
    reduction: Literal["mean", "sum"] = "mean"  # L_reg over the feature dimensions: mean (the published code's) or sum
    # the distribution of the references z: zero (FNP), uniform, normal, global (one Gaussian), class
    prior: Literal["zero", "uniform", "normal", "global", "class"] = "class"
    sigma_floor: float = field(default=1e-4, metadata={"range": "> 0"})  # smallest prior sigma (one image: sigma 0)


def priors_from_statistics(stats: ClassStatistics, prior: str, sigma_floor: float,
                           class_names: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, sigma) of a statistics prior: ``class`` (K, d) from ``class_priors``; ``global``
    (1, d), the class-agnostic mean and standard deviation (sigma raised to ``sigma_floor``).

        mu, sigma = priors_from_statistics(class_statistics(model.backbone, loader, K), "class", 1e-4)
    """
    if prior == "class":
        return class_priors(stats, sigma_floor, class_names)
    sigma = stats.global_var.sqrt()
    if bool((sigma < sigma_floor).any()):
        warnings.warn(f"prior statistics: class-agnostic sigma below {sigma_floor:g} in "
                      f"{int((sigma < sigma_floor).sum())} dims; clamped", stacklevel=2)
    return stats.global_mean.float()[None], sigma.clamp(min=sigma_floor).float()[None]


class RandReg(Method):
    """Random feature regularization: ``lambda * L_reg(features, z)``, z drawn from a prior.

        L_reg = (1/(B d)) sum_i ||g(x_i) - z_i||^2   (reduction ``mean``; ``sum``: d times it)
        z_i = 0 (zero), U(0, 1) (uniform), N(0, I) (normal), N(mu_s, sigma_s^2) (global),
              N(mu_{y_i}, diag sigma_{y_i}^2) (class)

    ``mu``, ``sigma``: the statistics prior's (K, d) or (1, d) tensors (``priors_from_statistics``,
    or ``from_loader``); none for ``zero``, ``uniform`` and ``normal``.

        reg = RandReg(prior="normal", lam=1.0)
        loss = F.cross_entropy(logits, y) + reg(features, y)
    """

    Params = RandRegParams

    def __init__(self, mu: torch.Tensor | None = None, sigma: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None, params: RandRegParams | None = None, **hyperparameters):
        super().__init__(params, **hyperparameters)
        statistics = self.params.prior in ("global", "class")
        if statistics and (mu is None or sigma is None):
            raise ValueError(f"{type(self).__name__}: prior {self.params.prior!r} needs mu and sigma "
                             "(RandReg.from_loader makes them from the pretrained extractor)")
        empty = torch.zeros(0, 0)
        self.mu = mu.detach().float().clone() if statistics else empty
        self.sigma = sigma.detach().float().clone() if statistics else empty
        self.generator = generator

    @classmethod
    def from_loader(cls, extractor: nn.Module, loader, num_classes: int, *, device: torch.device | str | None = None,
                    cache_dir: str | Path | None = None, amp: str = "off", class_names: list[str] | None = None,
                    **kwargs):
        """The object with its prior made by one pass of the pretrained ``extractor`` over ``loader``
        (use the evaluation transform), cached under ``cache_dir`` when given (see
        ``adarand.methods.statistics.class_statistics``). Other arguments go to the constructor."""
        params = kwargs.pop("params", None)
        generator = kwargs.pop("generator", None)
        extra = {k: kwargs.pop(k) for k in ("total_steps",) if k in kwargs}
        params = params if params is not None else make_params(cls.Params, kwargs, cls.__name__)
        stats = class_statistics(extractor, loader, num_classes, device, cache_dir, amp)
        mu, sigma = priors_from_statistics(stats, params.prior, params.sigma_floor, class_names)
        return cls(mu, sigma, generator=generator, params=params, **extra)

    def set_priors(self, mu: torch.Tensor, sigma: torch.Tensor) -> None:
        self.mu, self.sigma = mu, sigma

    def sample(self, labels: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """z for a batch: (B, d) like ``features`` (whose shape, dtype and device it takes)."""
        prior = self.params.prior
        if prior == "zero":
            return torch.zeros_like(features)
        if prior in ("uniform", "normal"):
            draw = torch.rand if prior == "uniform" else torch.randn
            return draw(features.shape, generator=self.generator, device=features.device, dtype=features.dtype)
        rows = labels if prior == "class" else torch.zeros_like(labels)
        return sample_references(self.mu, self.sigma, rows, self.generator)

    def terms(self, features, labels, *, logits=None, images=None) -> dict[str, torch.Tensor]:
        z = self.sample(labels, features)
        return {"reg": self.params.lam * feature_regularizer(features, z, self.params.reduction)}

    def state_dict(self) -> dict:
        return {"mu": self.mu.detach().clone(), "sigma": self.sigma.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.set_priors(state["mu"].to(self.mu.device), state["sigma"].to(self.mu.device))


@dataclass(kw_only=True)
class AdaRandParams(RandRegParams):
    # EMA factor of the class means: mu_bar <- alpha mu_bar + (1 - alpha) batch mean
    alpha: float = field(default=0.5, metadata={"range": "[0, 1]"})
    prior_lr: float = field(default=0.01, metadata={"range": ">= 0"})  # the prior means' Adam learning rate
    # the prior learning rate's schedule: published (the published code's), cosine, constant
    prior_schedule: Literal["published", "cosine", "constant"] = "published"
    intra: bool = True  # the prior loss's intra-class term (false: the ablation without it)
    inter: bool = True  # the prior loss's inter-class term (false: the ablation without it)
    prior_loss: Literal["paper", "official"] = "paper"  # paper: the paper's prior loss; official: the published code's form

    def check(self):
        if self.prior != "class":
            return "prior", f"adarand updates class-conditional priors; expected 'class', got {self.prior!r}"
        if not (self.intra or self.inter):
            return "intra", "at least one of intra and inter must be true (with neither, use randreg_cp)"
        return None


class AdaRand(RandReg):
    """AdaRand: RandReg-CP whose prior means mu follow the features. After every optimizer step
    (``update``):

        mu_bar_k <- alpha mu_bar_k + (1 - alpha) mean_{i: y_i = k} g(x_i)     (classes in the batch)
        mu <- Adam step on L_ada = l_intra(mu, mu_bar) + l_inter(mu),  lr prior_lr * xi_t / xi

    ``total_steps``: the training steps of the run (the ``published`` and ``cosine`` schedules of
    the prior's learning rate end there). mu_bar starts at mu; sigma stays fixed.

        reg = AdaRand.from_loader(model.backbone, loader, num_classes, total_steps=epochs * len(loader))
        loss = F.cross_entropy(logits, y) + reg(features, y)
        reg.update(features, y)                               # after optimizer.step()
    """

    Params = AdaRandParams

    def __init__(self, mu: torch.Tensor, sigma: torch.Tensor, total_steps: int | None = None, *,
                 generator: torch.Generator | None = None, params: AdaRandParams | None = None, **hyperparameters):
        super().__init__(mu, sigma, generator=generator, params=params, **hyperparameters)
        if self.params.prior_schedule != "constant" and not total_steps:
            raise ValueError(f"AdaRand: prior_schedule {self.params.prior_schedule!r} needs total_steps (the run's "
                             "optimizer steps)")
        self.total_steps = int(total_steps or 0)
        self.mu.requires_grad_(True)  # the leaf the prior's Adam updates
        self.mu_bar = self.mu.detach().clone()
        self.make_optimizer()

    def make_optimizer(self) -> None:
        p, total = self.params, self.total_steps
        self.optimizer = torch.optim.Adam([self.mu], lr=p.prior_lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda t: prior_lr_factor(p.prior_schedule, t, total))

    def set_priors(self, mu: torch.Tensor, sigma: torch.Tensor, mu_bar: torch.Tensor | None = None) -> None:
        with torch.no_grad():  # in place: mu is the tensor the optimizer holds
            self.mu.copy_(mu)
        self.mu_bar = (mu if mu_bar is None else mu_bar).detach().clone()
        self.sigma = sigma

    def update(self, features: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """The EMA of the class means (summed over the processes of a process group), then one
        prior step; returns the prior objective's terms (prior_ada, prior_intra, prior_inter) and,
        after the step, ``prior_diagnostics`` (prior_mu_norm, prior_feature_norm,
        prior_negative_fraction, prior_mu_distance)."""
        p = self.params
        reduce = all_reduce if world_size() > 1 else None
        with torch.no_grad():
            self.mu_bar = ema_class_means(self.mu_bar, features.detach(), labels, p.alpha, reduce)
        l_ada, l_intra, l_inter = prior_step(self.mu, self.mu_bar, self.optimizer, self.scheduler,
                                             p.intra, p.inter, p.prior_loss)
        diagnostics = {f"prior_{k}": v for k, v in prior_diagnostics(self.mu, self.mu_bar, features).items()}
        return {"prior_ada": l_ada, "prior_intra": l_intra, "prior_inter": l_inter, **diagnostics}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"prior": self.optimizer}

    def state_dict(self) -> dict:
        """A snapshot: the prior's Adam moments are copied, not shared with the live optimizer."""
        return {**super().state_dict(), "mu_bar": self.mu_bar.clone(),
                "optimizer": copy.deepcopy(self.optimizer.state_dict()), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        dev = self.mu.device
        self.set_priors(state["mu"].to(dev), state["sigma"].to(dev), state["mu_bar"].to(dev))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def to(self, device: torch.device | str) -> AdaRand:
        """mu, mu_bar, sigma and the prior's optimizer state on ``device``."""
        optimizer, scheduler = self.optimizer.state_dict(), self.scheduler.state_dict()
        self.mu = self.mu.detach().to(device).requires_grad_(True)
        self.mu_bar, self.sigma = self.mu_bar.to(device), self.sigma.to(device)
        self.make_optimizer()
        self.optimizer.load_state_dict(optimizer)
        self.scheduler.load_state_dict(scheduler)
        return self
