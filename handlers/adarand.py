"""AdaRand: adaptive class-conditional random feature regularization (SPEC §4).

Per iteration:
1. (COMPUTE_LOSS) sample z_i ~ N(mu_{y_i}, diag sigma^2_{y_i}) and add lambda * L_reg(g(x), z)
   (as ``randreg_cp``);
2. (ITERATION_COMPLETED, after the network's step) move the running class means mu_bar towards
   this batch's class means (EMA with alpha; classes absent from the batch are skipped);
3. one Adam step on mu to minimise L_ada = l_intra(mu, mu_bar) + l_inter(mu), lr cosine-annealed
   over the whole run. sigma stays at its initial value.

The three prior losses are logged as means over the diagnostics' intervals and epochs. They are
not computed every iteration: the update adds a few statistics into a running sum on the device
(``acc``), and the losses' sums are an affine map of it (``prior_losses``), read at each write.

``adarand_no_intra`` and ``adarand_no_inter`` are the ablations without one of the two terms.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events

from .cosine_adam import CosineAdam
from .random_features import PriorParams, RandRegCP
from .registry import register


def ema_class_means(mu_bar: torch.Tensor, features: torch.Tensor, labels: torch.Tensor, alpha: float,
                    reduce=None, eye: torch.Tensor | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """mu_bar_k <- alpha mu_bar_k + (1 - alpha) mean_{i: y_i = k} g_i for classes in the batch.

    Written as mu_bar_k + (1 - alpha) (S_k - n_k mu_bar_k) / max(n_k, 1) with the class sums S_k
    and counts n_k, which leaves a class absent from the batch (S_k = 0, n_k = 0) untouched
    without a mask. S is one (K x B) @ (B x d) product with the one-hot labels (deterministic on a
    GPU, unlike an atomic index_add). ``reduce`` (e.g. an all-reduce) is applied once, to S and n
    side by side. ``eye``: the K x K identity in mu_bar's dtype, whose columns y_i are the one-hot
    matrix (pass it when called every iteration). ``out`` may be ``mu_bar`` itself (in place).
    Meant for no_grad or inference mode (``features`` is not detached here).
    """
    if eye is None:
        eye = torch.eye(mu_bar.shape[0], dtype=mu_bar.dtype, device=mu_bar.device)
    onehot = eye.index_select(1, labels)  # (K, B)
    sums = torch.mm(onehot, features if features.dtype == mu_bar.dtype else features.to(mu_bar.dtype))
    counts = onehot.sum(1, keepdim=True)
    if reduce is not None:
        sums, counts = reduce(torch.cat([sums, counts], 1)).split([sums.shape[1], 1], dim=1)
    delta = torch.addcmul(sums, counts, mu_bar, value=-1.0)
    return torch.addcdiv(mu_bar, delta, counts.clamp_(min=1.0), value=1.0 - alpha, out=out)


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).sum(1, keepdim=True).clamp(min=1e-24))


def prior_loss(mu: torch.Tensor, mu_bar: torch.Tensor, intra: bool = True, inter: bool = True,
               form: str = "paper") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(L_ada, l_intra, l_inter) with the cosine distance D(u, v) = 1 - cos(u, v).

    paper:    l_intra = mean_k D(mu_k, mu_bar_k),      l_inter = -mean_{k != l} D(mu_k, mu_l)
    official: l_intra = mean_k (cos(mu_k, mu_bar_k) - 1)^2,  l_inter = mean_{k != l} cos(mu_k, mu_l)^2

    No K x K mask: with unit rows u_k, sum_{k != l} cos(mu_k, mu_l) = ||sum_k u_k||^2 - sum_k ||u_k||^2
    (O(K d)), and sum_{k != l} cos^2 = ||U U^T||_F^2 - sum_k ||u_k||^4.
    """
    zero = mu.new_zeros(())
    u = _unit_rows(mu)
    l_intra = l_inter = zero
    if intra:
        cos_own = (u * _unit_rows(mu_bar.detach())).sum(1)
        l_intra = (1.0 - cos_own).mean() if form == "paper" else (cos_own - 1.0).pow(2).mean()
    k = mu.shape[0]
    if inter and k > 1:
        pairs = k * (k - 1)
        self_sq = u.pow(2).sum(1)  # ||u_k||^2, 1 unless mu_k = 0
        if form == "paper":
            off_sum = u.sum(0).pow(2).sum() - self_sq.sum()
            l_inter = off_sum / pairs - 1.0  # -(pairs - off_sum) / pairs
        else:
            off_sq = (u @ u.t()).pow(2).sum() - self_sq.pow(2).sum()
            l_inter = off_sq / pairs
    return l_intra + l_inter, l_intra, l_inter


