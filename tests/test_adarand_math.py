"""AdaRand's loss terms, EMA, sampling and prior step against naive implementations."""

import math

import pytest
import torch

from adarand.handlers.adarand import (
    ema_class_means,
    feature_regularizer,
    prior_loss,
    prior_lr_factor,
    prior_step,
    sample_references,
)


def naive_cos(u, v):
    dot = sum(a * b for a, b in zip(u, v, strict=True))
    return float(dot / math.sqrt(sum(a * a for a in u)) / math.sqrt(sum(b * b for b in v)))


def naive_prior_loss(mu, mu_bar, intra, inter, form):
    k = len(mu)
    li = 0.0
    if intra:
        for a, b in zip(mu, mu_bar, strict=True):
            c = naive_cos(a, b)
            li += (1 - c) if form == "paper" else (c - 1) ** 2
        li /= k
    le = 0.0
    if inter and k > 1:
        for i in range(k):
            for j in range(k):
                if i != j:
                    c = naive_cos(mu[i], mu[j])
                    le += -(1 - c) if form == "paper" else c ** 2
        le /= k * (k - 1)
    return li + le


@pytest.mark.parametrize("form", ["paper", "official"])
@pytest.mark.parametrize("intra,inter", [(True, True), (False, True), (True, False)])
def test_prior_loss_value_and_gradient(form, intra, inter):
    g = torch.Generator().manual_seed(0)
    mu0 = torch.randn(4, 3, generator=g, dtype=torch.float64)
    mu_bar = torch.randn(4, 3, generator=g, dtype=torch.float64)
    mu = mu0.clone().requires_grad_(True)
    loss, _, _ = prior_loss(mu, mu_bar, intra, inter, form)
    loss.backward()
    expected = naive_prior_loss(mu0.tolist(), mu_bar.tolist(), intra, inter, form)
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    # gradient against central finite differences of the naive implementation
    eps = 1e-6
    for i in range(4):
        for j in range(3):
            plus, minus = mu0.clone(), mu0.clone()
            plus[i, j] += eps
            minus[i, j] -= eps
            fd = (naive_prior_loss(plus.tolist(), mu_bar.tolist(), intra, inter, form)
                  - naive_prior_loss(minus.tolist(), mu_bar.tolist(), intra, inter, form)) / (2 * eps)
            assert float(mu.grad[i, j]) == pytest.approx(fd, abs=1e-6)


@pytest.mark.parametrize("form", ["paper", "official"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_prior_loss_with_few_classes(form, k):
    """Two classes have one pair each way; one class has none (l_inter = 0)."""
    g = torch.Generator().manual_seed(k)
    mu, mu_bar = torch.randn(k, 3, generator=g, dtype=torch.float64), torch.randn(k, 3, generator=g, dtype=torch.float64)
    loss, _, l_inter = prior_loss(mu, mu_bar, True, True, form)
    assert float(loss) == pytest.approx(naive_prior_loss(mu.tolist(), mu_bar.tolist(), True, True, form), rel=1e-10)
    assert (float(l_inter) == 0.0) == (k == 1)


def test_prior_loss_ablations_change_only_their_term():
    mu = torch.randn(5, 4, dtype=torch.float64)
    mu_bar = torch.randn(5, 4, dtype=torch.float64)
    total, li, le = prior_loss(mu, mu_bar, True, True)
    _, li_only, le_zero = prior_loss(mu, mu_bar, True, False)
    _, li_zero, le_only = prior_loss(mu, mu_bar, False, True)
    assert float(le_zero) == 0.0 and float(li_zero) == 0.0
    assert float(li_only) == pytest.approx(float(li)) and float(le_only) == pytest.approx(float(le))
    assert float(total) == pytest.approx(float(li) + float(le))
    # paper form: intra pulls mu to mu_bar (>= 0), inter pushes classes apart (<= 0)
    assert float(li) >= 0 and float(le) <= 0


def test_feature_regularizer_reductions():
    f = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 1.0]])
    z = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    # squared differences: [0, 4, 9] and [1, 4, 0]
    assert float(feature_regularizer(f, z, "mean")) == pytest.approx((13 + 5) / 6)
    assert float(feature_regularizer(f, z, "sum")) == pytest.approx((13 + 5) / 2)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_feature_regularizer_value_and_gradient_match_torch_mse_loss(reduction):
    """L_reg against torch.nn.functional.mse_loss, forward and backward."""
    torch.manual_seed(0)
    base = torch.randn(6, 5, dtype=torch.float64)
    z = torch.randn(6, 5, dtype=torch.float64)
    f1, f2 = base.clone().requires_grad_(True), base.clone().requires_grad_(True)
    got = feature_regularizer(f1, z, reduction)
    want = torch.nn.functional.mse_loss(f2, z, reduction=reduction) / (6 if reduction == "sum" else 1)
    (3.0 * got).backward()
    (3.0 * want).backward()
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    assert torch.allclose(f1.grad, f2.grad, rtol=1e-12, atol=0)
    assert torch.allclose(f1.grad, 3.0 * 2 * (base - z) / (30 if reduction == "mean" else 6))


