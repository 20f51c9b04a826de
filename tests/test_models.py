"""Backbones return (logits, features); pretrained weights from a file, from torchvision's cache."""

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
    net, info = create_model(ModelConfig(arch="resnet18", pretrained=str(path)), num_classes=3)
    assert info.missing_keys == ["layer4.1.bn2.running_var"]
    assert info.unexpected_keys == ["extra.weight"]
    assert "missing" in caplog.text and "unexpected" in caplog.text
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


def test_imagenet_weights_offline_gives_a_clear_error(tmp_path, monkeypatch):
    """No cached file and no way out (a proxy on a closed loopback port): the real download code
    fails, and the message says where to put the file."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(UserError) as e:
        create_model(ModelConfig(arch="resnet18", pretrained="imagenet"), num_classes=3)
    msg = str(e.value)
    assert "could not download" in msg and str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in msg
