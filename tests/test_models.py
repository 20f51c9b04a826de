"""Backbones return (logits, features); pretrained weights from a file, from torchvision's cache."""

import re
import urllib.request

import pytest
import torch
import torchvision

from adarand.core.config import ModelConfig
from adarand.core.errors import UserError
from adarand.models import create_model


@pytest.mark.parametrize("arch,dim", [("resnet18", 512), ("resnet50", 2048), ("small_cnn", 128)])
def test_forward_returns_logits_and_features(arch, dim):
    torch.manual_seed(0)
    net, info = create_model(ModelConfig(arch=arch), num_classes=7, in_channels=3)
    net.eval()
    logits, feats = net(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 7) and feats.shape == (2, dim) and net.feature_dim == dim
    assert torch.allclose(logits, net.head(feats))
    assert info.source is None


def test_new_head_init():
    torch.manual_seed(0)
    net, _ = create_model(ModelConfig(arch="resnet50"), num_classes=196)
    w = net.head.weight.detach()
    assert torch.count_nonzero(net.head.bias) == 0
    assert abs(float(w.mean())) < 1e-3 and float(w.std()) == pytest.approx(0.01, rel=0.02)


def test_pretrained_state_dict_file_reports_keys(tmp_path, caplog):
    src = torchvision.models.resnet18(weights=None)
    state = src.state_dict()
    state.pop("layer4.1.bn2.running_var")
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "w.pth"
    torch.save(state, path)
    with pytest.raises(UserError, match="119 of the backbone's 120 tensors matched; not found: layer4.1.bn2.running_var"):
        create_model(ModelConfig(arch="resnet18", pretrained=str(path)), num_classes=3)
    with pytest.warns(UserWarning, match="not found: layer4.1.bn2.running_var"):
        net, info = create_model(ModelConfig(arch="resnet18", pretrained=str(path), pretrained_strict=False),
                                 num_classes=3)
    assert info.missing_keys == ["layer4.1.bn2.running_var"]
    assert info.unexpected_keys == ["extra.weight"]
    assert "extra.weight" in caplog.text
    assert torch.equal(net.backbone.conv1.weight, src.conv1.weight)
    assert info.source_head is not None and info.source_head["weight"].shape == (1000, 512)
    assert not torch.equal(net.head.weight[:3], src.fc.weight[:3, :])  # the new head is new


def test_imagenet_weights_through_torchvision_cache(tmp_path, monkeypatch):
    """``pretrained: imagenet`` goes through torchvision's weights API; a file already in the
    torch hub cache is used as it is (what a download would have put there)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    src = torchvision.models.resnet18(weights=None)
    ckpt = tmp_path / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.save(src.state_dict(), ckpt / weights.url.rsplit("/", 1)[1])
    net, info = create_model(ModelConfig(arch="resnet18", pretrained="imagenet"), num_classes=3)
    assert info.missing_keys == [] and info.unexpected_keys == []
    assert torch.equal(net.backbone.layer3[0].conv1.weight, src.layer3[0].conv1.weight)


def test_missing_weights_file(tmp_path):
    with pytest.raises(UserError, match="no such weights file"):
        create_model(ModelConfig(arch="resnet18", pretrained=str(tmp_path / "none.pth")), num_classes=3)


def test_shipped_demo_extractor_loads_completely():
    net, info = create_model(ModelConfig(arch="small_cnn", pretrained="package:small_cnn_digits_source.pt"),
                             num_classes=5, in_channels=1)
    assert info.missing_keys == [] and info.unexpected_keys == []
    assert info.source_head["weight"].shape == (5, 128)


def test_imagenet_weights_offline_gives_a_clear_error(tmp_path, monkeypatch, request):
    """No cached file and no way out (a proxy on a closed loopback port): the real download code
    fails, and the message says where to put the file."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    # urlopen builds its shared opener, with these proxies, on first use and keeps it: drop it after
    request.addfinalizer(lambda: urllib.request.install_opener(None))
    with pytest.raises(UserError) as e:
        create_model(ModelConfig(arch="resnet18", pretrained="imagenet"), num_classes=3)
    msg = str(e.value)
    assert "could not download" in msg and str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in msg


# -- weights files as other codebases save them ----------------------------------------------------
def _resnet18_state(seed=0):
    torch.manual_seed(seed)
    return torchvision.models.resnet18(weights=None).state_dict()


SAVED_AS = {
    # DDP: every key under "module."
    "ddp": lambda s: {f"module.{k}": v for k, v in s.items()},
    # SimCLR (converted): {"state_dict": {"module.encoder.<key>": ...}}, a projection head beside it
    "simclr": lambda s: {"state_dict": {**{f"module.encoder.{k}": v for k, v in s.items() if not k.startswith("fc.")},
                                        "module.projector.0.weight": torch.zeros(8, 512)}},
    # Barlow Twins / VICReg style: {"model": {"backbone.<key>": ...}}, no classifier
    "barlow_twins": lambda s: {"epoch": 100, "model": {f"backbone.{k}": v for k, v in s.items() if not k.startswith("fc.")}},
}


@pytest.mark.parametrize("style", sorted(SAVED_AS))
def test_weights_saved_by_other_codebases_load_completely(tmp_path, style):
    state = _resnet18_state()
    path = tmp_path / f"{style}.pth"
    torch.save(SAVED_AS[style](state), path)
    net, info = create_model(ModelConfig(arch="resnet18", pretrained=str(path)), num_classes=3)
    assert info.missing_keys == []
    for k, v in net.backbone.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert (info.source_head is not None) == (style == "ddp")  # only the DDP file kept its fc
    assert not any(k.startswith("fc.") for k in info.unexpected_keys)


def test_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    state = _resnet18_state(1)
    save_file({f"model.{k}": v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    net, info = create_model(ModelConfig(arch="resnet18", pretrained=str(tmp_path / "w.safetensors")), num_classes=3)
    assert info.missing_keys == [] and info.source_head["weight"].shape == (1000, 512)
    assert torch.equal(net.backbone.layer2[1].conv2.weight, state["layer2.1.conv2.weight"])


def test_keys_that_match_nothing_stop_the_run_with_one_line(tmp_path):
    state = {f"trunk.{k}": v for k, v in _resnet18_state().items()}  # a prefix we do not know
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(UserError) as e:
        create_model(ModelConfig(arch="resnet18", pretrained=str(tmp_path / "w.pt")), num_classes=3)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "w.pt") in msg
    assert re.search(r"0 of the backbone's \d+ tensors matched", msg) and "conv1.weight" in msg and "pretrained_strict" in msg


def test_a_wrong_shape_names_the_key_and_both_shapes(tmp_path):
    state = _resnet18_state()
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(UserError, match=r"layer1\.0\.conv1\.weight has shape \(64, 64, 1, 1\), the model's \(64, 64, 3, 3\)"):
        create_model(ModelConfig(arch="resnet18", pretrained=str(tmp_path / "w.pt"), pretrained_strict=False),
                     num_classes=3)


def test_a_file_without_tensors_is_refused(tmp_path):
    torch.save({"epoch": 3, "state_dict": {"note": "none"}}, tmp_path / "w.pt")
    with pytest.raises(UserError, match="does not hold a state_dict of tensors"):
        create_model(ModelConfig(arch="resnet18", pretrained=str(tmp_path / "w.pt")), num_classes=3)
