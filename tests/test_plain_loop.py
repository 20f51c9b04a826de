"""The public method objects are the engine's math: the demo trained twice at one seed on the same
batches, once by the engine and once by a plain PyTorch loop that uses only ``adarand.methods`` and
torch, ends at the same weights (1e-6). The AdaRand loop is the README's, run as printed."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_readme_example import readme_block
from torch.utils.data import DataLoader

from adarand.core.seeded import sample_seed
from adarand.engine.attach import attach_handlers
from adarand.engine.build import build_run
from adarand.engine.config import load_config
from adarand.engine.state import RunRecord
from adarand.methods import AdaRand, CoreTuning, RandReg

from conftest import REPO

EPOCHS = 3


def demo_config(tmp_path, method: str):
    cfg = tmp_path / f"{method}.yaml"
    cfg.write_text(f"extends: [{REPO / 'yaml/base/digits_small_cnn.yaml'}, {REPO / f'yaml/methods/{method}.yaml'}]\n")
    return load_config(cfg, [f"train.epochs={EPOCHS}", "train.progress=false", f"cache_dir={tmp_path / 'cache'}",
                             "diagnostics.enabled=false", "train.epoch_lines=false"])


class EpochLoader:
    """The engine's training loader as a plain loop reads it: epoch e (from 1) in the order and with
    the augmentations the engine's epoch e has (``set_epoch``, as the engine calls it)."""

    def __init__(self, loader):
        self.loader, self.epoch = loader, 0

    def __iter__(self):
        self.epoch += 1
        self.loader.sampler.set_epoch(self.epoch)
        return iter(self.loader)

    def __len__(self):
        return len(self.loader)


def engine_and_plain_start(tmp_path, method):
    """The built engine run, and copies of its network and its regularizer's state before training."""
    run = build_run(demo_config(tmp_path, method))
    run.ctx.generator.manual_seed(0)  # the seed the plain loops give their generator
    return run, copy.deepcopy(run.net)


def train_engine(run, tmp_path, state_before_training=None):
    attach_handlers(run, tmp_path / "run", RunRecord())
    run.regularizer.prepare()
    if state_before_training is not None:
        state_before_training.update(copy.deepcopy(run.regularizer.state_dict()))
    run.trainer.run(run.loaders.train, max_epochs=EPOCHS)
    return run.net


def sgd(net, extra_groups=()):
    """The demo's optimizer as the config sets it (SGD, momentum 0.9, Nesterov, lr 0.01, constant over 3 epochs)."""
    return torch.optim.SGD([{"params": list(net.parameters())}, *extra_groups], lr=0.01, momentum=0.9, nesterov=True)


def assert_same_weights(a, b, start):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    worst = max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sa if sa[k].is_floating_point())
    assert worst < 1e-6, worst
    moved = max(float((sa[k].double() - v.double()).abs().max()) for k, v in start.items() if v.is_floating_point())
    assert moved > 1e-3  # the runs trained: the agreement is not two copies of the start


