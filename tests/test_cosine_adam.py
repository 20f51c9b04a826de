"""AdaRand's prior optimizer against torch.optim.Adam driven by CosineAnnealingLR."""

import torch

from adarand.handlers.cosine_adam import CosineAdam


def _torch_pair(start, lr, total):
    p = torch.nn.Parameter(start.clone())
    opt = torch.optim.Adam([p], lr=lr, foreach=False)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    return p, opt, sched


def test_same_trajectory_and_learning_rates_as_torch_adam_with_cosine_annealing():
    torch.manual_seed(0)
    start, total = torch.randn(4, 7), 25
    grads = [torch.randn(4, 7) * (i + 1) for i in range(total)]
    p, opt, sched = _torch_pair(start, 0.05, total)
    mine = start.clone()
    ours = CosineAdam(mine, 0.05, total)
    for g in grads:
        assert abs(ours.param_groups[0]["lr"] - opt.param_groups[0]["lr"]) < 1e-9
        p.grad = g.clone()
        opt.step()
        sched.step()
        ours.step(g)
        assert torch.allclose(mine, p.detach(), rtol=1e-6, atol=1e-7)
    assert ours.param_groups[0]["lr"] < 1e-9  # annealed to 0 at the end
    assert not torch.allclose(mine, start)  # it moved


def test_resumed_optimizer_continues_the_same_trajectory():
    torch.manual_seed(1)
    total = 12
    grads = [torch.randn(3, 5) for _ in range(total)]
    a = CosineAdam(torch.zeros(3, 5), 0.1, total)
    for g in grads[:5]:
        a.step(g)
    b = CosineAdam(a.param.clone(), 0.1, total)
    b.load_state_dict(a.state_dict())
    for g in grads[5:]:
        a.step(g)
        b.step(g)
    assert torch.equal(a.param, b.param)
    assert a.param_groups == b.param_groups
