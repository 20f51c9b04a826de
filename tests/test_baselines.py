"""L2-SP, DELTA, BSS, Co-Tuning, DR-Tune, DAFT and LP-FT against independent computations."""

import hashlib
import json
import math

import numpy as np
import pytest
import torch
import torchvision
from ignite.engine import Events

from adarand.core.errors import UserError
from adarand.engine.build import build_run
from adarand.engine.config import load_config
from adarand.handlers.bss import smallest_singular_values_sq
from adarand.handlers.co_tuning import CoTuning, CoTuningParams
from adarand.handlers.daft import convert_batchnorm
from adarand.handlers.delta import Delta, DeltaParams, delta_penalty
from adarand.handlers.dr_tune import class_shift, procrustes_rotation
from adarand.handlers.lp_ft import fit_linear_probe

from conftest import run_cli, run_main, write_tiny_config


def make(tmp_path, method, overrides=(), **kw):
    return build_run(load_config(write_tiny_config(tmp_path, method, **kw), list(overrides)))


def one_step(run):
    run.regularizer.attach(run.trainer)
    seen = []
    run.trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(
        {k: float(v.detach()) for k, v in e.state.output.losses.items()}))
    run.trainer.run(run.loaders.train, max_epochs=1, epoch_length=1)
    return seen[0]


# -- L2-SP ----------------------------------------------------------------------------------------
def test_l2sp_zero_at_start_then_hand_sum(tmp_path):
    run = make(tmp_path, "l2sp", ["method.lambda_backbone=0.5", "method.lambda_head=0.25"])
    start = {k: v.clone() for k, v in run.net.backbone.state_dict().items()}
    head0 = sum(float((p.detach().double() ** 2).sum()) for p in run.net.head.parameters())
    first = one_step(run)
    # the backbone is at its starting point: only the head term is left
    assert first["l2sp"] == pytest.approx(0.5 * 0.25 * head0, rel=1e-6)
    # after one step: the hand sum over the backbone's parameters
    backbone = sum(float(((p.detach().double() - start[n].double()) ** 2).sum())
                   for n, p in run.net.backbone.named_parameters())
    head = sum(float((p.detach().double() ** 2).sum()) for p in run.net.head.parameters())
    assert backbone > 0
    step = run.trainer.state.output
    run.trainer.state.step = step
    run.regularizer.add_loss(run.trainer)
    assert float(step.losses["l2sp"]) == pytest.approx(0.5 * 0.5 * backbone + 0.5 * 0.25 * head, rel=1e-5)


# -- DELTA ----------------------------------------------------------------------------------------
def naive_penalty(fm, fm_s, a):
    """1/2 sum_i sum_c C a_c ||fm_c - fm_s_c||^2 / (H W), one element at a time."""
    b, c, h, w = fm.shape
    total = 0.0
    for i in range(b):
        for ch in range(c):
            d2 = sum(float(fm[i, ch, y, x] - fm_s[i, ch, y, x]) ** 2 for y in range(h) for x in range(w))
            total += c * float(a[ch]) * d2 / (h * w)
    return 0.5 * total


def test_delta_penalty_direct():
    g = torch.Generator().manual_seed(0)
    fm, fm_s = torch.randn(3, 4, 5, 6, generator=g), torch.randn(3, 4, 5, 6, generator=g)
    a = torch.softmax(torch.rand(4, generator=g), 0)
    assert float(delta_penalty(fm, fm_s, a)) == pytest.approx(naive_penalty(fm, fm_s, a), rel=1e-6)
    assert float(delta_penalty(fm, fm.clone(), a)) == 0.0
    # a sum over the batch: twice the batch, twice the penalty
    double = delta_penalty(torch.cat([fm, fm]), torch.cat([fm_s, fm_s]), a)
    assert float(double) == pytest.approx(2 * float(delta_penalty(fm, fm_s, a)), rel=1e-6)


