"""UOT: the class selection against unbalanced Sinkhorn iterations written here, a hand-made case,
the joint step's loss, resume, and the source data's checks."""

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Events

from adarand.core.errors import ConfigError, UserError
from adarand.core.step import TrainEvents
from adarand.engine.build import build_run
from adarand.engine.config import load_config
from adarand.handlers.uot import IGNORED, cosine_cost, select_source_classes, unbalanced_plan

from conftest import make_image_folder, run_main, write_tiny_config


def numpy_unbalanced_sinkhorn(cost, eps, reg_a, reg_b, iterations=20000):
    """u = (1 / K v)^(ra / (ra + eps)), v = (1 / K^T u)^(rb / (rb + eps)), K = exp(-M / eps), T = u K v."""
    k = np.exp(-cost / eps)
    u, v = np.ones(cost.shape[0]), np.ones(cost.shape[1])
    for _ in range(iterations):
        u = (1.0 / (k @ v)) ** (reg_a / (reg_a + eps))
        v = (1.0 / (k.T @ u)) ** (reg_b / (reg_b + eps))
    return u[:, None] * k * v[None, :]


def test_the_plan_and_the_selection_against_sinkhorn_iterations():
    rng = np.random.default_rng(0)
    source, target = rng.normal(size=(12, 6)), rng.normal(size=(4, 6))
    cost = cosine_cost(source, target, 0.1)
    for s in range(12):
        for t in range(4):
            cos = source[s] @ target[t] / np.linalg.norm(source[s]) / np.linalg.norm(target[t])
            assert cost[s, t] == pytest.approx((1 - cos) / 0.1)
    expected = numpy_unbalanced_sinkhorn(cost, 1.0, 1.0, 100.0)
    assert np.allclose(unbalanced_plan(cost, 1.0, 1.0, 100.0), expected, rtol=1e-6, atol=1e-12)
    chosen, scores = select_source_classes(source, target, 5, 0.1, 1.0, 1.0, 100.0)
    assert np.allclose(scores, expected.sum(1), rtol=1e-6)
    assert chosen == list(np.argsort(-expected.sum(1), kind="stable")[:5])
    # the target side's marginal is held near its ones (penalty 100), the source side's is free (penalty 1)
    assert np.allclose(expected.sum(0), 1.0, atol=0.05)


def test_the_nearest_source_classes_are_chosen():
    """Two target classes along e1 and e2; of six source classes, the two pointing that way score highest."""
    e = np.eye(4)
    target = np.stack([e[0], e[1]])
    source = np.stack([-e[0], e[2], e[0] + 0.1 * e[2], e[3], e[1] + 0.1 * e[3], -e[1]])
    chosen, scores = select_source_classes(source, target, 2, 0.1, 1.0, 1.0, 100.0)
    assert sorted(chosen) == [2, 4]
    assert min(scores[2], scores[4]) > 100 * max(scores[[0, 1, 3, 5]])


def uot_config(tmp_path, extra=""):
    """The tiny config with UOT over a source folder of four classes (a file that extends it)."""
    source = make_image_folder(tmp_path / "source", {0: 6, 1: 6, 2: 6, 3: 6}, n_test=0, seed=7) / "train"
    base = write_tiny_config(tmp_path, "finetune")
    cfg = tmp_path / "uot.yaml"
    cfg.write_text(f"extends: {base.name}\nmethod: {{name: uot, source_root: '{source}', select_classes: 2}}\n{extra}")
    return cfg, source


@pytest.mark.parametrize("lam,head", [(1.0, "all"), (0.3, "all"), (1.0, "selected")])
def test_the_joint_step_is_target_ce_plus_lambda_source_ce(tmp_path, lam, head):
    cfg_file, _ = uot_config(tmp_path)
    run = build_run(load_config(cfg_file, [f"method.lambda={lam}", f"method.source_head={head}"]))
    reg = run.regularizer
    seen = {}

    @run.trainer.on(TrainEvents.COMPUTE_LOSS)  # before the method's handler: the whole batch
    def keep(engine):
        step = engine.state.step
        seen.update(features=step.features.detach().clone(), y=step.y.clone(), ce=float(step.losses["ce"].detach()),
                    logits=step.logits.detach().clone(), head=copy.deepcopy(reg.source_head))

    reg.prepare()
    reg.attach(run.trainer)

    @run.trainer.on(Events.ITERATION_COMPLETED)
    def stop(engine):
        seen.update(losses={k: float(v.detach()) for k, v in engine.state.output.losses.items()},
                    after=engine.state.output)
        engine.terminate()

    run.trainer.run(run.loaders.train, max_epochs=1)
    b, s = run.cfg.data.batch_size, 4  # the tiny config's batch: 4 target and 4 source images
    y = seen["y"]
    assert y.shape == (b + s,) and (y[b:] == IGNORED).all() and (y[:b] >= 0).all()
    target_ce = F.cross_entropy(seen["logits"][:b], y[:b])
    assert seen["losses"]["ce"] == pytest.approx(float(target_ce), rel=1e-6)
    source_labels = reg._labels
    if head == "all":  # the published fc_up: one output per source class, each image's own label
        assert reg.source_head.out_features == 4
        assert set(source_labels.tolist()) <= set(reg.selected) and len(set(reg.selected)) == 2
    else:  # the selected classes only, numbered in the order of selection
        assert reg.source_head.out_features == 2
        assert set(source_labels.tolist()) <= {0, 1}
    with torch.no_grad():
        source_ce = F.cross_entropy(seen["head"](seen["features"][b:]), source_labels)
    assert seen["losses"]["uot_source"] == pytest.approx(lam * float(source_ce), rel=1e-6)  # lambda_u CE_source
    after = seen["after"]  # what the training log reads: the target rows only
    assert after.features.shape[0] == after.logits.shape[0] == after.y.shape[0] == b
    report = reg.report()
    d = run.net.feature_dim
    outputs = 4 if head == "all" else 2
    assert report["source_head_mib"] == pytest.approx((d * outputs + outputs) * 4 / 2**20)
    assert len(report["source_classes"]) == 2 and report["source_batch"] == 4


