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
  over the layer's channels: a = softmax(z / attention_temperature). Computed once before
  training, cached on disk for later runs and seeds, and saved in checkpoints;
- ``uniform``: a_c = 1 / C.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Literal

import ignite.distributed as idist
import torch
import torch.nn.functional as F
from ignite.engine import Engine
from torch import nn
from torch.utils.data import DataLoader

from ..core.cache import load_or_compute_tensors
from ..core.errors import UserError
from ..core.step import TrainEvents
from .features import extract_features
from .frozen import FeatureMaps, frozen_copy, module_mib, tensors_mib
from .l2sp import sum_sq
from .lp_ft import fit_linear_probe
from .registry import Regularizer, register


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
    (population standard deviation; all-equal increases give the uniform a_c = 1 / C)."""
    out = {}
    for name, v in increases.items():
        v = v.double()
        std = v.std(unbiased=False)
        z = (v - v.mean()) / std if float(std) > 0 else torch.zeros_like(v)
        out[name] = torch.softmax(z / temperature, 0).float()
    return out


@dataclass(kw_only=True)
class DeltaParams:
    lam: float = field(default=0.01, metadata={"key": "lambda", "range": ">= 0"})
    lambda_head: float = field(default=0.01, metadata={"range": ">= 0"})
    channel_weights: Literal["uniform", "attention"] = "attention"
    # training batches the cross-entropy increases are averaged over
    attention_batches: int = field(default=10, metadata={"range": ">= 1"})
    attention_temperature: float = field(default=5.0, metadata={"range": "> 0"})
    probe_weight_decay: float = field(default=1e-4, metadata={"range": ">= 0"})


@register("delta")
class Delta(Regularizer):
    Params = DeltaParams

    def __init__(self, params: DeltaParams, ctx):
        super().__init__(params, ctx)
        self.layers = last_convolutions(ctx.net.backbone, ctx.net.stages)  # none without a stage layout:
        # FeatureMaps then stops the run with one line
        self.maps = FeatureMaps(ctx.net.backbone, self.layers, "delta", only_training=True)
        self.frozen = frozen_copy(ctx.net.backbone)
        self.frozen_maps = FeatureMaps(self.frozen, self.layers, "delta")
        self.frozen_mib = module_mib(self.frozen)
        modules = dict(ctx.net.backbone.named_modules())
        self.attention = {name: torch.full((modules[path].out_channels,), 1.0 / modules[path].out_channels,
                                           device=ctx.device) for name, path in self.layers.items()}

    def attach(self, trainer: Engine) -> None:
        trainer.add_event_handler(TrainEvents.COMPUTE_LOSS, self.add_loss)

    def prepare(self) -> None:
        """The channel attention (``attention``), read from the cache or measured."""
        if self.params.channel_weights != "attention":
            return
        p, ctx = self.params, self.ctx
        key = {"stats": ctx.features_key(self.frozen),
               "measure": "filter_ablation_ce", "batches": p.attention_batches, "batch_size": ctx.cfg.data.batch_size,
               "probe_weight_decay": p.probe_weight_decay, "layers": self.layers, "version": 2}
        name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
        modules = dict(self.frozen.named_modules())
        expected = {stage: ((modules[path].out_channels,), torch.float32) for stage, path in self.layers.items()}
        increases, _ = load_or_compute_tensors(ctx.cache_dir / "delta" / f"{name}.pt", self._measure, ctx.device,
                                               "DELTA channel attention", expected)
        self.attention = channel_attention(increases, p.attention_temperature)

    def _measure(self) -> dict[str, torch.Tensor]:
        ctx, p = self.ctx, self.params
        cfg = ctx.cfg.data
        feats, labels = extract_features(self.frozen, ctx.feature_loader(), ctx.device, ctx.cfg.train.amp)
        w, b = fit_linear_probe(feats, labels, ctx.data.num_classes, p.probe_weight_decay)
        # training images with the eval transform, in a fixed order (seed 0): the same for every run seed
        batches = DataLoader(ctx.data.train_eval, batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.num_workers,
                             generator=torch.Generator().manual_seed(0))
        chosen = []
        for i, (x, y) in enumerate(batches):
            if i >= p.attention_batches:
                break
            chosen.append((x.to(ctx.device), y.to(ctx.device)))
        group = max(1, cfg.eval_batch // cfg.batch_size)
        increases = filter_ablation_losses(self.frozen, self.layers, w, b, chosen, group)
        self.frozen_maps.outputs.clear()
        if idist.get_world_size() > 1:  # rank 0's, so that every process uses the same attention
            increases = {k: idist.broadcast(v, src=0) for k, v in increases.items()}
        return increases

    def add_loss(self, engine: Engine) -> None:
        step = engine.state.step
        with torch.no_grad():
            self.frozen(step.x)
        omega = torch.stack([delta_penalty(self.maps.outputs[k], self.frozen_maps.outputs[k], self.attention[k])
                             for k in self.maps.outputs]).sum()
        self.maps.outputs.clear()  # do not hold the maps beyond the step
        self.frozen_maps.outputs.clear()
        head = sum_sq(list(self.ctx.net.head.parameters()))
        step.losses["delta"] = self.params.lam * omega + 0.5 * self.params.lambda_head * head
        step.logs["delta_feature_maps"] = omega.detach()

    def state_dict(self) -> dict:
        return {"attention": {k: v.cpu() for k, v in self.attention.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.attention = {k: v.to(self.ctx.device) for k, v in state["attention"].items()}

    def report(self) -> dict:
        return {"frozen_model_mib": self.frozen_mib, "channel_weights": self.params.channel_weights,
                "attention_mib": tensors_mib(*self.attention.values()),
                "attention_range": {k: [float(v.min()), float(v.max())] for k, v in self.attention.items()}}

    def close(self) -> None:
        self.maps.remove()
        self.frozen_maps.remove()
        self.frozen = None
