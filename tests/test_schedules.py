"""The network's learning-rate schedules, followed through an Ignite run against their formulas."""

import math

import pytest
import torch
from ignite.engine import Engine, Events

from adarand.core.config import OptimConfig
from adarand.engine.optim import create_lr_scheduler


def lrs_through_a_run(cfg: OptimConfig, epoch_length: int, epochs: int) -> list[float]:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=cfg.lr)
    engine = Engine(lambda e, b: opt.param_groups[0]["lr"])
    engine.add_event_handler(Events.ITERATION_STARTED, create_lr_scheduler(cfg, opt, epoch_length, epochs))
    seen = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.output))
    engine.run([0] * epoch_length, max_epochs=epochs)
    return seen


def test_the_published_schedule_warms_up_then_follows_cos_7pi_16():
    lr, warmup, total = 3e-5, 30, 200
    cfg = OptimConfig(name="adamw", lr=lr, weight_decay=0.1, scheduler="published", warmup_iterations=warmup)
    seen = lrs_through_a_run(cfg, epoch_length=20, epochs=10)
    want = [lr * t / warmup if t < warmup else lr * math.cos(7 * math.pi / 16 * (t - warmup) / (total - warmup))
            for t in range(total)]
    assert seen == [pytest.approx(w, rel=1e-9, abs=1e-15) for w in want]
    assert seen[warmup] == pytest.approx(lr)
    # the last iterations approach cos(7 pi / 16) = 0.195 of lr, not 0
    assert seen[-1] / lr == pytest.approx(math.cos(7 * math.pi / 16 * 169 / 170), rel=1e-9) and seen[-1] / lr > 0.19


@pytest.mark.parametrize("arch,block", [("timm/vit_tiny_patch16_224", "blocks.{}.attn.qkv.weight"),
                                        ("vit_b_32", "encoder.layers.encoder_layer_{}.self_attention.in_proj_weight")])
def test_layer_wise_lr_decay_for_vits(arch, block):
    from adarand.core.config import ModelConfig
    from adarand.engine.optim import create_optimizer
    from adarand.models import create_model

    net, _ = create_model(ModelConfig(arch=arch), num_classes=3, image_size=32)
    cfg = OptimConfig(name="adamw", lr=1.0, layer_decay=0.5, head_lr_mult=10.0)
    opt = create_optimizer(cfg, net)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    params = dict(net.backbone.named_parameters())
    blocks = 12  # ViT-Ti/16 and ViT-B/32 both have twelve blocks
    assert len(lr_of) == len(list(net.parameters()))  # every parameter in exactly one group
    for i in (0, 5, blocks - 1):  # block i at 0.5^(L - i)
        assert lr_of[id(params[block.format(i)])] == pytest.approx(0.5 ** (blocks - i))
    embed = "patch_embed.proj.weight" if arch.startswith("timm") else "conv_proj.weight"
    norm = "norm.weight" if arch.startswith("timm") else "encoder.ln.weight"
    assert lr_of[id(params[embed])] == pytest.approx(0.5 ** (blocks + 1))
    assert lr_of[id(params[norm])] == pytest.approx(1.0)
    assert lr_of[id(net.head.weight)] == pytest.approx(10.0)  # the new head: lr * head_lr_mult


def test_layer_decay_is_for_vits():
    from adarand.core.config import ModelConfig
    from adarand.core.errors import UserError
    from adarand.engine.optim import create_optimizer
    from adarand.models import create_model

    net, _ = create_model(ModelConfig(arch="resnet18"), num_classes=3)
    with pytest.raises(UserError, match="optim.layer_decay: the backbone has no transformer blocks"):
        create_optimizer(OptimConfig(layer_decay=0.7), net)
