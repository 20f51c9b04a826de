"""Prior initialisation: class statistics against numpy, fallbacks, the on-disk cache."""

import warnings

import numpy as np
import pytest
import torch

from adarand.datasets import create_datasets
from adarand.engine.config import load_config
from adarand.handlers.context import RunContext
from adarand.methods.statistics import ClassStatistics, class_priors
from adarand.models import create_model

from conftest import make_image_folder


@pytest.fixture()
def tiny_run(tmp_path):
    root = make_image_folder(tmp_path / "data", {0: 5, 1: 4, 2: 3})
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(f"""
data: {{root: "{root}", image_size: 12, resize_size: 12, batch_size: 2, num_workers: 0, val_ratio: 0.0,
        mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}}
model: {{arch: small_cnn, width: 4}}
cache_dir: "{tmp_path / 'cache'}"
train: {{progress: false, epochs: 1}}
""")

    def make():
        cfg = load_config(cfg_file)
        torch.manual_seed(0)
        data = create_datasets(cfg.data, cfg.cache_dir)
        net, info = create_model(cfg.model, data.num_classes)
        return RunContext(cfg=cfg, model=net, net=net, device=torch.device("cpu"), data=data, epoch_length=1,
                          pretrained=info, generator=torch.Generator())
    return make


def numpy_statistics(ctx):
    net = ctx.net.eval()
    feats, labels = [], []
    with torch.no_grad():
        for x, y in ctx.data.train_eval:  # one image at a time, no batching
            feats.append(net.backbone(x[None]).double().numpy()[0])
            labels.append(y)
    feats, labels = np.array(feats), np.array(labels)
    mean = np.stack([feats[labels == k].mean(0) for k in range(3)])
    var = np.stack([feats[labels == k].var(0) for k in range(3)])  # population variance
    return mean, var, feats.mean(0), feats.var(0), np.bincount(labels)


def test_statistics_match_numpy_and_are_cached(tiny_run):
    ctx = tiny_run()
    stats = ctx.class_statistics()
    assert ctx.prior_cache_hit is False
    mean, var, gmean, gvar, counts = numpy_statistics(ctx)
    assert stats.sums.dtype == torch.float64
    assert stats.counts.tolist() == counts.tolist() == [5, 4, 3]
    np.testing.assert_allclose(stats.mean.numpy(), mean, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(stats.var.numpy(), var, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(stats.global_mean.numpy(), gmean, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(stats.global_var.numpy(), gvar, rtol=1e-4, atol=1e-7)
    files = list((ctx.cache_dir / "priors").glob("*.pt"))
    assert len(files) == 1

    again = tiny_run()  # same weights (same seed), same data: read from the cache, no pass
    calls = []
    again.net.backbone.register_forward_hook(lambda *a: calls.append(1))
    cached = again.class_statistics()
    assert again.prior_cache_hit is True and calls == []
    assert torch.equal(cached.sums, stats.sums) and torch.equal(cached.counts, stats.counts)

    other = tiny_run()
    with torch.no_grad():
        other.net.backbone[0].weight.add_(0.1)  # other weights: another key, a new pass
    other.class_statistics()
    assert other.prior_cache_hit is False
    assert len(list((ctx.cache_dir / "priors").glob("*.pt"))) == 2


def test_sigma_floor_and_empty_class_fallback():
    sums = torch.tensor([[2.0, 4.0], [3.0, 3.0], [0.0, 0.0]], dtype=torch.float64)
    sumsq = torch.tensor([[2.0, 10.0], [9.0, 9.0], [0.0, 0.0]], dtype=torch.float64)
    counts = torch.tensor([2, 1, 0])
    stats = ClassStatistics(sums, sumsq, counts)
    # class 0: values {x: 1,1} {y: 1,3} -> mean (1, 2), var (0, 1); class 1: one sample (3, 3), var 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mu, sigma = class_priors(stats, sigma_floor=0.01, class_names=["a", "b", "c"])
    messages = " | ".join(str(w.message) for w in caught)
    assert "c" in messages and "class-agnostic" in messages
    assert "clamped" in messages
    assert torch.allclose(mu[0], torch.tensor([1.0, 2.0]))
    assert torch.allclose(sigma[0], torch.tensor([0.01, 1.0]))
    assert torch.allclose(sigma[1], torch.tensor([0.01, 0.01]))
    # empty class: global mean over the 3 samples (5/3, 7/3), global variance
    gm = torch.tensor([5 / 3, 7 / 3])
    gv = torch.tensor([11 / 3, 19 / 3]) - gm ** 2
    assert torch.allclose(mu[2], gm) and torch.allclose(sigma[2], gv.sqrt())


CORRUPTIONS = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "garbage": lambda p: p.write_bytes(b"not a checkpoint at all"),
    "old format": lambda p: torch.save({"sums": torch.zeros(3, 16, dtype=torch.float64)}, p),
    "wrong shape": lambda p: torch.save({"key": p.stem, "tensors": {
        "sums": torch.zeros(3, 7, dtype=torch.float64), "sumsq": torch.zeros(3, 16, dtype=torch.float64),
        "counts": torch.zeros(3, dtype=torch.float64)}}, p),
    "wrong dtype": lambda p: torch.save({"key": p.stem, "tensors": {
        "sums": torch.zeros(3, 16), "sumsq": torch.zeros(3, 16, dtype=torch.float64),
        "counts": torch.zeros(3, dtype=torch.float64)}}, p),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_a_corrupt_or_mismatched_cache_is_recomputed_with_a_warning(tiny_run, corruption):
    first = tiny_run().class_statistics()
    (cache,) = list((tiny_run().cache_dir / "priors").glob("*.pt"))
    CORRUPTIONS[corruption](cache)
    ctx = tiny_run()
    with pytest.warns(UserWarning, match="prior statistics: the cache file .* recomputing it"):
        again = ctx.class_statistics()
    assert ctx.prior_cache_hit is False
    assert torch.equal(again.sums, first.sums) and torch.equal(again.counts, first.counts)
    reread = tiny_run()
    assert torch.equal(reread.class_statistics().sums, first.sums) and reread.prior_cache_hit is True  # rewritten
