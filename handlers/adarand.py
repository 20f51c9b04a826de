"""The engine's random-feature methods and AdaRand: adapters over ``adarand.methods.random_features``
(the formulas and the objects are there).

| name               | object                         |
|--------------------|--------------------------------|
| ``fnp``            | ``RandReg(prior="zero")``      |
| ``randreg_uniform``| ``RandReg(prior="uniform")``   |
| ``randreg_normal`` | ``RandReg(prior="normal")``    |
| ``randreg_global`` | ``RandReg(prior="global")``    |
| ``randreg_cp``     | ``RandReg(prior="class")``     |
| ``adarand``        | ``AdaRand()``                  |
| ``adarand_no_intra`` / ``adarand_no_inter`` | ``AdaRand(intra=False)`` / ``AdaRand(inter=False)`` |

The engine gives each object the run's generator (``RunContext.generator``) and the priors from
the run's shared, cached pass of the pretrained extractor (``RunContext.class_statistics``).
"""

from __future__ import annotations

import torch

from ..methods import random_features as rf
from ..methods.frozen import tensors_mib
from ..methods.random_features import (  # noqa: F401 (the formulas, by the names the engine's users know)
    AdaRandParams,
    RandRegParams,
    ema_class_means,
    feature_regularizer,
    inter_loss,
    intra_loss,
    prior_loss,
    prior_lr_factor,
    prior_step,
    sample_references,
)
from .registry import MethodAdapter, register


@register("fnp", prior="zero")
@register("randreg_uniform", prior="uniform")
@register("randreg_normal", prior="normal")
@register("randreg_global", prior="global")
@register("randreg_cp", prior="class")
class RandReg(MethodAdapter):
    """Adds ``lambda * L_reg(features, z)`` with z drawn from the prior (``adarand.methods.RandReg``).
    The statistics priors (``global``, ``class``) are set by ``prepare`` from the pretrained
    extractor's statistics (the run's shared, cached pass) and saved in checkpoints."""

    Params = RandRegParams
    tasks = ("classification", "detection")

    def __init__(self, params: RandRegParams, ctx):
        super().__init__(params, ctx)
        self.method = rf.RandReg(*self.initial_priors(), generator=ctx.generator, params=params)

    def initial_priors(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Zeros and ones until ``prepare`` (or a checkpoint) sets the statistics priors."""
        rows = {"global": 1, "class": self.ctx.data.num_classes}.get(self.params.prior, 0)
        if not rows:
            return None, None
        d, dev = self.ctx.net.feature_dim, self.ctx.device
        return torch.zeros(rows, d, device=dev), torch.ones(rows, d, device=dev)

    def prepare(self) -> None:
        if self.params.prior in ("global", "class"):
            mu, sigma = rf.priors_from_statistics(self.ctx.class_statistics(), self.params.prior,
                                                  self.params.sigma_floor, self.ctx.data.classes)
            self.method.set_priors(mu.to(self.ctx.device), sigma.to(self.ctx.device))

    def report(self) -> dict:
        out = {"prior": self.params.prior}
        if self.params.prior in ("global", "class"):
            out.update(prior_cache_hit=self.ctx.prior_cache_hit, prior_state_mib=tensors_mib(self.mu, self.sigma))
        return out


@register("adarand")
@register("adarand_no_intra", intra=False)
@register("adarand_no_inter", inter=False)
class AdaRand(RandReg):
    """``randreg_cp`` whose means mu follow the features: after every optimizer step, the EMA of
    the class means and one prior step (``adarand.methods.AdaRand``). mu, mu_bar, sigma, the
    prior's optimizer and its schedule are saved in checkpoints."""

    Params = AdaRandParams

    def __init__(self, params: AdaRandParams, ctx):
        MethodAdapter.__init__(self, params, ctx)
        self.method = rf.AdaRand(*self.initial_priors(), ctx.total_iterations, generator=ctx.generator, params=params)

    def report(self) -> dict:
        return {**super().report(), "prior_state_mib": tensors_mib(self.mu, self.mu_bar, self.sigma)}
