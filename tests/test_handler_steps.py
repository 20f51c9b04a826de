"""Every regularizer through real steps of the real trainer: the step's inputs are recorded (images,
labels, features, logits, the regularizer's state and random generator before the step, the head),
and what the handler should have produced is worked out again from them with naive code here."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Events

from adarand.core.config import ModelConfig
from adarand.core.step import TrainEvents
from adarand.engine.build import build_run
from adarand.engine.config import load_config
from adarand.models import create_model

from conftest import write_tiny_config


def build(tmp_path, method, overrides=(), **kw):
    return build_run(load_config(write_tiny_config(tmp_path, method, **kw), list(overrides)))


def record_steps(run, iterations: int, own_ce: bool = False) -> list[dict]:
    """Prepare and attach the run's regularizer, run ``iterations`` steps of the real trainer, and
    return each step's record. The recorder's COMPUTE_LOSS handler comes after the regularizer's,
    so it sees the step's losses as the optimizer will. ``own_ce``: the method replaces the
    cross-entropy (else it is checked to be the batch's)."""
    reg = run.regularizer
    reg.prepare()
    reg.attach(run.trainer)
    steps = []

    @run.trainer.on(Events.ITERATION_STARTED)
    def before(engine):
        steps.append({"state": copy.deepcopy(reg.state_dict()), "generator": run.ctx.generator.get_state(),
                      "head": {k: v.detach().clone() for k, v in run.net.head.state_dict().items()},
                      "backbone": copy.deepcopy(run.net.backbone.state_dict())})

    @run.trainer.on(TrainEvents.COMPUTE_LOSS)
    def record(engine):
        s = engine.state.step
        steps[-1].update(x=s.x.detach().clone(), y=s.y.clone(), features=s.features.detach().clone(),
                         logits=s.logits.detach().clone(), losses={k: v.detach().clone() for k, v in s.losses.items()})

    @run.trainer.on(Events.ITERATION_COMPLETED)
    def after(engine):
        steps[-1]["after"] = copy.deepcopy(reg.state_dict())
        steps[-1]["logs"] = {k: v.detach().clone() for k, v in engine.state.output.logs.items()}

    run.trainer.run(run.loaders.train, max_epochs=1, epoch_length=iterations)
    for s in steps if not own_ce else ():
        assert s["losses"]["ce"] == pytest.approx(float(F.cross_entropy(s["logits"].double(), s["y"])), rel=1e-6)
    return steps


# -- the random-feature family --------------------------------------------------------------------
def naive_references(prior: str, state: dict, generator_state, y, shape):
    """z as the prior defines it, drawn again from the generator's state before the step."""
    g = torch.Generator().manual_seed(0)
    g.set_state(generator_state)
    if prior == "zero":
        return torch.zeros(shape)
    if prior == "uniform":
        return torch.rand(shape, generator=g)
    if prior == "normal":
        return torch.randn(shape, generator=g)
    rows = y if prior == "class" else torch.zeros_like(y)
    eps = torch.randn(shape, generator=g)
    return torch.stack([state["mu"][r] + state["sigma"][r] * eps[i] for i, r in enumerate(rows.tolist())])


@pytest.mark.parametrize("method,prior,reduction", [
    ("fnp", "zero", "mean"), ("randreg_uniform", "uniform", "mean"), ("randreg_normal", "normal", "sum"),
    ("randreg_global", "global", "mean"), ("randreg_cp", "class", "sum"), ("adarand", "class", "mean")])
def test_the_random_feature_term_is_lambda_times_the_distance_to_the_drawn_references(tmp_path, method, prior,
                                                                                      reduction):
    lam = 0.7
    run = build(tmp_path, method, [f"method.lambda={lam}", f"method.reduction={reduction}"])
    for s in record_steps(run, 2):
        b, d = s["features"].shape
        z = naive_references(prior, s["state"], s["generator"], s["y"], (b, d))
        squares = sum(float(((s["features"][i].double() - z[i].double()) ** 2).sum()) for i in range(b))
        expected = lam * squares / (b * d if reduction == "mean" else b)
        assert float(s["losses"]["reg"]) == pytest.approx(expected, rel=1e-5)


def naive_prior_objective(mu: torch.Tensor, mu_bar: torch.Tensor, form: str) -> torch.Tensor:
    """L_ada = l_intra + l_inter, one class and one pair at a time (differentiable in mu)."""
    k = mu.shape[0]

    def cos(u, v):
        return (u * v).sum() / (u.norm() * v.norm())

    terms = [cos(mu[i], mu_bar[i]) for i in range(k)]
    intra = sum((1 - c) if form == "paper" else (c - 1) ** 2 for c in terms) / k
    pairs = [cos(mu[i], mu[j]) for i in range(k) for j in range(k) if i != j]
    inter = sum(-(1 - c) if form == "paper" else c ** 2 for c in pairs) / (k * (k - 1))
    return intra + inter


@pytest.mark.parametrize("form", ["paper", "official"])
def test_adarand_steps_move_mu_bar_by_the_ema_and_mu_by_adam_on_the_prior_objective(tmp_path, form):
    alpha, prior_lr, iterations = 0.3, 0.05, 3
    run = build(tmp_path, "adarand", [f"method.alpha={alpha}", f"method.prior_lr={prior_lr}",
                                      f"method.prior_loss={form}", "train.epochs=2"])
    total = run.ctx.total_iterations  # the run's whole length: the schedule's T
    assert total == 2 * len(run.loaders.train)
    steps = record_steps(run, iterations)
    first = steps[0]["state"]
    mu = first["mu"].double().clone()
    m, v = torch.zeros_like(mu), torch.zeros_like(mu)
    for t, s in enumerate(steps):
        # mu_bar: for each class in the batch, alpha * mu_bar + (1 - alpha) * the batch's class mean
        mu_bar = s["state"]["mu_bar"].double().clone()
        for k in s["y"].unique().tolist():
            mu_bar[k] = alpha * mu_bar[k] + (1 - alpha) * s["features"][s["y"] == k].double().mean(0)
        assert torch.allclose(s["after"]["mu_bar"].double(), mu_bar, atol=1e-6), t
        # mu: one Adam step on L_ada(mu, mu_bar after the EMA), at prior_lr x cos(7 pi / 16 * t / T)
        leaf = mu.clone().requires_grad_(True)
        objective = naive_prior_objective(leaf, mu_bar, form)
        objective.backward()
        assert float(s["logs"]["prior_ada"]) == pytest.approx(float(objective), rel=1e-5, abs=1e-7)
        lr = prior_lr * math.cos(7 * math.pi / 16 * t / total)
        grad = leaf.grad
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad * grad
        mu = mu - lr * (m / (1 - 0.9 ** (t + 1))) / ((v / (1 - 0.999 ** (t + 1))).sqrt() + 1e-8)
        assert torch.allclose(s["after"]["mu"].double(), mu, atol=2e-6), t
        assert torch.equal(s["after"]["sigma"], first["sigma"])  # sigma stays at its initial value
    assert not torch.allclose(steps[-1]["after"]["mu"], first["mu"], atol=1e-4)  # the step moved it


# -- the baselines ---------------------------------------------------------------------------------
def test_co_tuning_adds_lambda_times_the_soft_source_label_cross_entropy(tmp_path):
    source, _ = create_model(ModelConfig(arch="small_cnn", width=4), num_classes=7)
    torch.save(source.state_dict(), tmp_path / "source.pt")
    lam, mult = 1.7, 0.3
    run = build(tmp_path, "co_tuning", [f"model.pretrained={tmp_path / 'source.pt'}", f"method.lambda={lam}",
                                        f"method.source_lr_mult={mult}"])
    (group,) = [g for g in run.optimizer.param_groups if g.get("name") == "source_head"]  # trained at lr x mult
    assert group["lr"] == pytest.approx(run.cfg.optim.lr * mult)
    assert {id(p) for p in group["params"]} == {id(p) for p in run.regularizer.source_head.parameters()}
    steps = record_steps(run, 2)
    for s in steps:
        w, b = s["state"]["source_head"]["weight"].double(), s["state"]["source_head"]["bias"].double()
        rel = s["state"]["relationship"].double()
        total = 0.0
        for i, y in enumerate(s["y"].tolist()):
            logits = s["features"][i].double() @ w.t() + b
            log_p = logits - torch.logsumexp(logits, 0)
            total += -float((rel[y] * log_p).sum())
        assert float(s["losses"]["co_tuning"]) == pytest.approx(lam * total / len(s["y"]), rel=1e-5)
    # the source head starts as the pretrained model's classifier and trains
    assert torch.equal(steps[0]["state"]["source_head"]["weight"], source.state_dict()["head.weight"])
    assert not torch.equal(steps[1]["state"]["source_head"]["weight"], steps[0]["state"]["source_head"]["weight"])


def test_bss_adds_lambda_times_the_k_smallest_squared_singular_values(tmp_path):
    lam, k = 0.3, 2
    for s in record_steps(build(tmp_path, "bss", [f"method.lambda={lam}", f"method.k={k}"]), 2):
        singular = np.linalg.svd(s["features"].double().numpy(), compute_uv=False)
        assert float(s["losses"]["bss"]) == pytest.approx(lam * float((np.sort(singular)[:k] ** 2).sum()), rel=1e-4)


def naive_rotation(p: np.ndarray, d: np.ndarray) -> np.ndarray:
    """The rotation R (det +1) minimising ||(p - mean p) R - (d - mean d)||, by numpy's SVD."""
    u, _, vh = np.linalg.svd((p - p.mean(0)).T @ (d - d.mean(0)))
    if np.linalg.det(u @ vh) < 0:
        u[:, -1] *= -1
    return u @ vh


def naive_calibrated_bank(state: dict, head_weight: torch.Tensor, batch_norm: float, rotate: bool) -> torch.Tensor:
    """DR-Tune's bank as its docstring defines it, in float64 with numpy's SVD and loops over classes."""
    p = state["bank_p"].double().numpy()
    d = state["bank_d"].double().numpy()
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    if rotate:  # orthogonal Procrustes on the centred banks, reflection fixed
        rotation = naive_rotation(p, d)
    else:
        rotation = state["rotation"].double().numpy()
    rotated = p @ rotation
    labels = state["bank_y"].numpy()
    w = head_weight.double().numpy()
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    shifted = rotated.copy()
    for k in np.unique(labels):
        rows = labels == k
        cos = (d[rows] / np.linalg.norm(d[rows], axis=1, keepdims=True)) @ w[k]
        weights = np.exp(cos - cos.max()) / np.exp(cos - cos.max()).sum()
        shifted[rows] += weights @ d[rows] - rotated[rows].mean(0)
    return torch.tensor(shifted / np.linalg.norm(shifted, axis=1, keepdims=True) * batch_norm)


def test_dr_tune_is_one_cross_entropy_over_batch_and_calibrated_bank_and_enqueues_the_batch(tmp_path):
    # a bank of more rows than feature dimensions (a unique rotation), refreshed at steps 0 and 2 of 4
    bank, rotate_every = 24, 2
    run = build(tmp_path, "dr_tune", [f"method.bank_size={bank}", f"method.rotate_every={rotate_every}"])
    pretrained = copy.deepcopy(run.net.backbone).eval()
    steps = record_steps(run, 4, own_ce=True)
    for t, s in enumerate(steps):
        state, feats = s["state"], s["features"].double()
        batch_norm = float(feats.norm(dim=1).mean())
        calibrated = naive_calibrated_bank(state, s["head"]["weight"], batch_norm, rotate=t % rotate_every == 0)
        rows = torch.cat([feats, calibrated])
        logits = rows @ s["head"]["weight"].double().t() + s["head"]["bias"].double()
        labels = torch.cat([s["y"], state["bank_y"]])
        ce = -sum(float(logits[i, y] - torch.logsumexp(logits[i], 0)) for i, y in enumerate(labels.tolist())) / len(labels)
        assert float(s["losses"]["ce"]) == pytest.approx(ce, rel=1e-5), t
        # the rotation: Procrustes of the normalised banks on its schedule, else the one before
        if t % rotate_every == 0:
            p = F.normalize(state["bank_p"].double(), dim=1).numpy()
            d = F.normalize(state["bank_d"].double(), dim=1).numpy()
            assert np.allclose(s["after"]["rotation"].double().numpy(), naive_rotation(p, d), atol=1e-4), t
        else:
            assert torch.equal(s["after"]["rotation"], state["rotation"]), t
        # the batch went into the bank at the pointer: the pretrained features, the step's detached ones, the labels
        at = (state["ptr"] + torch.arange(len(s["y"]))) % bank
        after = s["after"]
        with torch.no_grad():
            zp = pretrained(s["x"])
        assert torch.allclose(after["bank_p"][at], zp, atol=1e-5)
        assert torch.equal(after["bank_d"][at], s["features"])
        assert torch.equal(after["bank_y"][at], s["y"])
        kept = torch.ones(bank, dtype=torch.bool)
        kept[at] = False
        assert torch.equal(after["bank_p"][kept], state["bank_p"][kept])  # the rest of the FIFO unchanged
        assert after["ptr"] == (state["ptr"] + len(s["y"])) % bank
    assert not torch.equal(steps[2]["after"]["rotation"], steps[0]["after"]["rotation"])  # the refresh moved it


def test_l2sp_is_half_lambda_times_the_squared_distance_to_the_start_and_the_head_norm(tmp_path):
    lb, lh = 0.4, 0.2
    run = build(tmp_path, "l2sp", [f"method.lambda_backbone={lb}", f"method.lambda_head={lh}",
                                   "optim.weight_decay=0"])
    start = copy.deepcopy(run.net.backbone.state_dict())
    trained = {n for n, p in run.net.backbone.named_parameters() if p.requires_grad}
    for s in record_steps(run, 3):
        backbone = sum(float(((s["backbone"][n].double() - start[n].double()) ** 2).sum()) for n in trained)
        head = sum(float((v.double() ** 2).sum()) for v in s["head"].values())
        assert float(s["losses"]["l2sp"]) == pytest.approx(0.5 * lb * backbone + 0.5 * lh * head, rel=1e-5)
    assert backbone > 0  # the backbone has moved from its start by the third step


def test_delta_is_lambda_times_the_weighted_feature_map_distance_plus_the_head_term(tmp_path):
    lam, lh = 0.6, 0.3
    run = build(tmp_path, "delta", [f"method.lambda={lam}", f"method.lambda_head={lh}",
                                    "method.channel_weights=uniform"])
    reg = run.regularizer
    layers = dict(run.net.backbone.named_modules())
    paths = reg.layers
    pretrained = copy.deepcopy(run.net.backbone).eval()
    steps = record_steps(run, 2)
    for s in steps:
        net = copy.deepcopy(run.net.backbone)
        net.load_state_dict(s["backbone"])
        net.train()
        maps, frozen_maps = {}, {}
        hooks = [dict(net.named_modules())[p].register_forward_hook(
            lambda m, i, o, k=k: maps.__setitem__(k, o.detach().double())) for k, p in paths.items()]
        hooks += [dict(pretrained.named_modules())[p].register_forward_hook(
            lambda m, i, o, k=k: frozen_maps.__setitem__(k, o.detach().double())) for k, p in paths.items()]
        with torch.no_grad():
            net(s["x"])
            pretrained(s["x"])
        for h in hooks:
            h.remove()
        omega = 0.0
        for k in paths:  # 1/2 sum_i sum_c C a_c ||fm_c(x_i) - fm_s_c(x_i)||^2 / (H W), uniform a_c = 1/C
            fm, fs = maps[k], frozen_maps[k]
            channels, hw = fm.shape[1], fm.shape[2] * fm.shape[3]
            for i in range(fm.shape[0]):
                for c in range(channels):
                    omega += 0.5 * channels * (1.0 / channels) * float(((fm[i, c] - fs[i, c]) ** 2).sum()) / hw
        head = sum(float((v.double() ** 2).sum()) for v in s["head"].values())
        assert float(s["logs"]["delta_feature_maps"]) == pytest.approx(omega, rel=1e-5)
        assert float(s["losses"]["delta"]) == pytest.approx(lam * omega + 0.5 * lh * head, rel=1e-5)
    assert layers  # the backbone declares its stages


def test_lp_ft_starts_training_from_the_probe_fitted_to_the_pretrained_features(tmp_path):
    from adarand.handlers.lp_ft import fit_linear_probe

    wd = 0.01
    run = build(tmp_path, "lp_ft", [f"method.probe_weight_decay={wd}"])
    pretrained = copy.deepcopy(run.net.backbone).eval()
    with torch.no_grad():  # the training split with the eval transform, one image at a time
        pairs = [(pretrained(x[None])[0], y) for x, y in run.data.train_eval]
    feats = torch.stack([f for f, _ in pairs])
    labels = torch.tensor([y for _, y in pairs])
    w, b = fit_linear_probe(feats, labels, run.data.num_classes, wd)
    (first, *_) = record_steps(run, 1)
    assert torch.allclose(first["head"]["weight"].double(), w, atol=1e-4)
    assert torch.allclose(first["head"]["bias"].double(), b, atol=1e-4)
    assert float(w.abs().max()) > 1e-2  # a probe that learnt something, not the zero start


def test_daft_converts_each_batchnorm_to_the_mean_and_unbiased_variance_of_its_inputs(tmp_path):
    run = build(tmp_path, "daft")
    bns = {name: m for name, m in run.net.backbone.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert bns
    seen = {name: [] for name in bns}
    hooks = [m.register_forward_pre_hook(lambda m, i, name=name: seen[name].append(i[0].detach().double().numpy()))
             for name, m in bns.items()]
    before = {name: (m.weight.detach().double().clone(), m.bias.detach().double().clone(),
                     m.running_mean.double().clone(), m.running_var.double().clone(), m.eps)
              for name, m in bns.items()}
    run.regularizer.prepare()
    for h in hooks:
        h.remove()
    assert torch.count_nonzero(run.net.head.weight) == 0  # the head starts at zero
    assert run.regularizer.report() == {"bn_layers_converted": len(bns)}
    for name, m in bns.items():
        batches = seen[name]
        assert len(batches) == len(run.ctx.augmented_loader())
        means = np.mean([x.mean(axis=(0, 2, 3)) for x in batches], axis=0)
        variances = np.mean([x.transpose(1, 0, 2, 3).reshape(x.shape[1], -1).var(axis=1, ddof=1) for x in batches],
                            axis=0)
        np.testing.assert_allclose(m.running_mean.double().numpy(), means, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(m.running_var.double().numpy(), variances, rtol=1e-5, atol=1e-6)
        gamma, beta, mu_s, var_s, eps = before[name]
        np.testing.assert_allclose(m.bias.detach().double().numpy(),
                                   (beta + gamma * (torch.tensor(means) - mu_s) / (var_s + eps).sqrt()).numpy(),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(m.weight.detach().double().numpy(),
                                   (gamma * (torch.tensor(variances) + eps).sqrt() / (var_s + eps).sqrt()).numpy(),
                                   rtol=1e-5, atol=1e-6)