@functools.lru_cache(maxsize=16)
def _paper_loss_map(k: int, intra: bool, inter: bool, device: torch.device,
                    dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, b) with (L_ada, l_intra, l_inter) = A q + b for q = (sum_k ||u_k||^2, sum_k u_k . v_k,
    sum_k u_k . g_k), g the workspace's g (see :class:`PriorWorkspace`)."""
    wi = 1.0 / k if intra else 0.0
    inter = inter and k > 1
    we = 1.0 / (k * (k - 1)) if inter else 0.0
    # l_intra = 1 - q1 / K.  With c = 2 / (K (K - 1)): q2 = c ||s||^2 - [intra] q1 / K, so
    # l_inter = (||s||^2 - q0) / (K (K - 1)) - 1 = q2 / 2 + [intra] q1 / (2 K) - q0 / (K (K - 1)) - 1
    half = 0.5 if inter else 0.0
    le = [-we, half * wi, half]
    li = [0.0, -wi, 0.0]
    a = [[x + y for x, y in zip(li, le, strict=True)], li, le]
    b = [float(intra) - float(inter), float(intra), -float(inter)]
    return torch.tensor(a, device=device, dtype=dtype), torch.tensor(b, device=device, dtype=dtype)


def prior_losses(acc: torch.Tensor, steps: int, k: int, intra: bool = True, inter: bool = True,
                 form: str = "paper") -> torch.Tensor:
    """The sums of (L_ada, l_intra, l_inter) over the ``steps`` iterations whose statistics
    :func:`prior_loss_and_grad` added into ``acc``: in the paper's form A acc + steps b
    (``_paper_loss_map``); in the official form ``acc`` holds the three losses themselves."""
    if form != "paper":
        return acc.clone()
    coef, bias = _paper_loss_map(k, intra, inter, acc.device, acc.dtype)
    return torch.addmv(bias, coef, acc, beta=float(steps))


class PriorWorkspace:
    """The buffers :func:`prior_loss_and_grad` writes into, made once per run: the unit rows u
    (of mu) and v (of mu_bar) and, in the paper's form, g = dL/du, as one 3 x K x d tensor with its
    views precomputed (a handful of small operations fewer per iteration).

    In the paper's form g_k = c s - [intra] v_k / K with s = sum_l u_l and c = 2 [inter] / (K (K - 1)):
    dL/du_k without its -c u_k part, which the tangent projection removes (u_k is a unit vector, or
    0 where mu_k = 0). O(K d), whatever K is."""

    def __init__(self, k: int, d: int, intra: bool, inter: bool, device=None, dtype=torch.float32):
        self.buf = torch.empty(3, k, d, device=device, dtype=dtype)
        self.unit = self.buf[:2]
        self.u, self.v, self.g = self.buf.unbind()
        self.u_flat = self.u.view(-1)
        self.flat = self.buf.view(3, -1)
        self.s = torch.empty(d, device=device, dtype=dtype)
        self.inv_norm = torch.empty(2, k, 1, device=device, dtype=dtype)
        self.inv_norm_mu = self.inv_norm[0]
        self.v_coef = -1.0 / k if intra else 0.0
        self.s_coef = 2.0 / (k * (k - 1)) if inter and k > 1 else 0.0


