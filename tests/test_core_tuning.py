"""Core-tuning's formulas against naive loops written here, its gradient against finite
differences, and its handler through a real step of the trainer."""

import math

import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Events

from adarand.engine.build import build_run
from adarand.engine.config import load_config
from adarand.handlers.core_tuning import focal_supcon, hard_pairs, mixed_rows, soft_cross_entropy

from conftest import write_tiny_config


def naive_pairs(g, y, zero_index_as_none=False):
    b = len(y)
    cos = [[float(F.cosine_similarity(g[i], g[j], dim=0)) for j in range(b)] for i in range(b)]
    p, n = [], []
    for i in range(b):
        if zero_index_as_none:
            masked = [cos[i][j] if (y[j] == y[i] and j != i) else 0.0 for j in range(b)]
            k = min(range(b), key=lambda j: (masked[j], j))
            p.append(i if k == 0 else k)
        else:
            same = [j for j in range(b) if y[j] == y[i] and j != i]
            p.append(min(same, key=lambda j: (cos[i][j], j)) if same else i)
        other = [j for j in range(b) if y[j] != y[i]]
        n.append(max(other, key=lambda j: (cos[i][j], -j)) if other else i)
    return p, n


def test_hard_pairs_least_similar_positive_most_similar_negative_and_a_class_of_one():
    torch.manual_seed(1)
    g = torch.randn(9, 5)
    y = torch.tensor([0, 0, 1, 1, 1, 2, 0, 1, 0])  # class 2 has one sample
    p, n = hard_pairs(g, y)
    assert (p.tolist(), n.tolist()) == naive_pairs(g, y.tolist())
    assert p[5] == 5  # alone in its class: itself
    p0, _ = hard_pairs(g, y, zero_index_as_none=True)
    assert p0.tolist() == naive_pairs(g, y.tolist(), zero_index_as_none=True)[0]
    _, n1 = hard_pairs(g, torch.zeros(9, dtype=torch.long))  # one class: no negative, itself
    assert n1.tolist() == list(range(9))


def test_mixed_rows_and_the_drawn_weights(tmp_path):
    torch.manual_seed(2)
    g, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    onehot = F.one_hot(y, 3).float()
    perm, p, n = torch.tensor([3, 0, 5, 1, 2, 4]), torch.tensor([3, 4, 5, 0, 1, 2]), torch.tensor([1, 2, 0, 4, 5, 3])
    lam_neg, lam_pos = torch.rand(6) * 0.2 + 0.8, torch.rand(6)
    rows, labels = mixed_rows(g, onehot, perm, lam_neg, lam_pos, p, n)
    for i in range(6):
        assert torch.allclose(rows[i], (1 - lam_neg[i]) * g[i] + lam_neg[i] * g[perm[i]])
        assert torch.allclose(labels[i], (1 - lam_neg[i]) * onehot[i] + lam_neg[i] * onehot[perm[i]])
        assert torch.allclose(rows[6 + i], lam_pos[i] * g[p[i]] + (1 - lam_pos[i]) * g[n[i]])
        assert torch.allclose(labels[6 + i], lam_pos[i] * onehot[p[i]] + (1 - lam_pos[i]) * onehot[n[i]])
    run = build_run(load_config(write_tiny_config(tmp_path, "core_tuning")))
    draws = [run.regularizer.mixing_weights(64, torch.device("cpu")) for _ in range(20)]
    lam_neg = torch.cat([d[1] for d in draws])
    lam_pos = torch.cat([d[2] for d in draws])
    assert float(lam_neg.min()) == pytest.approx(0.8) and bool((lam_neg <= 1).all())  # Beta(1, 1) raised to 0.8
    assert 0.15 < float((lam_neg == 0.8).float().mean()) < 1.0  # ~80 % of Beta(1, 1) draws are below 0.8
    assert float(lam_pos.min()) < 0.1 and float(lam_pos.max()) > 0.9
    assert all(sorted(d[0].tolist()) == list(range(64)) for d in draws)