def test_delta_loss_in_the_step_is_lambda_omega_plus_the_head_term(tmp_path):
    run = make(tmp_path, "delta", ["method.channel_weights=uniform", "method.lambda=0.3", "method.lambda_head=0.2"])
    reg = run.regularizer
    reg.attach(run.trainer)
    torch.manual_seed(0)
    with torch.no_grad():  # move the trained model away from the frozen copy
        for p in run.net.backbone.parameters():
            p.add_(0.05 * torch.randn_like(p))
    seen = {}
    run.trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.update(
        step=e.state.output, x=e.state.output.x.clone()))
    recorded = {}
    hooks = [dict(run.net.backbone.named_modules())[path].register_forward_hook(
        lambda m, i, o, name=name: recorded.setdefault(name, o.detach().clone())) for name, path in reg.layers.items()]
    head_before = sum(float(p.detach().double().pow(2).sum()) for p in run.net.head.parameters())
    run.trainer.run(run.loaders.train, max_epochs=1, epoch_length=1)
    for h in hooks:
        h.remove()
    frozen_maps = {}
    fhooks = [dict(reg.frozen.named_modules())[path].register_forward_hook(
        lambda m, i, o, name=name: frozen_maps.setdefault(name, o.detach().clone())) for name, path in reg.layers.items()]
    reg.frozen(seen["x"])
    for h in fhooks:
        h.remove()
    omega = sum(naive_penalty(recorded[k], frozen_maps[k], torch.full((recorded[k].shape[1],), 1 / recorded[k].shape[1]))
                for k in reg.layers)
    assert omega > 0
    assert float(seen["step"].logs["delta_feature_maps"]) == pytest.approx(omega, rel=1e-4)
    assert float(seen["step"].losses["delta"]) == pytest.approx(0.3 * omega + 0.5 * 0.2 * head_before, rel=1e-4)


def test_delta_records_the_last_convolution_of_each_stage(tmp_path):
    from adarand.handlers.delta import last_convolutions

    run = make(tmp_path, "delta", ["method.channel_weights=uniform"])
    assert run.regularizer.layers == {"stage1": "3", "stage2": "10", "stage3": "14"}
    resnet = torchvision.models.resnet50(weights=None)
    stages = {f"layer{i}": f"layer{i}" for i in range(1, 5)}
    assert last_convolutions(resnet, stages) == {"layer1": "layer1.2.conv3", "layer2": "layer2.3.conv3",
                                                 "layer3": "layer3.5.conv3", "layer4": "layer4.2.conv3"}


def test_delta_is_zero_against_an_unchanged_model_and_frozen_copy_is_frozen(tmp_path):
    run = make(tmp_path, "delta", ["method.channel_weights=uniform"])
    reg = run.regularizer
    assert not reg.frozen.training and not any(p.requires_grad for p in reg.frozen.parameters())
    x = torch.randn(2, 3, 12, 12)
    reg.maps.only_training = False
    run.net.eval()  # the same mode as the frozen copy: same weights, same function
    run.net(x)
    reg.frozen(x)
    terms = [float(delta_penalty(reg.maps.outputs[k], reg.frozen_maps.outputs[k], reg.attention[k]))
             for k in reg.maps.outputs]
    assert len(terms) == 3 and terms == [0.0, 0.0, 0.0]
    reg.close()
    assert reg.frozen is None and reg.maps.outputs == {}


def test_delta_needs_a_layer_map(tmp_path):
    run = make(tmp_path, "finetune")
    run.net.stages = {}
    with pytest.raises(UserError, match="delta needs the backbone's stage layout"):
        Delta(DeltaParams(), run.ctx)


def _naive_increases(backbone, layers, w, b, batches):
    """A copy of the backbone per channel with that filter's weights zeroed; the CE increase of
    the probe, averaged over the batches."""
    import copy

    def ce(model, x, y):
        return float(torch.nn.functional.cross_entropy(model(x) @ w.t() + b, y))

    out = {}
    for name, path in layers.items():
        channels = dict(backbone.named_modules())[path].out_channels
        sums = [0.0] * channels
        for j in range(channels):
            ablated = copy.deepcopy(backbone)
            with torch.no_grad():
                dict(ablated.named_modules())[path].weight[j] = 0.0
            for x, y in batches:
                sums[j] += ce(ablated, x, y) - ce(backbone, x, y)
        out[name] = torch.tensor(sums, dtype=torch.float64) / len(batches)
    return out


