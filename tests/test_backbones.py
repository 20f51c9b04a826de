"""Backbones beyond ResNets: torchvision models by name, any timm model as timm/<name>, CLIP
towers; the methods that can run on a ViT and on a CLIP tower do, a few steps on the CPU."""

import json

import pytest
import timm
import torch
from ignite.engine import Events

from adarand.core.config import ModelConfig
from adarand.core.errors import UserError
from adarand.engine.config import load_config
from adarand.engine.training import run_training
from adarand.models import create_model

from conftest import write_tiny_config

VIT = "timm/vit_tiny_patch16_224"
CLIP = "timm/vit_xsmall_patch16_clip_224"


def test_torchvision_models_by_name_read_their_feature_dimension():
    torch.manual_seed(0)
    for arch, dim, head in (("vit_b_16", 768, "heads.head."), ("resnet18", 512, "fc."), ("mobilenet_v3_small", 576, None)):
        net, _ = create_model(ModelConfig(arch=arch), num_classes=4, image_size=32)
        net.eval()
        logits, feats = net(torch.randn(2, 3, 32, 32))
        assert feats.shape == (2, dim) and net.feature_dim == dim and logits.shape == (2, 4)
        if head is not None:
            assert net.source_head == head


def test_a_timm_classifier_gives_its_pre_logits_features_and_loads_from_a_file(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model("vit_tiny_patch16_224", num_classes=10, img_size=32).eval()
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "vit.pth")
    net, info = create_model(ModelConfig(arch=VIT, pretrained=str(tmp_path / "vit.pth")), num_classes=3, image_size=32)
    net.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = source.forward_head(source.forward_features(x), pre_logits=True)  # the class token after the norm
        _, feats = net(x)
    assert net.feature_dim == 192 and torch.allclose(feats, want, atol=1e-6)
    assert info.missing_keys == [] and info.source_head["weight"].shape == (10, 192)


def test_a_clip_tower_keeps_its_projection_and_has_no_source_head(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model("vit_xsmall_patch16_clip_224", img_size=32).eval()
    from safetensors.torch import save_file

    save_file({f"visual.{k}": v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "clip.safetensors"))
    net, info = create_model(ModelConfig(arch=CLIP, pretrained=str(tmp_path / "clip.safetensors")), num_classes=3,
                             image_size=32)
    net.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        _, feats = net(x)
        assert torch.allclose(feats, source(x), atol=1e-6)  # the image embedding, projected
    assert net.feature_dim == source.num_classes and info.source_head is None and net.source_head is None


def test_unknown_architectures_and_weights_sources_are_one_line_errors():
    with pytest.raises(UserError, match="model.arch: timm/nosuch_model: timm .* has no such model"):
        create_model(ModelConfig(arch="timm/nosuch_model"), num_classes=3)
    with pytest.raises(UserError, match="model.arch: 'nosuch' is neither a torchvision"):
        create_model(ModelConfig(arch="nosuch"), num_classes=3)
    with pytest.raises(UserError, match="model.pretrained: hub is timm's weights"):
        create_model(ModelConfig(arch="resnet18", pretrained="hub"), num_classes=3)


RUNS_ON_ANY_BACKBONE = ["finetune", "fnp", "randreg_normal", "randreg_global", "randreg_cp", "adarand", "l2sp", "bss",
                        "dr_tune", "lp_ft"]


def vit_config(tmp_path, method, arch, extra=()):
    overrides = [f"model.arch={arch}", "data.image_size=32", "data.resize_size=32", "train.epochs=1", *extra]
    return load_config(write_tiny_config(tmp_path, method), overrides)


@pytest.mark.parametrize("arch", [VIT, CLIP])
@pytest.mark.parametrize("method", RUNS_ON_ANY_BACKBONE)
def test_methods_run_on_a_vit_and_a_clip_tower(tmp_path, arch, method):
    extra = {"dr_tune": ["method.bank_size=8"], "lp_ft": ["method.probe_max_iter=20"]}.get(method, [])
    results = run_training(0, vit_config(tmp_path, method, arch, extra), tmp_path / "run", None)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["method"] == method and saved["test_accuracy"] == results["test_accuracy"]
    # the selected model: the new head on the tower's features (its width), the rest the backbone
    (best,) = (tmp_path / "run" / "checkpoints").glob("best_model_*.pt")
    state = torch.load(best, weights_only=True)
    d = 192 if arch == VIT else 512
    assert state["head.weight"].shape == (3, d) and state["head.bias"].shape == (3,)
    assert all(k.startswith("backbone.") for k in state if not k.startswith("head."))
    if method in ("adarand", "randreg_cp"):
        tensors = 3 if method == "adarand" else 2  # mu and sigma, and AdaRand's mu_bar
        assert saved["method_report"]["prior_state_mib"] == pytest.approx(tensors * 3 * d * 4 / 2**20)


@pytest.mark.parametrize("arch", [VIT, CLIP])
def test_a_few_steps_on_one_batch_lower_its_loss(tmp_path, arch):
    """The tower trains: five steps of the real trainer on one fixed batch lower that batch's cross-entropy."""
    from adarand.engine.build import build_run

    run = build_run(vit_config(tmp_path, "finetune", arch, ["optim.lr=0.01"]))
    batch = next(iter(run.loaders.train))
    losses = []
    run.trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output.losses["ce"])))
    run.trainer.run([batch] * 5, max_epochs=1)
    assert len(losses) == 5 and losses[-1] < 0.9 * losses[0], losses