def prior_loss_and_grad(priors: torch.Tensor, intra: bool = True, inter: bool = True, form: str = "paper",
                        acc: torch.Tensor | None = None, work: PriorWorkspace | None = None) -> torch.Tensor:
    """dL_ada/dmu in closed form, without autograd (the gradient of :func:`prior_loss`; a handful
    of K x d operations instead of a backward pass). ``priors``: mu and mu_bar stacked (2 x K x d),
    without autograd history. With ``acc`` (3 elements), this iteration's loss statistics are added
    into it: :func:`prior_losses` turns their sum into the losses' sums. ``work``: buffers made once
    for these priors and switches (made here when not given).

    With u_k = mu_k / ||mu_k||, the chain rule through the normalisation is
    dL/dmu_k = (g_k - u_k (u_k . g_k)) / ||mu_k||, g_k = dL/du_k, and
      paper:    dl_intra/du_k = -v_k / K,                 dl_inter/du_k = 2 (s - u_k) / (K (K - 1)), s = sum_l u_l
      official: dl_intra/du_k = 2 (c_k - 1) v_k / K,      dl_inter/du = 4 (U U^T U - diag(||u_k||^2) U) / (K (K - 1))
    with v_k = mu_bar_k / ||mu_bar_k|| and c_k = u_k . v_k. In the paper's form the three losses
    are one affine map of q = (sum_k ||u_k||^2, sum_k c_k, sum_k u_k . g_k), one matrix-vector
    product of the workspace with u, which is what goes into ``acc``. The paper's form is O(K d)
    throughout; the official form's Gram matrix is O(K^2 d).
    """
    _, k, d = priors.shape
    if work is None:
        work = PriorWorkspace(k, d, intra, inter, priors.device, priors.dtype)
    # mu and mu_bar normalised together
    inv_norm = torch.linalg.vector_norm(priors, dim=2, keepdim=True, out=work.inv_norm).clamp_min_(1e-12).reciprocal_()
    torch.mul(priors, inv_norm, out=work.unit)
    u, v = work.u, work.v
    if form == "paper":
        g = torch.mul(v, work.v_coef, out=work.g).add_(torch.sum(u, 0, out=work.s), alpha=work.s_coef)
        if acc is not None:
            acc.addmv_(work.flat, work.u_flat)  # (sum_k ||u_k||^2, sum_k u_k . v_k, sum_k u_k . g_k)
    else:
        pairs = max(k * (k - 1), 1)
        inter = inter and k > 1
        zero = priors.new_zeros(())
        l_intra = l_inter = zero
        g = torch.zeros_like(u)
        if intra:
            c = torch.linalg.vecdot(u, v).unsqueeze(1)
            l_intra = (c - 1.0).pow(2).mean()
            g.addcmul_(v, c - 1.0, value=2.0 / k)
        if inter:
            self_sq = u.pow(2).sum(1, keepdim=True)
            gram = u @ u.t()
            l_inter = (gram.pow(2).sum() - self_sq.pow(2).sum()) / pairs
            g.add_(gram @ u - self_sq * u, alpha=4.0 / pairs)
        if acc is not None:
            acc.add_(torch.stack([l_intra + l_inter, l_intra, l_inter]))
    return torch.addcmul(g, u, (u * g).sum(1, keepdim=True), value=-1.0).mul_(work.inv_norm_mu)


@dataclass(kw_only=True)
class AdaRandParams(PriorParams):
    alpha: float = 0.5
    prior_lr: float = 0.01
    intra: bool = True
    inter: bool = True
    prior_loss: Literal["paper", "official"] = "paper"

    def check(self):
        if not 0.0 <= self.alpha <= 1.0:
            return "alpha", f"expected a number in [0, 1], got {self.alpha}"
        if not (self.intra or self.inter):
            return "intra", "at least one of intra and inter must be true (with neither, use randreg_cp)"
        return super().check()


