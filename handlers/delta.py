"""DELTA in the engine: an adapter over ``adarand.methods.Delta`` (the formulas are there). The
channel attention is measured once before training, cached on disk for later runs and seeds, and
saved in checkpoints."""

from __future__ import annotations

import hashlib
import json

import torch
from ignite.engine import Engine
from torch.utils.data import DataLoader

from ..core.cache import load_or_compute_tensors
from ..methods import delta
from ..methods.delta import (  # noqa: F401
    DeltaParams,
    channel_attention,
    delta_penalty,
    filter_ablation_losses,
    last_convolutions,
)
from ..methods.frozen import module_mib, tensors_mib
from .registry import MethodAdapter, register


@register("delta")
class Delta(MethodAdapter):
    Params = DeltaParams

    def __init__(self, params: DeltaParams, ctx):
        super().__init__(params, ctx)
        self.method = delta.Delta(ctx.net.backbone, ctx.net.head, ctx.net.stages, params=params)
        self.frozen_mib = module_mib(self.frozen)

    def add_loss(self, engine: Engine) -> None:
        super().add_loss(engine)
        engine.state.step.logs["delta_feature_maps"] = self.method.last_omega

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
        self.method.attention = channel_attention(increases, p.attention_temperature)

    def _measure(self) -> dict[str, torch.Tensor]:
        ctx, p = self.ctx, self.params
        cfg = ctx.cfg.data
        # training images with the eval transform, in a fixed order (seed 0): the same for every run seed
        batches = DataLoader(ctx.data.train_eval, batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.num_workers,
                             generator=torch.Generator().manual_seed(0))
        chosen = []
        for i, (x, y) in enumerate(batches):
            if i >= p.attention_batches:
                break
            chosen.append((x.to(ctx.device), y.to(ctx.device)))
        group = max(1, cfg.eval_batch // cfg.batch_size)
        increases = delta.measure_attention(self.frozen, self.layers, ctx.feature_loader(), chosen, ctx.data.num_classes,
                                            p.probe_weight_decay, group, ctx.cfg.train.amp)
        self.method.frozen_maps.outputs.clear()
        return increases

    def report(self) -> dict:
        return {"frozen_model_mib": self.frozen_mib, "channel_weights": self.params.channel_weights,
                "attention_mib": tensors_mib(*self.attention.values()),
                "attention_range": {k: [float(v.min()), float(v.max())] for k, v in self.attention.items()}}

    def close(self) -> None:
        self.method.close()