def test_ema_skips_absent_classes():
    mu_bar = torch.tensor([[0.0, 0.0], [10.0, 10.0], [4.0, -4.0]])
    feats = torch.tensor([[1.0, 2.0], [3.0, 4.0], [6.0, 6.0]])
    labels = torch.tensor([0, 0, 2])  # class 1 absent
    out = ema_class_means(mu_bar, feats, labels, alpha=0.25)
    expected = torch.tensor([[0.75 * 2.0, 0.75 * 3.0],   # 0.25*0 + 0.75*mean([1,2],[3,4])
                             [10.0, 10.0],                # untouched
                             [0.25 * 4 + 0.75 * 6, 0.25 * -4 + 0.75 * 6]])
    assert torch.allclose(out, expected)


def test_ema_reduce_is_applied_to_sums_and_counts():
    # a "reduce" that doubles both (as an all-reduce over two identical processes) leaves means unchanged
    mu_bar = torch.zeros(2, 2)
    feats = torch.tensor([[2.0, 4.0]])
    labels = torch.tensor([1])
    seen = []
    out = ema_class_means(mu_bar, feats, labels, 0.5, reduce=lambda t: (seen.append(t.clone()), 2 * t)[1])
    assert len(seen) == 1  # one collective: the class sums with the counts as a last column
    assert torch.equal(seen[0], torch.tensor([[0.0, 0.0, 0.0], [2.0, 4.0, 1.0]]))
    assert torch.allclose(out, torch.tensor([[0.0, 0.0], [1.0, 2.0]]))


def test_ema_matches_a_loop_over_classes():
    torch.manual_seed(3)
    k, d = 6, 5
    mu_bar = torch.randn(k, d)
    feats = torch.randn(20, d)
    labels = torch.randint(0, 4, (20,))  # classes 4 and 5 absent
    out = ema_class_means(mu_bar, feats, labels, alpha=0.3)
    for c in range(k):
        rows = feats[labels == c]
        want = mu_bar[c] if len(rows) == 0 else 0.3 * mu_bar[c] + 0.7 * rows.mean(0)
        assert torch.allclose(out[c], want, atol=1e-6)


def test_sampling_statistics():
    torch.manual_seed(0)
    mu = torch.tensor([[1.0, -2.0], [5.0, 0.5]])
    sigma = torch.tensor([[0.5, 2.0], [1.0, 0.1]])
    labels = torch.tensor([1] * 20000 + [0] * 20000)
    z = sample_references(mu, sigma, labels)
    for k, rows in ((1, z[:20000]), (0, z[20000:])):
        # standard error of the mean: sigma / sqrt(n) < 0.015; of the std: sigma / sqrt(2n) < 0.011
        assert torch.allclose(rows.mean(0), mu[k], atol=0.06)
        assert torch.allclose(rows.std(0), sigma[k], rtol=0.03)
    assert not z.requires_grad