def test_soft_cross_entropy_against_a_loop():
    torch.manual_seed(3)
    logits, soft = torch.randn(5, 4), torch.softmax(torch.randn(5, 4), 1)
    expected = 0.0
    for i in range(5):
        norm = math.log(sum(math.exp(float(v)) for v in logits[i]))
        expected += -sum(float(soft[i, k]) * (float(logits[i, k]) - norm) for k in range(4))
    assert float(soft_cross_entropy(logits, soft)) == pytest.approx(expected / 5, rel=1e-6)


def naive_focal_supcon(z, labels, tau):
    m = len(z)
    sim = [[float(z[i] @ z[j]) / tau for j in range(m)] for i in range(m)]
    total, anchors = 0.0, 0
    for i in range(m):
        positives = [j for j in range(m) if j != i and torch.equal(labels[i], labels[j])]
        if not positives:
            continue
        anchors += 1
        denominator = sum(math.exp(sim[i][k]) for k in range(m) if k != i)
        row = 0.0
        for j in positives:
            p = math.exp(sim[i][j]) / denominator
            row += (1 - p) * math.log(p)
        total += -row / m
    return total / anchors if anchors else 0.0


def test_focal_supcon_against_a_loop_past_thirty_classes_and_without_positives():
    torch.manual_seed(4)
    k = 40  # a base-10 encoding of the label vectors would confuse classes 35 and 36 here
    y = torch.tensor([35, 36, 35, 36, 2, 39, 2, 0])
    labels = F.one_hot(y, k).float()
    labels = torch.cat([labels, 0.3 * labels[:2] + 0.7 * labels[2:4], 0.3 * labels[:1] + 0.7 * labels[2:3]])
    z = F.normalize(torch.randn(len(labels), 6), dim=1)
    assert float(focal_supcon(z, labels, 0.07)) == pytest.approx(naive_focal_supcon(z, labels, 0.07), rel=1e-5)
    # every row's label vector its own: no positive anywhere, and the loss is 0
    alone = F.one_hot(torch.arange(5), 5).float()
    assert float(focal_supcon(F.normalize(torch.randn(5, 3), dim=1), alone)) == 0.0


def test_the_whole_loss_has_the_gradient_finite_differences_give():
    torch.manual_seed(5)
    b, d, k = 4, 3, 2
    y = torch.tensor([0, 1, 0, 1])
    onehot = F.one_hot(y, k).double()
    head, projection = torch.randn(k, d, dtype=torch.float64), torch.randn(3, d, dtype=torch.float64)
    perm, lam_neg, lam_pos = torch.tensor([2, 3, 1, 0]), torch.tensor([0.9, 0.85, 0.8, 0.95], dtype=torch.float64), \
        torch.tensor([0.3, 0.6, 0.5, 0.2], dtype=torch.float64)
    g0 = torch.randn(b, d, dtype=torch.float64)
    p, n = hard_pairs(g0, y)  # the pairs are a step's choice; the loss is smooth in g around it

    def loss(g):
        mixed, mixed_labels = mixed_rows(g, onehot, perm, lam_neg, lam_pos, p, n)
        rows, labels = torch.cat([g, mixed]), torch.cat([onehot, mixed_labels])
        ce = soft_cross_entropy(rows @ head.t(), labels)
        return ce + 0.1 * focal_supcon(F.normalize(rows @ projection.t(), dim=1), labels, 0.5)

    assert torch.autograd.gradcheck(loss, (g0.clone().requires_grad_(True),), eps=1e-6, atol=1e-6)


