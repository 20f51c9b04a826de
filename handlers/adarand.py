"""AdaRand: adaptive class-conditional random feature regularization (SPEC §4).

Per iteration:
1. (COMPUTE_LOSS) sample z_i ~ N(mu_{y_i}, diag sigma^2_{y_i}) and add lambda * L_reg(g(x), z);
2. (ITERATION_COMPLETED, after the network's step) move the running class means mu_bar towards
   this batch's class means (EMA with alpha; classes absent from the batch are skipped);
3. one Adam step on mu to minimise L_ada = l_intra(mu, mu_bar) + l_inter(mu), lr cosine-annealed
   over the whole run. sigma stays at its initial value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import ignite.distributed as idist
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events

from ..engine.trainer import TrainEvents
from .priors import class_priors, class_sums
from .registry import Regularizer, register


def sample_references(mu: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """z_i = mu[y_i] + sigma[y_i] * eps_i, eps ~ N(0, I); detached."""
    mu, sigma = mu.detach()[labels], sigma.detach()[labels]
    return mu + sigma * torch.randn_like(mu)


def feature_regularizer(features: torch.Tensor, z: torch.Tensor, reduction: str) -> torch.Tensor:
    """``mean``: mean over samples and dims of (g - z)^2 (the published form);
    ``sum``: the per-sample squared norm ||g - z||^2, averaged over the batch (the written form)."""
    sq = (features.float() - z.float()).pow(2)
    return sq.mean() if reduction == "mean" else sq.sum(1).mean()


def ema_class_means(mu_bar: torch.Tensor, features: torch.Tensor, labels: torch.Tensor, alpha: float,
                    reduce=None) -> torch.Tensor:
    """mu_bar_k <- alpha mu_bar_k + (1 - alpha) mean_{i: y_i = k} g_i for classes in the batch.

    ``reduce`` (e.g. an all-reduce) is applied to the per-class sums and counts first.
    """
    sums, counts = class_sums(features.detach(), labels, mu_bar.shape[0], dtype=mu_bar.dtype)
    if reduce is not None:
        sums, counts = reduce(sums), reduce(counts)
    present = (counts > 0).unsqueeze(1)
    batch_mean = sums / counts.clamp(min=1).unsqueeze(1).to(sums.dtype)
    return torch.where(present, alpha * mu_bar + (1.0 - alpha) * batch_mean, mu_bar)


def prior_loss(mu: torch.Tensor, mu_bar: torch.Tensor, intra: bool = True, inter: bool = True,
               form: str = "paper") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(L_ada, l_intra, l_inter) with the cosine distance D(u, v) = 1 - cos(u, v).

    paper:    l_intra = mean_k D(mu_k, mu_bar_k),      l_inter = -mean_{k != l} D(mu_k, mu_l)
    official: l_intra = mean_k (cos(mu_k, mu_bar_k) - 1)^2,  l_inter = mean_{k != l} cos(mu_k, mu_l)^2
    """
    zero = mu.new_zeros(())
    u = F.normalize(mu, dim=1, eps=1e-12)
    l_intra = l_inter = zero
    if intra:
        cos_own = (u * F.normalize(mu_bar.detach(), dim=1, eps=1e-12)).sum(1)
        l_intra = (1.0 - cos_own).mean() if form == "paper" else (cos_own - 1.0).pow(2).mean()
    k = mu.shape[0]
    if inter and k > 1:
        cos = u @ u.t()
        off = ~torch.eye(k, dtype=torch.bool, device=mu.device)
        c = cos[off]
        l_inter = -(1.0 - c).mean() if form == "paper" else c.pow(2).mean()
    return l_intra + l_inter, l_intra, l_inter


@dataclass(kw_only=True)
class AdaRandParams:
    lam: float = field(default=1.0, metadata={"key": "lambda"})
    reduction: Literal["mean", "sum"] = "mean"
    alpha: float = 0.5
    prior_lr: float = 0.01
    intra: bool = True
    inter: bool = True
    prior_loss: Literal["paper", "official"] = "paper"
    sigma_floor: float = 1e-4

    def check(self):
        if not 0.0 <= self.alpha <= 1.0:
            return "alpha", f"expected a number in [0, 1], got {self.alpha}"
        if self.sigma_floor <= 0:
            return "sigma_floor", "expected a positive number"
        return None


@register("adarand")
class AdaRand(Regularizer):
    Params = AdaRandParams

    def __init__(self, params: AdaRandParams, ctx):
        super().__init__(params, ctx)
        k, d, dev = ctx.data.num_classes, ctx.net.feature_dim, ctx.device
        self.mu = torch.nn.Parameter(torch.zeros(k, d, device=dev))
        self.mu_bar = torch.zeros(k, d, device=dev)
        self.sigma = torch.ones(k, d, device=dev)
        self.initialized = False
        self.optimizer = torch.optim.Adam([self.mu], lr=params.prior_lr)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=max(1, ctx.total_iterations))

    # -- handlers ---------------------------------------------------------------------------
    def attach(self, trainer: Engine) -> None:
        trainer.add_event_handler(Events.STARTED, self.initialize)
        trainer.add_event_handler(TrainEvents.COMPUTE_LOSS, self.add_loss)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self.update_priors)

    def initialize(self, engine: Engine | None = None) -> None:
        """Priors from the pretrained extractor's class statistics (skipped when resumed)."""
        if self.initialized:
            return
        stats = self.ctx.class_statistics()
        mu, sigma = class_priors(stats, self.params.sigma_floor, self.ctx.data.classes)
        with torch.no_grad():
            self.mu.copy_(mu)
        self.mu_bar = mu.clone()
        self.sigma = sigma
        self.initialized = True

    def add_loss(self, engine: Engine) -> None:
        step = engine.state.step
        z = sample_references(self.mu, self.sigma, step.y)
        step.losses["reg"] = self.params.lam * feature_regularizer(step.features, z, self.params.reduction)

    def update_priors(self, engine: Engine) -> None:
        step = engine.state.output
        p = self.params
        reduce = idist.all_reduce if idist.get_world_size() > 1 else None
        self.mu_bar = ema_class_means(self.mu_bar, step.features.float(), step.y, p.alpha, reduce)
        self.optimizer.zero_grad(set_to_none=True)
        loss, l_intra, l_inter = prior_loss(self.mu, self.mu_bar, p.intra, p.inter, p.prior_loss)
        if loss.requires_grad:
            loss.backward()
            self.optimizer.step()
        self.scheduler.step()
        step.logs["loss_ada"] = loss.detach()
        step.logs["loss_intra"] = l_intra.detach()
        step.logs["loss_inter"] = l_inter.detach()

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"prior": self.optimizer}

    # -- checkpointing ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"mu": self.mu.detach().clone(), "mu_bar": self.mu_bar.clone(), "sigma": self.sigma.clone(),
                "initialized": self.initialized, "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        dev = self.ctx.device
        with torch.no_grad():
            self.mu.copy_(state["mu"].to(dev))
        self.mu_bar = state["mu_bar"].to(dev)
        self.sigma = state["sigma"].to(dev)
        self.initialized = bool(state["initialized"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def report(self) -> dict:
        return {"prior_cache_hit": self.ctx.prior_cache_hit,
                "prior_state_mib": 3 * self.mu.numel() * self.mu.element_size() / 2**20}