@register("adarand")
class AdaRand(RandRegCP):
    Params = AdaRandParams

    def __init__(self, params: AdaRandParams, ctx):
        super().__init__(params, ctx)
        # mu and mu_bar are the two halves of one buffer, which the prior update normalises in one go
        self.priors = torch.stack([self.mu, self.mu])
        self.mu, self.mu_bar = self.priors.unbind()
        self.eye = torch.eye(self.mu.shape[0], device=ctx.device)  # the EMA's one-hot labels are its columns
        self.work = PriorWorkspace(*self.mu.shape, params.intra, params.inter, ctx.device)
        # Adam on mu, lr cosine-annealed over the whole run (see cosine_adam.py for why not torch.optim)
        self.optimizer = CosineAdam(self.mu, params.prior_lr, ctx.total_iterations)
        # the prior losses' statistics summed since the diagnostics last took them (take_log_sums)
        self.loss_acc = torch.zeros(3, device=ctx.device)
        self.loss_steps = 0

    def attach(self, trainer: Engine) -> None:
        super().attach(trainer)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self.update_priors)

    def set_priors(self, mu: torch.Tensor, sigma: torch.Tensor, mu_bar: torch.Tensor | None = None) -> None:
        # in place: mu is the tensor the optimizer updates
        self.mu.copy_(mu)
        self.mu_bar.copy_(mu if mu_bar is None else mu_bar)
        self.sigma = sigma

    def update_priors(self, engine: Engine) -> None:
        step = engine.state.output
        p = self.params
        reduce = idist.all_reduce if idist.get_world_size() > 1 else None
        with torch.inference_mode():  # cheaper than no_grad per operation; nothing here needs autograd
            ema_class_means(self.mu_bar, step.features, step.y, p.alpha, reduce, self.eye, out=self.mu_bar)
            grad = prior_loss_and_grad(self.priors, p.intra, p.inter, p.prior_loss, self.loss_acc, self.work)
            self.optimizer.step(grad)
        self.loss_steps += 1

    def take_log_sums(self) -> dict[str, torch.Tensor]:
        """Sums of L_ada, l_intra and l_inter over the iterations since the last call."""
        if self.loss_steps == 0:
            return {}
        p = self.params
        sums = prior_losses(self.loss_acc, self.loss_steps, self.mu.shape[0], p.intra, p.inter, p.prior_loss)
        self.loss_acc = torch.zeros_like(self.loss_acc)
        self.loss_steps = 0
        return dict(zip(("loss_ada", "loss_intra", "loss_inter"), sums.unbind(), strict=True))

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"prior": self.optimizer}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "mu_bar": self.mu_bar.clone(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        dev = self.ctx.device
        self.set_priors(state["mu"].to(dev), state["sigma"].to(dev), state["mu_bar"].to(dev))
        self.initialized = bool(state["initialized"])
        self.optimizer.load_state_dict(state["optimizer"])

    def report(self) -> dict:
        return {**super().report(), "prior_state_mib": 3 * self.mu.numel() * self.mu.element_size() / 2**20}


@dataclass(kw_only=True)
class NoIntraParams(AdaRandParams):
    intra: bool = False

    def check(self):
        return ("intra", "adarand_no_intra drops l_intra; use adarand to keep it") if self.intra else super().check()


@dataclass(kw_only=True)
class NoInterParams(AdaRandParams):
    inter: bool = False

    def check(self):
        return ("inter", "adarand_no_inter drops l_inter; use adarand to keep it") if self.inter else super().check()


@register("adarand_no_intra")
class AdaRandNoIntra(AdaRand):
    """AdaRand whose prior update has l_inter only."""

    Params = NoIntraParams


@register("adarand_no_inter")
class AdaRandNoInter(AdaRand):
    """AdaRand whose prior update has l_intra only."""

    Params = NoInterParams