@pytest.mark.parametrize("method,match", [("delta", "delta needs the backbone's stage layout"),
                                          ("daft", "no BatchNorm layer"),
                                          ("co_tuning", "needs the pretrained model's source classifier")])
def test_methods_that_need_what_a_vit_lacks_stop_with_one_line(tmp_path, method, match):
    from adarand.engine.build import build_run

    with pytest.raises(UserError, match=match):
        build_run(vit_config(tmp_path, method, CLIP))


def test_transforms_follow_the_backbone_unless_the_config_sets_them(tmp_path):
    from adarand.engine.build import build_run

    cfg = load_config(write_tiny_config(tmp_path, "finetune"), [f"model.arch={CLIP}", "data.mean=null", "data.std=null",
                                                                 "data.image_size=null", "data.resize_size=null"])
    run = build_run(cfg)
    d = run.cfg.data
    # CLIP's own normalisation, bicubic, 224 / crop_pct 0.9 (timm's pretrained config)
    assert d.mean == pytest.approx([0.48145466, 0.4578275, 0.40821073]) and d.std[0] == pytest.approx(0.26862954)
    assert (d.image_size, d.resize_size, d.interpolation) == (224, 248, "bicubic")
    assert "BICUBIC" in repr(run.data.train.transform) and "Resize(size=[248]" in repr(run.data.test.transform)
    # torchvision's ImageNet weights: their preprocessing; a value the config sets wins
    from adarand.models import backbone_preprocessing

    pre = backbone_preprocessing(ModelConfig(arch="vit_b_32", pretrained="imagenet"))
    assert (pre["image_size"], pre["resize_size"], pre["interpolation"]) == (224, 256, "bilinear")
    cfg = load_config(write_tiny_config(tmp_path, "finetune"), [f"model.arch={CLIP}", "data.mean=null", "data.std=null",
                                                                 "data.image_size=32", "data.resize_size=36"])
    d = build_run(cfg).cfg.data
    assert (d.image_size, d.resize_size) == (32, 36) and d.interpolation == "bicubic"  # the sizes set are kept
    assert d.mean == pytest.approx([0.48145466, 0.4578275, 0.40821073])


def test_timm_hub_weights_offline_give_one_line(tmp_path):
    """No network and an empty cache: timm's real download code fails, and the run gets one line."""
    import os
    import subprocess
    import sys

    code = ("from adarand.core.config import ModelConfig\nfrom adarand.models import create_model\n"
            "create_model(ModelConfig(arch='timm/vit_xsmall_patch16_clip_224', pretrained='hub'), 3)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert "model.pretrained: hub: could not get timm's weights for vit_xsmall_patch16_clip_224" in last