def test_delta_attention_matches_zeroing_one_filter_at_a_time():
    from adarand.core.config import ModelConfig
    from adarand.handlers.delta import channel_attention, filter_ablation_losses, last_convolutions
    from adarand.models import create_model

    torch.manual_seed(0)
    net, _ = create_model(ModelConfig(arch="small_cnn", width=4), num_classes=3, in_channels=3)
    backbone = net.backbone.double().eval()
    for m in backbone.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(40, 3, 12, 12, dtype=torch.float64)
    with torch.no_grad():
        f = backbone(x)
    w = torch.randn(3, 16, dtype=torch.float64) / f.std(0).mean()  # a probe on features of this scale
    b = -(f.mean(0) @ w.t())
    y = (f @ w.t() + b).argmax(1)
    y[:5] = (y[:5] + 1) % 3
    batches = [(x[:15], y[:15]), (x[15:30], y[15:30]), (x[30:], y[30:])]  # unequal sizes: a mean per batch
    layers = last_convolutions(backbone, net.stages)
    with torch.no_grad():
        fast = filter_ablation_losses(backbone, layers, w, b, batches, group=3)
        slow = _naive_increases(backbone, layers, w, b, batches)
    assert {k: v.shape[0] for k, v in fast.items()} == {"stage1": 4, "stage2": 8, "stage3": 16}
    for k in slow:
        assert torch.allclose(fast[k].double(), slow[k], atol=1e-5), k
        assert bool((slow[k] != 0).any())  # the check is not vacuous
    # the attention: z-scores over the layer's channels (population std), softmax(z / 5)
    attention = channel_attention(fast)
    for k, v in slow.items():
        arr = v.numpy()
        z = (arr - arr.mean()) / arr.std()
        want = np.exp(z / 5) / np.exp(z / 5).sum()
        np.testing.assert_allclose(attention[k].numpy(), want, rtol=1e-4)
        assert float(attention[k].sum()) == pytest.approx(1.0)


def test_delta_attention_by_hand():
    from adarand.handlers.delta import channel_attention

    att = channel_attention({"a": torch.tensor([0.5, 0.5, 0.5]), "b": torch.tensor([1.0, 3.0])})
    assert torch.allclose(att["a"], torch.full((3,), 1 / 3))  # all equal: uniform
    # [1, 3]: mean 2, population std 1, z = [-1, 1]; softmax([-0.2, 0.2])
    e = math.exp(0.4)
    assert torch.allclose(att["b"], torch.tensor([1 / (1 + e), e / (1 + e)]))


def test_delta_attention_is_used_cached_and_checkpointed(tmp_path):
    from adarand.methods.statistics import features_key

    over = ["method.attention_batches=2"]
    run = make(tmp_path, "delta", over)
    reg = run.regularizer
    # a cache file under the key of the former definition (accuracy drops) is never read
    data = run.ctx.data
    old_key = {"stats": features_key(reg.frozen, data.train_eval.samples, data.num_classes, data.train_eval.transform,
                                  data.root, "off"),
               "samples": 256, "probe_weight_decay": 1e-4, "stages": run.net.stages, "version": 1}
    old_name = hashlib.sha256(json.dumps(old_key, sort_keys=True).encode()).hexdigest()[:32]
    (tmp_path / "cache" / "delta").mkdir(parents=True)
    torch.save({k: torch.zeros(c) for k, c in (("stage1", 4), ("stage2", 8), ("stage3", 16))},
               tmp_path / "cache" / "delta" / f"{old_name}.pt")
    reg.prepare()
    one_step(run)
    assert set(reg.attention) == set(run.net.stages)
    for v in reg.attention.values():
        assert float(v.sum()) == pytest.approx(1.0, rel=1e-5)
        assert float(v.max() - v.min()) > 0  # measured, not the uniform zeros of the old file
    cached = [f for f in (tmp_path / "cache" / "delta").glob("*.pt") if f.stem != old_name]
    assert len(cached) == 1
    # a second run reads the cache: the same attention; a checkpointed state restores it
    again = build_run(load_config(tmp_path / "delta.yaml", over))
    again.regularizer.prepare()
    restored = build_run(load_config(tmp_path / "delta.yaml", over)).regularizer
    restored.load_state_dict(reg.state_dict())
    for k in reg.attention:
        assert torch.equal(again.regularizer.attention[k], reg.attention[k])
        assert torch.equal(restored.attention[k], reg.attention[k])
    assert json.loads(json.dumps(reg.report()))["channel_weights"] == "attention"


# -- BSS ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 3])
def test_bss_matches_numpy(k):
    f = torch.randn(8, 5, generator=torch.Generator().manual_seed(k))
    s = np.linalg.svd(f.double().numpy(), compute_uv=False)
    assert float(smallest_singular_values_sq(f, k)) == pytest.approx(float((np.sort(s)[:k] ** 2).sum()), rel=1e-5)