def plain_loop(net, train_loader, reg=None, optimizer=None):
    optimizer = optimizer or sgd(net)
    net.train()
    for _ in range(EPOCHS):
        for x, y in train_loader:
            logits, features = net(x)
            if reg is None:
                loss = F.cross_entropy(logits.float(), y)
            elif reg.replaces_cross_entropy:
                loss = reg(features.float(), y, logits=logits.float(), images=x)
            else:
                loss = F.cross_entropy(logits.float(), y) + reg(features.float(), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if reg is not None:
                reg.update(features.detach(), y)
    return net


def test_finetune_plain_loop_is_the_engine(tmp_path):
    run, net = engine_and_plain_start(tmp_path, "finetune")
    start_weights = copy.deepcopy(net.state_dict())
    train_loader = EpochLoader(run.loaders.train)
    engine_net = train_engine(run, tmp_path)
    assert_same_weights(plain_loop(net, train_loader), engine_net, start_weights)


def test_randreg_normal_plain_loop_is_the_engine(tmp_path):
    run, net = engine_and_plain_start(tmp_path, "randreg_normal")
    start_weights = copy.deepcopy(net.state_dict())
    train_loader = EpochLoader(run.loaders.train)
    engine_net = train_engine(run, tmp_path)
    lam = run.cfg.method.params.lam
    reg = RandReg(prior="normal", lam=lam, generator=torch.Generator().manual_seed(0))
    assert_same_weights(plain_loop(net, train_loader, reg), engine_net, start_weights)


def test_adarand_readme_loop_is_the_engine(tmp_path):
    """The README's loop, exec'd as printed, with the demo's model and the engine's batches."""
    run, model = engine_and_plain_start(tmp_path, "adarand")
    start_weights = copy.deepcopy(model.state_dict())
    code = readme_block("example-plain-loop", "python")
    train_loader = EpochLoader(run.loaders.train)
    eval_loader = DataLoader(run.data.train_eval, batch_size=64)
    engine_net = train_engine(run, tmp_path)
    model.train()
    namespace = {"model": model, "train_loader": train_loader, "eval_loader": eval_loader,
                 "num_classes": run.data.num_classes, "epochs": EPOCHS}
    exec(compile(code, "README.md", "exec"), namespace)
    assert_same_weights(namespace["model"], engine_net, start_weights)
    reg = namespace["reg"]
    engine_state = run.regularizer.state_dict()
    assert torch.allclose(reg.mu.detach(), engine_state["mu"], atol=1e-6)
    assert torch.allclose(reg.mu_bar, engine_state["mu_bar"], atol=1e-6)
    # the added lines: at most 10 (the plain loop's own lines are the rest)
    added = [line for line in code.splitlines() if "reg" in line or "AdaRand" in line]
    assert 3 <= len(added) <= 10


def test_core_tuning_plain_loop_is_the_engine(tmp_path):
    """A method with parameters of its own (the projection head) and its own cross-entropy."""
    run, net = engine_and_plain_start(tmp_path, "core_tuning")
    start_weights = copy.deepcopy(net.state_dict())
    train_loader = EpochLoader(run.loaders.train)
    start = {}
    engine_net = train_engine(run, tmp_path, start)
    p = run.cfg.method.params
    reg = CoreTuning(net.head, net.feature_dim, run.data.num_classes,
                     rng=np.random.default_rng(sample_seed(run.cfg.seed, -4, 0)), eta=p.eta, alpha=p.alpha)
    reg.load_state_dict(start)  # the projection head's initial weights (drawn from the global RNG at build)
    assert_same_weights(plain_loop(net, train_loader, reg, sgd(net, reg.parameter_groups(0.01))), engine_net, start_weights)
    assert torch.allclose(reg.projection[0].weight, run.regularizer.projection[0].weight, atol=1e-6)


def test_hyperparameters_are_checked_as_the_config_checks_them():
    with pytest.raises(ValueError, match=r"AdaRand: key 'lambda': expected a value at least 0, got -1"):
        AdaRand(torch.zeros(2, 3), torch.ones(2, 3), 10, lam=-1)
    with pytest.raises(ValueError, match=r"key 'alpha': expected a value in \[0, 1\]"):
        AdaRand(torch.zeros(2, 3), torch.ones(2, 3), 10, alpha=1.5)
    with pytest.raises(TypeError, match="unknown hyperparameter"):
        RandReg(prior="normal", lamda=1.0)
    with pytest.raises(ValueError, match="needs total_steps"):
        AdaRand(torch.zeros(2, 3), torch.ones(2, 3))
    reg = AdaRand(torch.zeros(2, 3), torch.ones(2, 3), 10, **{"lambda": 0.5})
    assert reg.params.lam == 0.5 and reg.params.alpha == 0.5  # the YAML's name and default


def test_adarand_state_round_trip_and_device_move():
    """state_dict / load_state_dict give a copy that continues identically; to() keeps the prior's Adam state."""
    g = torch.Generator().manual_seed(0)
    mu, sigma = torch.randn(3, 4, generator=g), torch.rand(3, 4, generator=g) + 0.1
    a = AdaRand(mu, sigma, 20)
    f, y = torch.randn(6, 4, generator=g), torch.tensor([0, 1, 2, 0, 1, 2])
    a.update(f, y)
    b = AdaRand(torch.zeros(3, 4), torch.ones(3, 4), 20)
    b.load_state_dict(a.state_dict())
    b.to("cpu")
    for _ in range(3):
        a.update(f, y)
        b.update(f, y)
    assert torch.equal(a.mu, b.mu) and torch.equal(a.mu_bar, b.mu_bar)
    assert a.scheduler.last_epoch == b.scheduler.last_epoch == 4


def test_every_public_object_documents_its_use():
    """Each public name of adarand.methods has a docstring with a usage line that calls it."""
    import inspect

    import adarand.methods as methods
    from adarand.methods.lightning_callback import MethodCallback

    missing = []
    for name in [*methods.__all__, "MethodCallback"]:
        obj = getattr(methods, name, None) or MethodCallback
        doc = inspect.getdoc(obj) or ""
        if not any(f"{name}{c}" in doc for c in "(.") and not (name == "Method" and "(Method)" in doc):
            missing.append(name)
    assert missing == []


def test_adarand_logs_its_priors_diagnostics_after_each_update():
    """‖μ‖, the batch's ‖g(x)‖, the share of μ's coordinates below 0 and ‖μ − μ̄‖, against loops."""
    g = torch.Generator().manual_seed(0)
    reg = AdaRand(torch.randn(3, 4, generator=g), torch.rand(3, 4, generator=g) + 0.1, 10)
    f, y = torch.randn(6, 4, generator=g), torch.tensor([0, 1, 2, 0, 1, 2])
    logs = reg.update(f, y)
    mu, mu_bar = reg.mu.detach().tolist(), reg.mu_bar.tolist()
    norm = [sum(v * v for v in row) ** 0.5 for row in mu]
    assert float(logs["prior_mu_norm"]) == pytest.approx(sum(norm) / 3, rel=1e-6)
    assert float(logs["prior_feature_norm"]) == pytest.approx(
        sum(sum(v * v for v in row) ** 0.5 for row in f.tolist()) / 6, rel=1e-6)
    assert float(logs["prior_negative_fraction"]) == pytest.approx(sum(v < 0 for row in mu for v in row) / 12)
    distance = [sum((a - b) ** 2 for a, b in zip(r, s, strict=True)) ** 0.5 for r, s in zip(mu, mu_bar, strict=True)]
    assert float(logs["prior_mu_distance"]) == pytest.approx(sum(distance) / 3, rel=1e-6)
    assert float(logs["prior_mu_distance"]) > 0  # the prior step moved μ away from μ̄
