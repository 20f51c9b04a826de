"""DELTA: keep the feature maps of the last block of each stage near the pretrained model's (SPEC §8).

Per sample and channel c of each recorded stage, d_c = ||FM_c(x) - FM^s_c(x)||_2 over the spatial
positions, against a frozen pretrained copy fed the same batch:

    loss += lambda * mean_batch sum_stages sum_c a_c d_c^2 / (H W)  +  lambda_head / 2 * ||head||^2

Channel weights ``a_c``:

- ``uniform``: a_c = 1 (the uniform-weight variant);
- ``accuracy_drop``: DELTA's supervised attention. A linear probe is fitted on the pretrained
  features of the training split; then, for every channel c of every stage, the probe's accuracy
  on ``attention_samples`` training images (eval transform) is measured with channel c of that
  stage's output zeroed in the pretrained model. With drop_c = accuracy - accuracy without c,
  a = C softmax(drop / attention_temperature) per stage (mean weight 1, as in the uniform variant,
  so lambda means the same). Computed once before training, cached on disk for later runs and
  seeds, and saved in checkpoints.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Literal

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from torch import nn

from ..engine.trainer import TrainEvents
from .frozen import FeatureMaps, frozen_copy, module_mib
from .l2sp import sum_sq
from .lp_ft import extract_features, fit_linear_probe
from .priors import cache_key, load_or_compute_tensors, prior_loader
from .registry import Regularizer, register


@torch.no_grad()
def channel_accuracy_drops(backbone: nn.Module, stages: dict[str, str], w: torch.Tensor, b: torch.Tensor,
                           x: torch.Tensor, y: torch.Tensor, group: int = 16) -> dict[str, torch.Tensor]:
    """{stage: (C,) drops}: the probe's (``w``, ``b``) accuracy on (x, y) minus its accuracy when
    channel c of the stage's output is zeroed in ``backbone`` (in eval mode), for every channel.

    ``group`` channels are tried per forward pass: the batch is repeated ``group`` times and a
    forward hook zeroes a different channel in each copy."""
    named = dict(backbone.named_modules())
    n = x.shape[0]

    def accuracy(feats: torch.Tensor) -> torch.Tensor:  # one value per copy of the batch
        hits = (feats.double() @ w.double().t() + b.double()).argmax(1) == y.repeat(feats.shape[0] // n)
        return hits.double().view(-1, n).mean(1)

    shapes: dict[str, torch.Size] = {}

    def shape_of(name: str):
        def hook(mod, inputs, output) -> None:  # a hook that returns a value would replace the output
            shapes[name] = output.shape[1:]
        return hook

    hooks = [named[p].register_forward_hook(shape_of(name)) for name, p in stages.items()]
    try:
        base = accuracy(backbone(x))[0]
    finally:
        for h in hooks:
            h.remove()
    drops = {}
    for name, path in stages.items():
        channels, spatial = shapes[name][0], len(shapes[name]) - 1
        mask: dict[str, torch.Tensor] = {}
        hook = named[path].register_forward_hook(lambda m, i, o: o * mask["m"].to(o.dtype))  # noqa: B023 (removed below)
        try:
            parts = []
            for first in range(0, channels, group):
                chosen = torch.arange(first, min(first + group, channels), device=x.device)
                k = len(chosen)
                m = torch.ones(k, channels, device=x.device)
                m[torch.arange(k, device=x.device), chosen] = 0.0
                mask["m"] = m.repeat_interleave(n, 0).view(k * n, channels, *([1] * spatial))
                parts.append(base - accuracy(backbone(x.repeat(k, *([1] * (x.dim() - 1))))))
        finally:
            hook.remove()
        drops[name] = torch.cat(parts).float()
    return drops


def attention_weights(drops: dict[str, torch.Tensor], temperature: float) -> dict[str, torch.Tensor]:
    """a = C softmax(drop / temperature) per stage: mean 1, larger where zeroing hurt more."""
    return {k: d.numel() * torch.softmax(d / temperature, 0) for k, d in drops.items()}


def delta_distance(fm: torch.Tensor, fm_s: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """mean over the batch of sum_c a_c ||fm_c - fm_s_c||^2 / (H W) for maps of shape (B, C, H, W)."""
    b, c = fm.shape[:2]
    d2 = (fm.float() - fm_s.float()).pow(2).reshape(b, c, -1).mean(2)  # ||.||^2 / (H W)
    if weights is not None:
        d2 = d2 * weights
    return d2.sum(1).mean()


@dataclass(kw_only=True)
class DeltaParams:
    lam: float = field(default=0.01, metadata={"key": "lambda"})
    lambda_head: float = 0.01
    channel_weights: Literal["uniform", "accuracy_drop"] = "accuracy_drop"
    attention_samples: int = 256  # training images the accuracy drops are measured on
    attention_temperature: float = 0.05  # a drop of 5 points weighs e times more than none
    probe_weight_decay: float = 1e-4

    def check(self):
        if self.attention_samples < 1:
            return "attention_samples", f"expected a positive number of images, got {self.attention_samples}"
        if self.attention_temperature <= 0:
            return "attention_temperature", f"expected a positive number, got {self.attention_temperature}"
        return None


@register("delta")
class Delta(Regularizer):
    Params = DeltaParams

    def __init__(self, params: DeltaParams, ctx):
        super().__init__(params, ctx)
        stages = ctx.net.stages
        self.maps = FeatureMaps(ctx.net.backbone, stages, "delta", only_training=True)
        self.frozen = frozen_copy(ctx.net.backbone)
        self.frozen_maps = FeatureMaps(self.frozen, stages, "delta")
        self.frozen_mib = module_mib(self.frozen)
        self.weights: dict[str, torch.Tensor] | None = None  # per stage; None: uniform

    def attach(self, trainer: Engine) -> None:
        if self.params.channel_weights == "accuracy_drop":
            trainer.add_event_handler(Events.STARTED, self.compute_weights)
        trainer.add_event_handler(TrainEvents.COMPUTE_LOSS, self.add_loss)

    def compute_weights(self, engine: Engine | None = None) -> None:
        """The accuracy-drop channel weights (skipped when restored from a checkpoint)."""
        if self.weights is not None:
            return
        p, ctx = self.params, self.ctx
        data = ctx.data
        key = {"stats": cache_key(self.frozen, data.train_eval.samples, data.num_classes, data.train_eval.transform,
                                  data.root, ctx.cfg.train.amp),
               "samples": p.attention_samples, "probe_weight_decay": p.probe_weight_decay,
               "stages": ctx.net.stages, "version": 1}
        name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
        drops, _ = load_or_compute_tensors(ctx.cache_dir / "delta" / f"{name}.pt", self._measure_drops, ctx.device,
                                           "DELTA channel accuracy drops")
        self.weights = attention_weights(drops, p.attention_temperature)

    def _measure_drops(self) -> dict[str, torch.Tensor]:
        ctx, p = self.ctx, self.params
        cfg = ctx.cfg.data
        loader = prior_loader(ctx.data.train_eval, cfg.eval_batch_size or cfg.batch_size, cfg.num_workers)
        feats, labels = extract_features(self.frozen, loader, ctx.device)
        w, b = fit_linear_probe(feats, labels, ctx.data.num_classes, p.probe_weight_decay)
        dataset = ctx.data.train_eval  # a fixed subset (seed 0): the same for every run seed
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:p.attention_samples]
        items = [dataset[int(i)] for i in order]
        x = torch.stack([it[0] for it in items]).to(ctx.device)
        y = torch.tensor([int(it[1]) for it in items], device=ctx.device)
        group = max(1, (cfg.eval_batch_size or cfg.batch_size) // len(items))  # images per pass <= a batch
        drops = channel_accuracy_drops(self.frozen, ctx.net.stages, w, b, x, y, group)
        if idist.get_world_size() > 1:  # rank 0's, so that every process uses the same weights
            drops = {k: idist.broadcast(v, src=0) for k, v in drops.items()}
        return drops

    def add_loss(self, engine: Engine) -> None:
        step = engine.state.step
        with torch.no_grad():
            self.frozen(step.x)
        weights = self.weights or {}
        fm_term = torch.stack([delta_distance(self.maps.outputs[k], self.frozen_maps.outputs[k], weights.get(k))
                               for k in self.maps.outputs]).sum()
        self.maps.outputs.clear()  # do not hold the maps beyond the step
        self.frozen_maps.outputs.clear()
        head = sum_sq(list(self.ctx.net.head.parameters()))
        step.losses["delta"] = self.params.lam * fm_term + 0.5 * self.params.lambda_head * head
        step.logs["delta_feature_maps"] = fm_term.detach()

    def state_dict(self) -> dict:
        return {"weights": None if self.weights is None else {k: v.cpu() for k, v in self.weights.items()}}

    def load_state_dict(self, state: dict) -> None:
        weights = state.get("weights")
        self.weights = None if weights is None else {k: v.to(self.ctx.device) for k, v in weights.items()}

    def report(self) -> dict:
        out = {"frozen_model_mib": self.frozen_mib, "channel_weights": self.params.channel_weights}
        if self.weights is not None:
            out["channel_weights_range"] = {k: [float(v.min()), float(v.max())] for k, v in self.weights.items()}
        return out

    def close(self) -> None:
        self.maps.remove()
        self.frozen_maps.remove()
        self.frozen = None