# -- Co-Tuning ------------------------------------------------------------------------------------
def test_co_tuning_relationship(tmp_path):
    run = make(tmp_path, "finetune")
    src = {"weight": torch.randn(7, run.net.feature_dim) * 0.3, "bias": torch.randn(7)}
    run.ctx.pretrained.source_head = src
    reg = CoTuning(CoTuningParams(), run.ctx)
    reg.prepare()
    rel = reg.relationship
    assert rel.shape == (3, 7) and torch.allclose(rel.sum(1), torch.ones(3), atol=1e-6)
    run.net.eval()
    probs, labels = [], []
    with torch.no_grad():
        for x, y in run.data.train_eval:  # one image at a time
            f = run.net.backbone(x[None])
            probs.append(torch.softmax(f @ src["weight"].t() + src["bias"], 1)[0].double().numpy())
            labels.append(y)
    probs, labels = np.array(probs), np.array(labels)
    for k in range(3):
        np.testing.assert_allclose(rel[k].numpy(), probs[labels == k].mean(0), rtol=1e-5, atol=1e-7)


def test_co_tuning_needs_a_source_head(tmp_path):
    run = make(tmp_path, "finetune")  # random init: no source classifier
    with pytest.raises(UserError, match="co_tuning needs the pretrained model's source classifier"):
        CoTuning(CoTuningParams(), run.ctx)
    r = run_main(write_tiny_config(tmp_path / "cli", "co_tuning"), "--output", tmp_path / "out")
    assert r.returncode == 2 and "co_tuning needs" in r.stderr and not (tmp_path / "out").exists()


