"""A regularizer's term reaches the backbone: in a real trainer step, each parameter's gradient is
the task's terms' plus the regularizer's, both worked out by autograd here, and the regularizer's
part is not zero (a detached term, or terms added after the backward pass, would fail). And the
detector's g(x) is pooled over each image's own extent, not the batch's padding."""

import pytest
import torch

from adarand.core.step import TrainEvents
from adarand.engine.build import build_run
from adarand.engine.config import load_config

from conftest import REPO, write_tiny_config

TASK_TERMS = {"ce", "classifier", "box_reg", "mask", "objectness", "rpn_box_reg"}


def split_gradients(run, steps: int = 1) -> dict:
    """The last step's backbone gradients: after the backward pass, and by autograd for the task's
    terms and for the regularizer's terms apart (taken at COMPUTE_LOSS, after the method's handler)."""
    reg = run.regularizer
    reg.prepare()
    reg.attach(run.trainer)
    params = [p for p in run.net.backbone.parameters() if p.requires_grad]
    seen: dict = {}

    def grads(total):
        out = torch.autograd.grad(total, params, retain_graph=True, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, out, strict=True)]

    @run.trainer.on(TrainEvents.COMPUTE_LOSS)
    def split(engine):
        losses = engine.state.step.losses
        seen["task"] = grads(sum(v for k, v in losses.items() if k in TASK_TERMS))
        seen["term"] = grads(sum(v for k, v in losses.items() if k not in TASK_TERMS))

    def before_the_step(optimizer, args, kwargs):  # the gradients the optimizer is given
        seen["total"] = [p.grad.detach().clone() for p in params]

    run.optimizer.register_step_pre_hook(before_the_step)
    run.trainer.run(run.loaders.train, max_epochs=1, epoch_length=steps)
    return seen


def check(seen):
    term = sum(float(g.abs().sum()) for g in seen["term"])
    assert term > 0, "the regularizer's term sends no gradient into the backbone"
    for total, task, mine in zip(seen["total"], seen["task"], seen["term"], strict=True):
        scale = float(total.abs().max()) + 1e-12
        assert float((total - (task + mine)).abs().max()) <= 1e-5 * scale


@pytest.mark.parametrize("method,steps", [("fnp", 1), ("randreg_normal", 1), ("adarand", 1), ("bss", 1),
                                          ("l2sp", 2)])  # L2-SP's backbone term is 0 until the weights move
def test_a_feature_regularizers_gradient_reaches_the_backbone(tmp_path, method, steps):
    check(split_gradients(build_run(load_config(write_tiny_config(tmp_path, method), ["method.lambda=1.0"]
                                                if method != "l2sp" else ["method.lambda_backbone=1.0"])), steps))


def detection_run(tmp_path, *extra):
    return build_run(load_config(REPO / "yaml" / "demo_detection_adarand.yaml",
                                 [f"cache_dir={tmp_path / 'cache'}", "data.use_ratio=0.2", "train.progress=false",
                                  *extra]))


def test_adarands_gradient_reaches_the_backbone_on_detection(tmp_path):
    check(split_gradients(detection_run(tmp_path)))


def test_the_detectors_g_is_pooled_over_each_images_own_extent(tmp_path):
    """An image's g(x) alone and batched beside a taller image (padded to it): close, and much
    closer than the mean over the padded extent. The padding still reaches the image's edge
    through the deeper layers' receptive fields, so g moves a little; the bound says how little."""
    net = detection_run(tmp_path, "detection.max_size=128").net.eval()  # the tall image is not shrunk
    g = torch.Generator().manual_seed(0)
    short, tall = torch.rand(3, 64, 64, generator=g), torch.rand(3, 128, 64, generator=g)
    with torch.no_grad():
        alone = net.backbone([short])[0]
        batch, _, maps, pooled = net.backbone.stages([short, tall])
        over_padding = next(reversed(maps.values()))[0].mean((1, 2))
    assert batch.tensors.shape[-2] > batch.image_sizes[0][0]  # the short image is padded
    moved, wrong = float((pooled[0] - alone).abs().max()), float((over_padding - alone).abs().max())
    assert moved <= 0.25 * wrong and moved <= 0.1 * float(alone.abs().max())