@pytest.mark.parametrize("b,d", [(16, 128), (7, 33), (3, 5)])
def test_sampling_draws_what_torch_normal_draws(b, d):
    """The same seed gives exactly torch.normal(mu[y], sigma[y]), without torch.normal's read of
    min(std) >= 0 back to the host (aten::_local_scalar_dense, a device sync on a GPU)."""
    g = torch.Generator().manual_seed(1)
    mu, sigma = torch.randn(4, d, generator=g), torch.rand(4, d, generator=g) + 1e-4
    labels = torch.randint(0, 4, (b,), generator=g)
    want = torch.normal(mu[labels], sigma[labels], generator=torch.Generator().manual_seed(5))
    global_state = torch.get_rng_state()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        z = sample_references(mu, sigma, labels, torch.Generator().manual_seed(5))
    assert torch.equal(z, want)
    assert torch.equal(torch.get_rng_state(), global_state)  # the global generator is not touched
    assert "aten::_local_scalar_dense" not in {e.key for e in prof.key_averages()}


def test_prior_lr_schedules_by_hand():
    total = 16
    for t in (0, 4, 8, 15, 16):
        assert prior_lr_factor("published", t, total) == pytest.approx(math.cos(7 * math.pi / 16 * t / 16))
        assert prior_lr_factor("cosine", t, total) == pytest.approx(0.5 * (1 + math.cos(math.pi * t / 16)))
        assert prior_lr_factor("constant", t, total) == 1.0
    # the published schedule ends near cos(7 pi / 16) = 0.195, not at 0
    assert prior_lr_factor("published", total, total) == pytest.approx(0.19509, abs=1e-5)
    assert prior_lr_factor("cosine", total, total) == pytest.approx(0.0, abs=1e-12)


def naive_adam_step(p, grad, m, v, t, lr, b1=0.9, b2=0.999, eps=1e-8):
    """One Adam update written out (Kingma & Ba, with torch's placement of eps)."""
    m = b1 * m + (1 - b1) * grad
    v = b2 * v + (1 - b2) * grad * grad
    m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
    return p - lr * m_hat / (v_hat.sqrt() + eps), m, v


@pytest.mark.parametrize("schedule", ["published", "cosine", "constant"])
def test_prior_step_follows_adam_with_its_lambda_lr(schedule):
    """prior_step with torch.optim.Adam and a LambdaLR of the schedule, step by step, against
    Adam written out with the lr of the schedule's formula, and the gradient of the naive loss."""
    total, xi = 6, 0.05
    g = torch.Generator().manual_seed(4)
    mu0 = torch.randn(4, 3, generator=g, dtype=torch.float64)
    mu_bar = torch.randn(4, 3, generator=g, dtype=torch.float64)
    mu = mu0.clone().requires_grad_(True)
    opt = torch.optim.Adam([mu], lr=xi)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: prior_lr_factor(schedule, t, total))
    lr_formula = {"published": lambda t: xi * math.cos(7 * math.pi / 16 * t / total),
                  "cosine": lambda t: xi * 0.5 * (1 + math.cos(math.pi * t / total)),
                  "constant": lambda t: xi}[schedule]
    ref, m, v = mu0.clone(), torch.zeros_like(mu0), torch.zeros_like(mu0)
    for t in range(total):
        assert opt.param_groups[0]["lr"] == pytest.approx(lr_formula(t), rel=1e-12)
        losses = prior_step(mu, mu_bar, opt, sched, True, True, "paper")
        assert float(losses[0]) == pytest.approx(naive_prior_loss(ref.tolist(), mu_bar.tolist(), True, True, "paper"))
        grad = torch.zeros_like(ref)  # central differences of the naive loss
        for i in range(4):
            for j in range(3):
                plus, minus = ref.clone(), ref.clone()
                plus[i, j] += 1e-6
                minus[i, j] -= 1e-6
                grad[i, j] = (naive_prior_loss(plus.tolist(), mu_bar.tolist(), True, True, "paper")
                              - naive_prior_loss(minus.tolist(), mu_bar.tolist(), True, True, "paper")) / 2e-6
        ref, m, v = naive_adam_step(ref, grad, m, v, t + 1, lr_formula(t))
        assert torch.allclose(mu.detach(), ref, atol=1e-7), t
    assert not torch.equal(mu.detach(), mu0)