# -- DR-Tune --------------------------------------------------------------------------------------
def random_orthogonal(d, det, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    if np.sign(np.linalg.det(q)) != det:
        q[:, 0] *= -1
    return q


def test_procrustes_recovers_a_rotation():
    a = np.random.default_rng(1).normal(size=(50, 6))
    q = random_orthogonal(6, +1, 2)
    r = procrustes_rotation(torch.tensor(a), torch.tensor(a @ q)).numpy()
    np.testing.assert_allclose(r, q, atol=1e-8)


def test_procrustes_reflection_case_gives_the_best_rotation():
    a = np.random.default_rng(3).normal(size=(50, 6))
    q = random_orthogonal(6, -1, 4)  # a reflection: no rotation reaches it
    b = a @ q
    r = procrustes_rotation(torch.tensor(a), torch.tensor(b)).numpy()
    assert np.linalg.det(r) == pytest.approx(1.0)
    np.testing.assert_allclose(r @ r.T, np.eye(6), atol=1e-8)
    # independent: the constrained optimum flips the direction of the smallest singular value
    u, s, vh = np.linalg.svd(a.T @ b)
    expected = u @ np.diag([1, 1, 1, 1, 1, -1]) @ vh
    np.testing.assert_allclose(r, expected, atol=1e-8)
    # and it is at least as good as a nearby rotation
    assert np.linalg.norm(a @ r - b) <= np.linalg.norm(a @ random_orthogonal(6, +1, 5) - b)


def test_class_shift_single_entry_and_weighted_centres():
    rotated = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    downstream = torch.tensor([[0.0, 2.0], [3.0, 0.0], [1.0, 0.0]])
    labels = torch.tensor([0, 1, 1])  # class 0 has exactly one entry; class 2 none
    head = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    out = class_shift(rotated, downstream, labels, head)
    # one entry: its downstream centre is itself -> the entry moves onto its downstream feature
    assert torch.allclose(out[0], downstream[0])
    # class 1: cosines to w_1 = (1, 0) are 1 and 1 -> equal weights; centre_d = (2, 0), centre_p = (0.5, 1)
    shift = torch.tensor([2.0, 0.0]) - torch.tensor([0.5, 1.0])
    assert torch.allclose(out[1], rotated[1] + shift) and torch.allclose(out[2], rotated[2] + shift)
    assert torch.isfinite(out).all()


def test_dr_tune_bank_is_a_fifo(tmp_path):
    run = make(tmp_path, "dr_tune", ["method.bank_size=8"])
    reg = run.regularizer
    reg.prepare()
    assert reg.bank_p.shape == (8, 16) and reg.ptr == 0 and torch.equal(reg.bank_p, reg.bank_d)
    for i in range(3):  # batches of 4 with markers
        reg.enqueue(torch.full((4, 16), float(i)), torch.full((4, 16), -float(i)), torch.full((4,), i))
    assert reg.bank_p.shape == (8, 16) and reg.ptr == 4
    assert reg.bank_y.tolist() == [2, 2, 2, 2, 1, 1, 1, 1]  # the oldest batch (0) is gone
    one_step(run)  # enqueues the batch (the loss's value: test_handler_steps.py)
    # the batch replaced the oldest entries (batch 1's); batch 2 stays
    assert reg.ptr == 0 and reg.bank_y.tolist() == [2, 2, 2, 2] + run.trainer.state.output.y.tolist()
    assert not reg.frozen.training


def test_dr_tune_calibrated_rows_all_have_the_batch_norm(tmp_path):
    """Shifted rows of unequal norms come out L2-renormalised, every one at the batch's mean feature norm."""
    from adarand.handlers.dr_tune import rescale_rows

    run = make(tmp_path, "dr_tune", ["method.bank_size=8"])
    reg = run.regularizer
    g = torch.Generator().manual_seed(0)
    reg.bank_p = torch.randn(8, 16, generator=g)
    reg.bank_d = torch.randn(8, 16, generator=g) * 3
    reg.bank_y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    # the class shift alone leaves rows of unequal norms (the check is not vacuous)
    p, d = torch.nn.functional.normalize(reg.bank_p, dim=1), torch.nn.functional.normalize(reg.bank_d, dim=1)
    shifted = class_shift(p, d, reg.bank_y, run.net.head.weight.detach())
    assert float(shifted.norm(dim=1).max() - shifted.norm(dim=1).min()) > 0.05
    bank = reg.calibrated_bank(torch.tensor(2.5))
    assert torch.allclose(bank.norm(dim=1), torch.full((8,), 2.5), atol=1e-5)
    x = torch.tensor([[3.0, 4.0], [0.0, 0.5]])
    assert torch.allclose(rescale_rows(x, torch.tensor(10.0)), torch.tensor([[6.0, 8.0], [0.0, 10.0]]))


def test_dr_tune_bank_must_be_a_multiple_of_the_batch(tmp_path):
    with pytest.raises(UserError, match="not a multiple of data.batch_size"):
        make(tmp_path, "dr_tune", ["method.bank_size=6"])


# -- DAFT -----------------------------------------------------------------------------------------
def test_daft_bn_conversion_keeps_the_eval_function():
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=5)
    for m in net.modules():  # non-trivial "pretrained" statistics and affine parameters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    net.eval()
    x = torch.randn(4, 3, 64, 64)
    before = net(x).detach()
    stats_before = net.bn1.running_mean.clone()
    data = [(torch.randn(6, 3, 64, 64) * 2 + 1, torch.zeros(6)) for _ in range(3)]
    assert convert_batchnorm(net, data, torch.device("cpu")) == 20
    after = net(x).detach()
    assert torch.allclose(before, after, atol=1e-5, rtol=1e-5)
    # bn1's statistics are now those of its inputs (conv1's outputs, which the conversion leaves alone):
    # the mean over the batches of each batch's channel means and unbiased channel variances
    with torch.no_grad():
        inputs = [net.conv1(x).double() for x, _ in data]
    means = torch.stack([z.mean((0, 2, 3)) for z in inputs]).mean(0)
    variances = torch.stack([z.transpose(0, 1).reshape(z.shape[1], -1).var(1) for z in inputs]).mean(0)
    assert torch.allclose(net.bn1.running_mean.double(), means, atol=1e-6)
    assert torch.allclose(net.bn1.running_var.double(), variances, rtol=1e-5)
    assert not torch.allclose(stats_before.double(), means, atol=1e-2)  # they were other statistics
    assert not net.training


def test_daft_zeroes_the_head(tmp_path):
    run = make(tmp_path, "daft")
    assert torch.count_nonzero(run.net.head.weight) == 0 and torch.count_nonzero(run.net.head.bias) == 0


