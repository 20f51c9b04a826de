"""AdaRand's loss terms, EMA and sampling against naive implementations."""

import math

import pytest
import torch

from adarand.handlers.adarand import ema_class_means, prior_loss
from adarand.handlers.random_features import feature_regularizer, sample_references


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
    """The direct kernel call against torch.nn.functional.mse_loss, forward and backward."""
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
    in_place = mu_bar.clone()
    ema_class_means(in_place, feats, labels, alpha=0.3, eye=torch.eye(k), out=in_place)
    assert torch.equal(in_place, out)
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
    torch.manual_seed(5)
    want = torch.normal(mu[labels], sigma[labels])
    torch.manual_seed(5)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        z = sample_references(mu, sigma, labels)
    assert torch.equal(z, want)
    assert "aten::_local_scalar_dense" not in {e.key for e in prof.key_averages()}


@pytest.mark.parametrize("form", ["paper", "official"])
@pytest.mark.parametrize("intra,inter", [(True, True), (False, True), (True, False)])
def test_closed_form_gradient_matches_autograd(form, intra, inter):
    from adarand.handlers.adarand import prior_loss_and_grad, prior_losses

    g = torch.Generator().manual_seed(1)
    mu = (torch.randn(6, 5, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    mu_bar = torch.randn(6, 5, generator=g, dtype=torch.float64)
    loss, li, le = prior_loss(mu, mu_bar, intra, inter, form)
    loss.backward()
    acc = torch.zeros(3, dtype=torch.float64)
    grad = prior_loss_and_grad(torch.stack([mu.detach(), mu_bar]), intra, inter, form, acc=acc)
    assert torch.allclose(grad, mu.grad, rtol=1e-10, atol=1e-12)
    loss2, li2, le2 = prior_losses(acc, 1, 6, intra, inter, form).tolist()
    assert loss2 == pytest.approx(loss.item(), rel=1e-12)
    assert li2 == pytest.approx(li.item(), rel=1e-12) and le2 == pytest.approx(le.item(), abs=1e-12)


@pytest.mark.parametrize("form", ["paper", "official"])
@pytest.mark.parametrize("intra,inter", [(True, True), (False, True), (True, False)])
def test_accumulated_statistics_give_the_sums_of_the_losses(form, intra, inter):
    """The logged prior losses: the statistics of several iterations, summed into one ``acc``, map
    to the sums of each iteration's losses (computed by the autograd definition)."""
    from adarand.handlers.adarand import PriorWorkspace, prior_loss_and_grad, prior_losses

    g = torch.Generator().manual_seed(2)
    acc = torch.zeros(3, dtype=torch.float64)
    want = torch.zeros(3, dtype=torch.float64)
    work = PriorWorkspace(5, 7, intra, inter, dtype=torch.float64)  # one workspace for every iteration
    for _ in range(4):
        mu = torch.randn(5, 7, generator=g, dtype=torch.float64)
        mu_bar = torch.randn(5, 7, generator=g, dtype=torch.float64)
        grad = prior_loss_and_grad(torch.stack([mu, mu_bar]), intra, inter, form, acc=acc, work=work)
        assert torch.equal(grad, prior_loss_and_grad(torch.stack([mu, mu_bar]), intra, inter, form))
        want += torch.stack(prior_loss(mu, mu_bar, intra, inter, form))
    assert torch.allclose(prior_losses(acc, 4, 5, intra, inter, form), want, rtol=1e-12, atol=1e-12)