def test_a_step_of_the_trainer_replaces_the_ce_and_trains_the_projection_at_the_backbone_lr(tmp_path):
    """One real step: its loss terms equal the formulas applied to the step's features with the
    head, the projection and the draws as they were before the step."""
    import copy

    run = build_run(load_config(write_tiny_config(tmp_path, "core_tuning")))
    reg = run.regularizer
    reg.attach(run.trainer)
    seen = {}
    groups = {g["name"]: g for g in run.optimizer.param_groups}
    assert groups["projection"]["lr"] == groups["backbone"]["lr"] == run.cfg.optim.lr

    @run.trainer.on(Events.ITERATION_STARTED)
    def keep_before(engine):
        seen.update(state=copy.deepcopy(reg.rng.bit_generator.state), head=copy.deepcopy(run.net.head),
                    projection=copy.deepcopy(reg.projection))

    @run.trainer.on(Events.ITERATION_COMPLETED)
    def keep(engine):
        step = engine.state.output
        seen.update(features=step.features.detach().clone(), y=step.y.clone(),
                    losses={k: float(v.detach()) for k, v in step.losses.items()})
        engine.terminate()

    run.trainer.run(run.loaders.train, max_epochs=1)
    assert set(seen["losses"]) == {"ce", "contrast"}  # the plain CE is replaced, not added to
    reg.rng.bit_generator.state = seen["state"]
    g, y = seen["features"], seen["y"]
    perm, lam_neg, lam_pos = reg.mixing_weights(len(y), g.device)
    p, n = hard_pairs(g, y)
    onehot = F.one_hot(y, 3).float()
    mixed, mixed_labels = mixed_rows(g, onehot, perm, lam_neg, lam_pos, p, n)
    rows, labels = torch.cat([g, mixed]), torch.cat([onehot, mixed_labels])
    with torch.no_grad():
        ce = soft_cross_entropy(seen["head"](rows), labels)
        contrast = 0.1 * focal_supcon(F.normalize(seen["projection"](rows), dim=1), labels, 0.07)
    assert seen["losses"]["ce"] == pytest.approx(float(ce), rel=1e-5)
    assert seen["losses"]["contrast"] == pytest.approx(float(contrast), rel=1e-5)
    # the projection trained, and its weights are the method's state in checkpoints
    moved = [not torch.equal(a, b) for a, b in zip(seen["projection"].parameters(), reg.projection.parameters(),
                                                    strict=True)]
    assert all(moved)
    assert set(reg.state_dict()["projection"]) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    # the draws' state goes into checkpoints: restored, the next draws are the same
    state = copy.deepcopy(reg.state_dict())
    after = reg.mixing_weights(4, torch.device("cpu"))
    reg.load_state_dict(state)
    again = reg.mixing_weights(4, torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(after, again, strict=True))
    assert reg.report()["projection_head_mib"] == pytest.approx(
        sum(t.numel() * 4 for t in reg.projection.parameters()) / 2**20)


def test_the_mixing_weights_are_numpys_beta_draws_from_the_saved_stream(tmp_path):
    """perm, max(Beta(a, a), floor) and Beta(a, a) drawn again from the state the method saves."""
    import numpy as np

    run = build_run(load_config(write_tiny_config(tmp_path, "core_tuning"), ["method.alpha=0.4",
                                                                              "method.negative_floor=0.7"]))
    reg = run.regularizer
    saved = reg.state_dict()["rng"]
    perm, lam_neg, lam_pos = reg.mixing_weights(64, torch.device("cpu"))
    again = np.random.default_rng()
    again.bit_generator.state = saved
    assert perm.tolist() == again.permutation(64).tolist()
    assert np.allclose(lam_neg.numpy(), np.maximum(again.beta(0.4, 0.4, 64), 0.7), atol=1e-7)
    assert np.allclose(lam_pos.numpy(), again.beta(0.4, 0.4, 64), atol=1e-7)
    # Beta(0.4, 0.4) piles up at 0 and 1, which uniform draws would not
    assert float(((lam_pos < 0.1) | (lam_pos > 0.9)).float().mean()) > 0.3
