"""Feature norm, closed-form head gradient norm, entropy and mutual information."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adarand.handlers.diagnostics import (
    batch_mean_grad_norm_sq,
    entropy_and_mutual_info,
    feature_entropy,
    feature_norm_sq,
    head_grad_norm_sq,
)


def test_feature_norm():
    f = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    assert float(feature_norm_sq(f)) == pytest.approx((25 + 1) / 2)


def test_grad_norm_is_eq5_per_sample_autograd_averaged():
    """Eq. 5: the squared norm of the head's gradient of each sample's CE alone, by autograd one
    sample at a time, averaged over the batch; and the batch-mean gradient's norm under its own name."""
    torch.manual_seed(0)
    b, d, k = 7, 5, 4
    g = torch.randn(b, d) * 2
    y = torch.randint(0, k, (b,))
    head = torch.nn.Linear(d, k)
    per_sample = []
    for i in range(b):
        head.zero_grad()
        F.cross_entropy(head(g[i:i + 1]), y[i:i + 1]).backward()
        per_sample.append(float(head.weight.grad.pow(2).sum()))
    logits = head(g).detach()
    assert float(head_grad_norm_sq(logits, g, y)) == pytest.approx(sum(per_sample) / b, rel=1e-5)
    head.zero_grad()
    F.cross_entropy(head(g), y).backward()
    batch_mean = float(head.weight.grad.pow(2).sum())
    assert float(batch_mean_grad_norm_sq(logits, g, y)) == pytest.approx(batch_mean, rel=1e-5)
    assert batch_mean < sum(per_sample) / b  # a different quantity


def test_entropy_three_points_by_hand():
    # d = 1, points 0, 1, 3: squared distances 1, 9, 4 (each pair twice among ordered pairs)
    g = torch.tensor([[0.0], [1.0], [3.0]])
    assert feature_entropy(g) == pytest.approx(math.log(36) / 3)


def test_entropy_skips_zero_distance_pairs():
    g = torch.tensor([[0.0], [0.0], [2.0]])  # the duplicate pair is left out; four pairs at d^2 = 4
    assert feature_entropy(g) == pytest.approx(math.log(4))


def test_entropy_with_duplicate_rows_divides_by_the_pairs_kept():
    # d = 2; rows a, a, a, b with ||a - b||^2 = 25: the 6 ordered pairs among the three copies of a
    # are at zero distance and skipped; the 6 pairs (a, b) and (b, a) are kept, so
    # H = d / 6 * 6 log 25 = 2 log 25 (dividing by all N(N-1) = 12 pairs would give log 25)
    a, b = [1.0, 2.0], [4.0, 6.0]
    g = torch.tensor([a, a, a, b])
    assert feature_entropy(g) == pytest.approx(2 * math.log(25))
    assert feature_entropy(g, chunk=1) == pytest.approx(2 * math.log(25))  # the same across blocks


def test_mutual_information_by_hand():
    g = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 4.0]])
    y = torch.tensor([0, 0, 1, 1])
    # all pairs: 1, 4, 16, 5, 17, 4 -> H = d * mean log = 2 * log(21760) / 6
    h_expected = 2 * math.log(1 * 4 * 16 * 5 * 17 * 4) / 6
    # class 0: d^2 = 1 -> H_0 = 0; class 1: d^2 = 4 -> H_1 = 2 log 4; equal weights
    h_cond = 0.5 * 0 + 0.5 * 2 * math.log(4)
    h, mi = entropy_and_mutual_info(g, y, num_classes=3)  # class 2 is empty: left out
    assert h == pytest.approx(h_expected)
    assert mi == pytest.approx(h_expected - h_cond)


def test_singleton_classes_are_left_out_and_weights_renormalised():
    g = torch.tensor([[0.0], [1.0], [3.0]])
    y = torch.tensor([0, 0, 1])  # class 1 has one sample: only class 0 (H_0 = d * log 1 = 0) counts
    h, mi = entropy_and_mutual_info(g, y, num_classes=2)
    assert mi == pytest.approx(h - 0.0)
    assert h == pytest.approx(math.log(36) / 3)