def test_a_resumed_uot_run_equals_an_uninterrupted_one(tmp_path, cache_dir):
    cfg_file, _ = uot_config(tmp_path, "train: {progress: false, epochs: 3, log_every: 2}\n")
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert run_main(cfg_file, "--output", whole).returncode == 0
    assert run_main(cfg_file, "train.stop_after=2", "--output", parts).returncode == 0
    r = run_main(cfg_file, "--resume", parts)
    assert r.returncode == 0, r.stderr
    a, b = (json.loads((d / "results.json").read_text()) for d in (whole, parts))
    assert (a["val_accuracy"], a["val_loss"], a["test_accuracy"], a["test_loss"]) == \
           (b["val_accuracy"], b["val_loss"], b["test_accuracy"], b["test_loss"])
    last = [torch.load(next((d / "checkpoints").glob("last_*.pt")), weights_only=True) for d in (whole, parts)]
    assert last[0]["regularizer"]["position"] == last[1]["regularizer"]["position"] == 3 * len(run_batches(cfg_file))
    for k, v in last[0]["model"].items():
        assert torch.equal(v, last[1]["model"][k]), k
    for k, v in last[0]["regularizer"]["source_head"].items():
        assert torch.equal(v, last[1]["regularizer"]["source_head"][k]), k
    assert (whole / "uot_source_classes.tsv").read_text() == (parts / "uot_source_classes.tsv").read_text()
    assert a["method_report"]["source_classes"] == (whole / "uot_source_classes.tsv").read_text().split()[2::2]


def run_batches(cfg_file):
    return build_run(load_config(cfg_file)).loaders.train


def test_the_source_data_is_checked(tmp_path):
    cfg_file, source = uot_config(tmp_path)
    target_train = tmp_path / "data" / "train"
    with pytest.raises(UserError, match=r"method.source_root: .* source image\(s\) are also target images"):
        build_run(load_config(cfg_file, [f"method.source_root={target_train}"]))
    with pytest.raises(ConfigError, match="method.source_root': .*nowhere does not exist; set it to the pre-training"):
        load_config(cfg_file, [f"method.source_root={tmp_path / 'nowhere'}"])
    with pytest.raises(UserError, match=r"method.source_root: 4 source classes, fewer than method.select_classes \(5\)"):
        build_run(load_config(cfg_file, ["method.select_classes=5"]))
    with pytest.raises(ConfigError, match="set source_root .* or source_list"):
        load_config(cfg_file, ["method.source_root=null"])
    (source / "class0" / "000.png").write_bytes(b"broken")
    with pytest.raises(UserError, match=r"method.source_root: 1 unreadable image\(s\): .*class0/000.png"):
        build_run(load_config(cfg_file))


def test_an_empty_source_class_is_refused_naming_the_folder(tmp_path):
    cfg_file, source = uot_config(tmp_path)
    (source / "class9").mkdir()  # a class folder without images
    run_cfg = load_config(cfg_file)
    with pytest.raises(UserError, match=r"method.source_root: 1 source class\(es\) of .*source/train hold no "
                                        r"\(readable\) image: class9; remove them or add images"):
        build_run(run_cfg)


def test_the_source_head_labels_against_a_lookup():
    """All-classes head (the published fc_up): the original labels; selected head: the place in the selection."""
    from adarand.methods.uot import UOT as UOTMethod
    chosen = [7, 2, 11]
    labels = torch.tensor([2, 11, 7, 7, 2])
    full = UOTMethod(8, 12, selected=chosen, select_classes=3)
    assert full.source_head.out_features == 12 and torch.equal(full.head_labels(labels), labels)
    small = UOTMethod(8, 12, selected=chosen, select_classes=3, source_head="selected")
    place = {s: i for i, s in enumerate(chosen)}
    assert small.source_head.out_features == 3
    assert small.head_labels(labels).tolist() == [place[int(v)] for v in labels]
    with pytest.raises(ValueError, match="outside the selected classes"):
        small.head_labels(torch.tensor([5]))
    f = torch.randn(5, 8)
    expected = 0.5 * F.cross_entropy(full.source_head(f), labels)
    full.params.lam = 0.5
    assert full(f, full.head_labels(labels)).item() == pytest.approx(expected.item(), rel=1e-6)
    copy_ = UOTMethod(8, 12, select_classes=3)
    copy_.load_state_dict(full.state_dict())
    assert copy_.selected == chosen and torch.equal(copy_.source_head.weight, full.source_head.weight)
