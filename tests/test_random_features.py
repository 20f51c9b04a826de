"""The RandReg family and FNP: each prior's samples, FNP's value, fixed priors, ablations."""

import pytest
import torch

from adarand.core.step import StepState
from adarand.engine.build import build_run
from adarand.engine.config import load_config
from adarand.methods.statistics import class_priors

from conftest import write_tiny_config

N = 20000  # samples per check; standard errors: mean sigma/sqrt(N) <= 0.007 sigma, std ~0.005 sigma


def started(run):
    """The regularizer's preparation (the prior initialisation) without training."""
    run.regularizer.attach(run.trainer)
    run.regularizer.prepare()
    return run.regularizer


def make(tmp_path, method, **kw):
    return build_run(load_config(write_tiny_config(tmp_path, method, **kw)))


def draw(reg, labels, d=16):
    return reg.sample(labels, torch.zeros(len(labels), d))


def test_fixed_priors(tmp_path):
    labels = torch.zeros(N, dtype=torch.long)
    z = draw(make(tmp_path, "randreg_uniform").regularizer, labels)
    assert abs(float(z.mean()) - 0.5) < 0.01 and abs(float(z.var()) - 1 / 12) < 0.005
    assert float(z.min()) >= 0.0 and float(z.max()) <= 1.0
    z = draw(make(tmp_path, "randreg_normal").regularizer, labels)
    assert torch.allclose(z.mean(0), torch.zeros(16), atol=0.04) and torch.allclose(z.std(0), torch.ones(16), rtol=0.03)
    assert torch.count_nonzero(draw(make(tmp_path, "fnp").regularizer, labels)) == 0


@pytest.mark.parametrize("method", ["randreg_global", "randreg_cp", "adarand"])
def test_statistics_priors(tmp_path, method):
    run = make(tmp_path, method)
    reg = started(run)
    stats = run.ctx.class_statistics()
    for k in range(3):
        z = draw(reg, torch.full((N,), k))
        mean, std = (stats.global_mean, stats.global_var.sqrt()) if method == "randreg_global" else \
            (stats.mean[k], stats.var[k].sqrt())
        mean, std = mean.float(), std.float().clamp(min=1e-4)
        assert torch.all((z.mean(0) - mean).abs() <= 0.04 * std + 1e-6), (k, z.mean(0), mean)
        assert torch.allclose(z.std(0), std, rtol=0.04, atol=1e-6)


def test_fnp_is_lambda_times_mean_square(tmp_path):
    run = make(tmp_path, "fnp", extra="")
    reg = run.regularizer
    reg.params.lam = 0.3
    g = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
    step = StepState(x=None, y=torch.tensor([0, 1]), logits=None, features=g)
    run.trainer.state.step = step
    reg.add_loss(run.trainer)
    assert float(step.losses["reg"]) == pytest.approx(0.3 * (1 + 4 + 9 + 0.25) / 4)


def test_randreg_cp_priors_never_change(tmp_path):
    run = make(tmp_path, "randreg_cp")
    reg = started(run)
    run.trainer.run(run.loaders.train, max_epochs=2)
    mu, sigma = class_priors(run.ctx.class_statistics(), reg.params.sigma_floor)
    assert run.trainer.state.iteration > 0
    assert torch.equal(reg.mu, mu) and torch.equal(reg.sigma, sigma)


@pytest.mark.parametrize("ablation,kept,dropped", [("adarand_no_intra", "prior_inter", "prior_intra"),
                                                    ("adarand_no_inter", "prior_intra", "prior_inter")])
def test_ablations_change_only_their_own_term(tmp_path, ablation, kept, dropped):
    out = {}
    for method in ("adarand", ablation):
        run = make(tmp_path / method, method)
        started(run)
        logs = []

        def record(e):
            values = {**e.state.output.losses, **e.state.output.logs}
            logs.append({k: float(v.detach()) for k, v in values.items()})

        run.trainer.add_event_handler(__import__("ignite").engine.Events.ITERATION_COMPLETED, record)
        run.trainer.run(run.loaders.train, max_epochs=1, epoch_length=1)  # one step from the same state
        out[method] = (logs[0], run.regularizer)
    full, abl = out["adarand"][0], out[ablation][0]
    assert abl[dropped] == 0.0 and full[dropped] != 0.0
    assert abl[kept] == pytest.approx(full[kept])
    assert abl["reg"] == pytest.approx(full["reg"]) and abl["ce"] == pytest.approx(full["ce"])
    assert torch.allclose(out["adarand"][1].mu_bar, out[ablation][1].mu_bar)  # same EMA
    assert not torch.allclose(out["adarand"][1].mu, out[ablation][1].mu)  # a different prior step


def test_ablation_refuses_its_own_term(tmp_path):
    from adarand.core.errors import ConfigError
    with pytest.raises(ConfigError, match="adarand_no_intra fixes intra to false"):
        load_config(write_tiny_config(tmp_path, "adarand_no_intra"), ["method.intra=true"])
    with pytest.raises(ConfigError, match="fnp fixes prior to zero"):
        load_config(write_tiny_config(tmp_path, "fnp"), ["method.prior=normal"])
    # the resolved config leaves the fixed keys out, so it loads again
    from adarand.core.config import save_config
    cfg = load_config(write_tiny_config(tmp_path, "adarand_no_intra"))
    assert cfg.method.params.intra is False
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml").method.params.intra is False


def test_presets_are_parameters_of_one_class():
    from adarand.handlers.adarand import AdaRand, RandReg
    from adarand.handlers.registry import get_method

    priors = {"fnp": "zero", "randreg_uniform": "uniform", "randreg_normal": "normal", "randreg_global": "global",
              "randreg_cp": "class"}
    for name, prior in priors.items():
        entry = get_method(name)
        assert entry.cls is RandReg and entry.fixed == {"prior": prior}
    assert get_method("adarand_no_intra").cls is AdaRand and get_method("adarand_no_intra").fixed == {"intra": False}
    assert get_method("adarand_no_inter").fixed == {"inter": False}