def test_chunked_equals_naive():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(53, 6))
    y = rng.integers(0, 4, size=53)
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    off = ~np.eye(53, dtype=bool)
    h = 6 * np.log(d2[off]).mean()
    hk, nk = [], []
    for k in range(4):
        m = y == k
        sub = d2[np.ix_(m, m)][~np.eye(m.sum(), dtype=bool)]
        hk.append(6 * np.log(sub).mean())
        nk.append(m.sum())
    mi = h - np.dot(np.array(nk) / sum(nk), hk)
    for chunk in (1, 7, 1000):
        got_h, got_mi = entropy_and_mutual_info(torch.tensor(x), torch.tensor(y), 4, chunk=chunk)
        assert got_h == pytest.approx(h, rel=1e-9)
        assert got_mi == pytest.approx(mi, rel=1e-7, abs=1e-9)


def test_training_log_means_by_hand():
    """Per-interval means of the step scalars, also when a scalar appears midway."""
    from types import SimpleNamespace

    from adarand.core.step import StepState
    from adarand.handlers.training_log import TrainingDiagnostics

    diag = TrainingDiagnostics(None, num_classes=2, log_every=3, max_samples=10, chunk=4, epoch_length=3,
                               enabled=False)
    engine = SimpleNamespace(state=SimpleNamespace(output=None, metrics={}, iteration=0, epoch=1))
    for i, extra in enumerate([None, None, 5.0]):
        step = StepState(x=None, y=torch.tensor([0, 1]), logits=None, features=torch.zeros(2, 3),
                         losses={"ce": torch.tensor(float(i + 1))}, loss=torch.tensor(float(i + 1)))
        if extra is not None:
            step.logs["ada"] = torch.tensor(extra)
        engine.state.output = step
        diag.accumulate(engine)
    diag.write_interval(engine)
    assert engine.state.metrics["loss_ce"] == pytest.approx(2.0)  # (1 + 2 + 3) / 3
    diag.write_epoch(engine)
    assert diag.last_epoch["loss"] == pytest.approx(2.0)
    assert diag.last_epoch["ada"] == pytest.approx(5.0 / 3)  # summed over the epoch's 3 iterations


def test_step_logs_are_logged_as_interval_and_epoch_means():
    """A regularizer's per-step scalars (``step.logs``, e.g. AdaRand's prior losses) give interval
    and epoch means, for intervals that cross an epoch's end and for the epoch."""
    from types import SimpleNamespace

    from adarand.core.step import StepState
    from adarand.handlers.training_log import TrainingDiagnostics

    written = []
    writer = SimpleNamespace(log=lambda scalars, step: written.extend((tag, step, v) for tag, v in scalars.items()))
    diag = TrainingDiagnostics(writer, num_classes=2, log_every=2, max_samples=10, chunk=4, epoch_length=3,
                               enabled=False)
    engine = SimpleNamespace(state=SimpleNamespace(output=None, metrics={}, iteration=0, epoch=1))
    values = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]  # two epochs of three iterations
    for i, v in enumerate(values, start=1):
        engine.state.iteration, engine.state.epoch = i, (i - 1) // 3 + 1
        engine.state.output = StepState(x=None, y=torch.tensor([0, 1]), logits=None, features=torch.zeros(2, 3),
                                        losses={"ce": torch.tensor(v)}, logs={"loss_src": torch.tensor(v)},
                                        loss=torch.tensor(v))
        diag.accumulate(engine)
        if i % 2 == 0:
            diag.write_interval(engine)
        if i % 3 == 0:
            diag.write_epoch(engine)
    by_tag = {}
    for tag, step, v in written:
        by_tag.setdefault(tag, []).append((step, v))
    want_iter = [(2, 1.5), (4, 6.0), (6, 24.0)]  # the interval (3, 4] crosses the end of epoch 1
    want_epoch = [(1, 7.0 / 3), (2, 56.0 / 3)]
    for name in ("ce", "src"):
        assert by_tag[f"loss/{name}"] == [pytest.approx(w) for w in want_iter]  # x: iteration
        assert by_tag[f"loss_per_epoch/{name}"] == [pytest.approx(w) for w in want_epoch]  # x: epoch
    assert engine.state.metrics["loss_src"] == pytest.approx(24.0)
