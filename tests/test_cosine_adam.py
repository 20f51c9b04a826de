"""AdaRand's prior optimizer against torch.optim.Adam driven by CosineAnnealingLR."""

import pytest
import torch

from adarand.handlers.cosine_adam import FUSED, CosineAdam

# the fused kernel where this torch has it, and the plain in-place path always
PATHS = [pytest.param(True, id="fused", marks=pytest.mark.skipif(not FUSED, reason="no torch._fused_adam_")),
         pytest.param(False, id="plain")]


def _torch_pair(start, lr, total):
    p = torch.nn.Parameter(start.clone())
    opt = torch.optim.Adam([p], lr=lr, foreach=False)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    return p, opt, sched


@pytest.mark.parametrize("fused", PATHS)
def test_same_trajectory_and_learning_rates_as_torch_adam_with_cosine_annealing(fused):
    torch.manual_seed(0)
    start, total = torch.randn(4, 7), 25
    grads = [torch.randn(4, 7) * (i + 1) for i in range(total)]
    p, opt, sched = _torch_pair(start, 0.05, total)
    mine = start.clone()
    ours = CosineAdam(mine, 0.05, total, fused=fused)
    for g in grads:
        assert abs(ours.param_groups[0]["lr"] - opt.param_groups[0]["lr"]) < 1e-9
        p.grad = g.clone()
        opt.step()
        sched.step()
        ours.step(g)
        assert torch.allclose(mine, p.detach(), rtol=1e-6, atol=1e-7)
    assert ours.param_groups[0]["lr"] < 1e-9  # annealed to 0 at the end
    assert not torch.allclose(mine, start)  # it moved


@pytest.mark.parametrize("fused", PATHS)
def test_resumed_optimizer_continues_the_same_trajectory(fused):
    torch.manual_seed(1)
    total = 12
    grads = [torch.randn(3, 5) for _ in range(total)]
    a = CosineAdam(torch.zeros(3, 5), 0.1, total, fused=fused)
    for g in grads[:5]:
        a.step(g)
    b = CosineAdam(a.param.clone(), 0.1, total, fused=fused)
    b.load_state_dict(a.state_dict())
    for g in grads[5:]:
        a.step(g)
        b.step(g)
    assert torch.equal(a.param, b.param)
    assert a.param_groups == b.param_groups
