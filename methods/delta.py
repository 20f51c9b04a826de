"""DELTA: keep inner feature maps near the pretrained model's, weighted by channel attention (SPEC §8).

The recorded layers are the last convolution of each stage (``Classifier.stages``; for a ResNet,
the last convolution of the stage's last block). For a batch of B images, with FM the fine-tuned
model's output of such a layer (C channels, H x W positions) and FM^s the frozen pretrained
model's on the same batch,

    Omega = 1/2 sum_{i <= B} sum_layers sum_c C a_c ||FM_c(x_i) - FM^s_c(x_i)||^2 / (H W)
    loss += lambda * Omega + lambda_head / 2 * ||head||^2

(a sum over the batch, as the Transfer-Learning-Library's implementation: the same lambda means
the same strength there and here). Channel attention a (per layer, sums to 1):

- ``attention``: a linear probe is fitted on the frozen pretrained features of the training split;
  for every output channel j of a layer, the increase of the probe's cross-entropy when that
  filter's weights are zeroed, averaged over ``attention_batches`` training batches, is z-scored
  over the layer's channels: a = softmax(z / attention_temperature) (``measure_attention``);
- ``uniform``: a_c = 1 / C.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..core.distributed import broadcast, world_size
from ..core.errors import UserError
from .base import Method
from .frozen import FeatureMaps, frozen_copy
from .l2sp import sum_sq
from .preparations import fit_linear_probe
from .statistics import extract_features


def delta_penalty(fm: torch.Tensor, fm_s: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """1/2 sum_i sum_c C a_c ||fm_c(x_i) - fm_s_c(x_i)||^2 / (H W) for maps (B, C, H, W) and
    attention a (C,) summing to 1."""
    b, c = fm.shape[:2]
    d2 = (fm.float() - fm_s.float()).pow(2).reshape(b, c, -1).mean(2)  # ||.||^2 / (H W), (B, C)
    return 0.5 * (c * attention * d2).sum()


def last_convolutions(backbone: nn.Module, stages: dict[str, str]) -> dict[str, str]:
    """{stage: path of the last ``nn.Conv2d`` at or before the stage's output}: the last one inside
    the stage module, or the last one before it (e.g. ResNet ``layer1`` -> ``layer1.2.conv3``)."""
    names = [name for name, _ in backbone.named_modules()]
    modules = dict(backbone.named_modules())
    layers = {}
    for stage, path in stages.items():
        if path not in modules:
            raise UserError(f"method.name: delta: the backbone has no layer {path}")
        end = max(i for i, n in enumerate(names) if n == path or n.startswith(path + "."))
        convs = [n for n in names[:end + 1] if isinstance(modules[n], nn.Conv2d)]
        if not convs:
            raise UserError(f"method.name: delta: the backbone has no convolution up to its stage {stage} ({path})")
        layers[stage] = convs[-1]
    return layers


@torch.no_grad()
def filter_ablation_losses(backbone: nn.Module, layers: dict[str, str], w: torch.Tensor, b: torch.Tensor,
                           batches, group: int = 16) -> dict[str, torch.Tensor]:
    """{layer: (C,)}: for each output channel j of each layer, CE(probe, with filter j's weights
    zeroed) - CE(probe, unchanged), each a mean over one batch, averaged over ``batches``
    ((x, y) pairs). ``backbone`` in eval mode; the probe is logits = features W^T + b.

    Zeroing filter j's weights sets channel j of the convolution's output to its bias (0 without
    one), which a forward hook does for ``group`` channels per pass: the batch is repeated
    ``group`` times and each copy has a different channel set."""
    modules = dict(backbone.named_modules())
    totals: dict[str, torch.Tensor] = {}
    n_batches = 0

    def ce(x: torch.Tensor, y: torch.Tensor, copies: int) -> torch.Tensor:  # one mean CE per copy
        logits = backbone(x).double() @ w.double().t() + b.double()
        return F.cross_entropy(logits, y.repeat(copies), reduction="none").view(copies, -1).mean(1)

    for x, y in batches:
        base = ce(x, y, 1)[0]
        for name, path in layers.items():
            conv = modules[path]
            channels = conv.out_channels
            state: dict[str, torch.Tensor] = {}

            def ablate(mod, inputs, out, state=state):
                keep = state["keep"].to(out.dtype)
                bias = mod.bias.to(out.dtype).view(1, -1, 1, 1) if mod.bias is not None else 0.0
                return out * keep + (1.0 - keep) * bias

            hook = conv.register_forward_hook(ablate)
            try:
                parts = []
                for first in range(0, channels, group):
                    chosen = torch.arange(first, min(first + group, channels), device=x.device)
                    k = len(chosen)
                    keep = torch.ones(k, channels, device=x.device)
                    keep[torch.arange(k, device=x.device), chosen] = 0.0
                    state["keep"] = keep.repeat_interleave(x.shape[0], 0)[:, :, None, None]
                    parts.append(ce(x.repeat(k, *([1] * (x.dim() - 1))), y, k) - base)
            finally:
                hook.remove()
            increase = torch.cat(parts)
            totals[name] = totals[name] + increase if name in totals else increase
        n_batches += 1
    return {name: (t / max(n_batches, 1)).float() for name, t in totals.items()}


def channel_attention(increases: dict[str, torch.Tensor], temperature: float = 5.0) -> dict[str, torch.Tensor]:
    """a = softmax(z / temperature) per layer, z the increases z-scored over the layer's channels
    (population standard deviation; all-equal increases give the uniform a_c = 1 / C).

        attention = channel_attention(measure_attention(frozen, layers, loader, batches, K), temperature=5.0)
    """
    out = {}
    for name, v in increases.items():
        v = v.double()
        std = v.std(unbiased=False)
        z = (v - v.mean()) / std if float(std) > 0 else torch.zeros_like(v)
        out[name] = torch.softmax(z / temperature, 0).float()
    return out


@dataclass(kw_only=True)
class DeltaParams:
    # lambda: the weight of the channel-weighted feature-map distance to the pretrained network
    lam: float = field(default=0.01, metadata={"key": "lambda", "range": ">= 0"})
    lambda_head: float = field(default=0.01, metadata={"range": ">= 0"})  # the weight of the L2 penalty on the head
    # attention: each channel weighted by how much the loss grows without it; uniform
    channel_weights: Literal["uniform", "attention"] = "attention"
    # training batches the cross-entropy increases are averaged over
    attention_batches: int = field(default=10, metadata={"range": ">= 1"})
    attention_temperature: float = field(default=5.0, metadata={"range": "> 0"})  # softmax temperature of the channel attention
    # weight decay of the linear probe the attention is measured with
    probe_weight_decay: float = field(default=1e-4, metadata={"range": ">= 0"})


def measure_attention(frozen: nn.Module, layers: dict[str, str], feature_loader, batches, num_classes: int,
                      probe_weight_decay: float = 1e-4, group: int = 1, amp: str = "off") -> dict[str, torch.Tensor]:
    """The filter-ablation increases {stage: (C,)} of the module docstring: a linear probe fitted on
    ``frozen``'s features over ``feature_loader`` (eval transform), then the cross-entropy increases
    on ``batches`` ((x, y) pairs on the device); in a process group, rank 0's for every process.
    ``channel_attention`` turns them into the attention.

        increases = measure_attention(reg.frozen, reg.layers, eval_loader, [(x, y)], num_classes)
        reg.attention = channel_attention(increases)
    """
    device = next(frozen.parameters()).device
    feats, labels = extract_features(frozen, feature_loader, device, amp)
    w, b = fit_linear_probe(feats, labels, num_classes, probe_weight_decay)
    increases = filter_ablation_losses(frozen, layers, w, b, batches, group)
    if world_size() > 1:  # rank 0's, so that every process uses the same attention
        increases = {k: broadcast(v.contiguous(), src=0) for k, v in increases.items()}
    return increases


class Delta(Method):
    """DELTA: ``lambda * Omega + lambda_head / 2 ||head||^2`` (module docstring), Omega from the
    feature maps of ``layers`` ({name: module path}; default: the last convolution of each of
    ``stages``) of the trained backbone and of a frozen copy of it made with the object.
    ``attention``: {name: (C,)}, uniform when not given (see ``measure_attention``). The
    trained backbone's maps are recorded by hooks during the step's forward pass (training mode).

        reg = Delta(model.backbone, model.head, stages={"layer4": "layer4"}, lam=0.01)
        logits, features = model(x)
        loss = F.cross_entropy(logits, y) + reg(features, y, images=x)
    """

    Params = DeltaParams

    def __init__(self, backbone: nn.Module, head: nn.Module, stages: dict[str, str] | None = None,
                 layers: dict[str, str] | None = None, attention: dict[str, torch.Tensor] | None = None, *,
                 params: DeltaParams | None = None, **hyperparameters):
        super().__init__(params, **hyperparameters)
        self.layers = layers if layers is not None else last_convolutions(backbone, stages or {})
        # none without a stage layout: FeatureMaps then stops with one line
        self.maps = FeatureMaps(backbone, self.layers, "delta", only_training=True)
        self.frozen = frozen_copy(backbone)
        self.frozen_maps = FeatureMaps(self.frozen, self.layers, "delta")
        self.head = head
        modules = dict(backbone.named_modules())
        device = next(head.parameters()).device
        self.attention = attention if attention is not None else {
            name: torch.full((modules[path].out_channels,), 1.0 / modules[path].out_channels, device=device)
            for name, path in self.layers.items()}

    def terms(self, features, labels, *, logits=None, images=None) -> dict[str, torch.Tensor]:
        if images is None:
            raise ValueError("Delta needs the batch's images (images=x): the frozen pretrained model reads them")
        with torch.no_grad():
            self.frozen(images)
        omega = torch.stack([delta_penalty(self.maps.outputs[k], self.frozen_maps.outputs[k], self.attention[k])
                             for k in self.maps.outputs]).sum()
        self.maps.outputs.clear()  # do not hold the maps beyond the step
        self.frozen_maps.outputs.clear()
        head = sum_sq(list(self.head.parameters()))
        self.last_omega = omega.detach()
        return {"delta": self.params.lam * omega + 0.5 * self.params.lambda_head * head}

    def state_dict(self) -> dict:
        return {"attention": {k: v.cpu() for k, v in self.attention.items()}}

    def load_state_dict(self, state: dict) -> None:
        device = next(iter(self.attention.values())).device
        self.attention = {k: v.to(device) for k, v in state["attention"].items()}

    def close(self) -> None:
        """Remove the hooks and free the frozen copy."""
        self.maps.remove()
        self.frozen_maps.remove()
        self.frozen = None