# -- LP-FT ----------------------------------------------------------------------------------------
def test_lp_probe_matches_sklearn_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    n, d, k, lam = 90, 5, 3, 0.1
    x = rng.normal(size=(n, d)) + np.repeat(np.eye(k, d), n // k, axis=0) * 1.5
    y = np.repeat(np.arange(k), n // k)
    w, b = fit_linear_probe(torch.tensor(x), torch.tensor(y), k, lam)
    # sklearn minimises C * sum CE + 1/2 ||W||^2, i.e. mean CE + lam / 2 ||W||^2 with C = 1 / (lam n)
    ref = LogisticRegression(C=1.0 / (lam * n), tol=1e-10, max_iter=10000).fit(x, y)
    ours = torch.softmax(torch.tensor(x) @ w.t() + b, 1).numpy()
    np.testing.assert_allclose(ours, ref.predict_proba(x), atol=1e-5)
    np.testing.assert_allclose(w.numpy(), ref.coef_, atol=1e-4)


# -- reports --------------------------------------------------------------------------------------
MIB = 2 ** 20
K, D, SOURCE = 3, 16, 7  # the tiny config's classes and feature width, the source model's classes


def held(backbone) -> dict[str, dict[str, float]]:
    """What each method holds beside the model, in MiB, worked out from the tiny model's tensors:
    float32 weights and features (4 bytes), int64 labels and counters (8 bytes)."""
    params = sum(p.numel() for p in backbone.parameters()) * 4 / MIB
    frozen = sum(t.numel() * t.element_size() for t in [*backbone.parameters(), *backbone.buffers()]) / MIB
    return {
        "l2sp": {"start_weights_mib": params},
        "delta": {"frozen_model_mib": frozen},  # and one weight per channel of each stage's last convolution
        "dr_tune": {"frozen_model_mib": frozen, "bank_mib": (2 * 8 * D * 4 + 8 * 8 + D * D * 4) / MIB},
        "co_tuning": {"relationship_mib": K * SOURCE * 4 / MIB, "source_head_mib": (SOURCE * D + SOURCE) * 4 / MIB},
        "randreg_global": {"prior_state_mib": 2 * D * 4 / MIB},  # mu and sigma, one row
        "randreg_cp": {"prior_state_mib": 2 * K * D * 4 / MIB},
        "adarand": {"prior_state_mib": 3 * K * D * 4 / MIB},  # and mu_bar
    }


HELD = ["adarand", "co_tuning", "delta", "dr_tune", "l2sp", "randreg_cp", "randreg_global"]


@pytest.mark.parametrize("method", HELD)
def test_results_report_what_the_method_held(tmp_path, method):
    """report() is read before close() releases what it reports on: each size is the one its
    tensors have."""
    from adarand.core.config import ModelConfig
    from adarand.engine.training import run_training
    from adarand.models import create_model

    overrides = {"dr_tune": ["method.bank_size=8"], "delta": ["method.attention_batches=1"]}.get(method, [])
    if method == "co_tuning":
        source, _ = create_model(ModelConfig(arch="small_cnn", width=4), num_classes=7)
        torch.save(source.state_dict(), tmp_path / "source.pt")
        overrides = [f"model.pretrained={tmp_path / 'source.pt'}"]
    cfg = load_config(write_tiny_config(tmp_path, method), ["train.epochs=1", *overrides])
    results = run_training(0, cfg, tmp_path / "run", None)
    report = json.loads((tmp_path / "run" / "results.json").read_text())["method_report"]
    assert report == json.loads(json.dumps(results["method_report"]))
    backbone = create_model(ModelConfig(arch="small_cnn", width=4), num_classes=K)[0].backbone
    for key, mib in held(backbone)[method].items():
        assert report[key] == pytest.approx(mib, rel=1e-9), (key, report)
    if method == "delta":
        ranges = report["attention_range"]
        assert report["attention_mib"] > 0 and set(ranges) and all(0 < lo <= hi < 1 for lo, hi in ranges.values())
    if method in ("randreg_cp", "randreg_global", "adarand"):
        assert report["prior"] in ("class", "global") and report["prior_cache_hit"] is False  # a fresh cache


def test_results_report_through_the_command_line(tmp_path):
    out = tmp_path / "run"
    r = run_cli(write_tiny_config(tmp_path, "dr_tune", extra=""), "method.bank_size=8", "train.epochs=1",
                "--output", out)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((out / "results.json").read_text())["method_report"]
    assert report["frozen_model_mib"] > 0 and report["bank_mib"] > 0
