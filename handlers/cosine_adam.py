"""Adam on one tensor with a cosine-annealed learning rate: AdaRand's prior optimizer.

The same update as ``torch.optim.Adam`` (no weight decay, no amsgrad) driven by
``CosineAnnealingLR(T_max=total_steps, eta_min=0)``. On AdaRand's K x d prior means the generic
pair costs about 90 us of Python per step on a CPU (the ``Optimizer.step`` wrapper and its
parameter-group bookkeeping), which was most of AdaRand's overhead over fine-tuning on a small
model. Here one step is a call of the fused Adam kernel that ``torch.optim.Adam(fused=True)``
uses (``torch._fused_adam_``, CPU and CUDA; about 10 us a step), or, where a build lacks it, the same
update as seven in-place tensor operations (about 35 us). ``tests/test_cosine_adam.py`` checks
both against the torch pair step by step.

``param_groups`` (one group with its ``lr``) lets Ignite's ``OptimizerParamsHandler`` log the
learning rate like any optimizer's.
"""

from __future__ import annotations

import math

import torch

FUSED = hasattr(torch, "_fused_adam_")


class CosineAdam:
    def __init__(self, param: torch.Tensor, lr: float, total_steps: int, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, fused: bool = FUSED):
        self.param = param
        self.base_lr = lr
        self.total_steps = max(1, int(total_steps))
        self.betas = betas
        self.eps = eps
        self.steps = 0
        self.exp_avg = torch.zeros_like(param)
        self.exp_avg_sq = torch.zeros_like(param)
        self.fused = fused
        # the kernel reads the (already counted) step number from a tensor on the parameter's device
        self._step_tensor = torch.zeros((), dtype=torch.float32, device=param.device)
        self.param_groups = [{"lr": lr}]
        self._next_lr = self.lr_at(0)  # the lr of the next update (each step computes one cosine, not two)

    def lr_at(self, step: int) -> float:
        """The learning rate of update ``step`` (0-based): the closed form of CosineAnnealingLR,
        held at 0 past the end."""
        t = min(step, self.total_steps)
        return 0.5 * self.base_lr * (1.0 + math.cos(math.pi * t / self.total_steps))

    def step(self, grad: torch.Tensor) -> None:
        """One Adam update of ``param`` along ``grad``, then the next step's learning rate.
        In place on tensors without autograd history (``param`` is not a leaf that requires grad)."""
        beta1, beta2 = self.betas
        lr = self._next_lr
        self.steps += 1
        if self.fused:
            self._step_tensor.fill_(self.steps)
            torch._fused_adam_([self.param], [grad], [self.exp_avg], [self.exp_avg_sq], [], [self._step_tensor],
                               lr=lr, beta1=beta1, beta2=beta2, weight_decay=0.0, eps=self.eps, amsgrad=False,
                               maximize=False)
        else:
            self._plain_step(grad, lr)
        self._next_lr = self.param_groups[0]["lr"] = self.lr_at(self.steps)

    def _plain_step(self, grad: torch.Tensor, lr: float) -> None:
        beta1, beta2 = self.betas
        self.exp_avg.lerp_(grad, 1.0 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        bias1 = 1.0 - beta1 ** self.steps
        bias2_sqrt = math.sqrt(1.0 - beta2 ** self.steps)
        denom = (self.exp_avg_sq.sqrt() / bias2_sqrt).add_(self.eps)
        self.param.addcdiv_(self.exp_avg, denom, value=-lr / bias1)

    def state_dict(self) -> dict:
        return {"steps": self.steps, "exp_avg": self.exp_avg.clone(), "exp_avg_sq": self.exp_avg_sq.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])
        self.exp_avg.copy_(state["exp_avg"])
        self.exp_avg_sq.copy_(state["exp_avg_sq"])
        self._next_lr = self.param_groups[0]["lr"] = self.lr_at(self.steps)
