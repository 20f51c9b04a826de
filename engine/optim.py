"""The network's optimizer and its learning-rate schedule."""

from __future__ import annotations

import math
import re

import torch
from ignite.handlers import LRScheduler

from ..core.config import OptimConfig
from ..core.errors import UserError
from ..models import Classifier


def create_optimizer(cfg: OptimConfig, net: Classifier, extra_groups: list[dict] = (),
                     fused: bool = False) -> torch.optim.Optimizer:
    """Parameter groups: the backbone at ``lr``, the new head at ``lr * head_lr_mult``, then the
    regularizer's own groups (each may carry its own ``lr``).

    ``fused``: torch's fused kernel (CPU and CUDA). fp16 runs ask for it: a fused optimizer applies
    the grad scaler's unscaling and inf check itself, where with any other the GradScaler reads its
    inf flag back to the host every step (a device sync on a GPU).

    ``layer_decay`` (ViTs): the backbone in one group per depth (``layer_decay_groups``)."""
    backbone = [(n, p) for n, p in net.backbone.named_parameters() if p.requires_grad]
    if cfg.layer_decay is None:
        backbone_groups = [{"params": [p for _, p in backbone], "lr": cfg.lr, "name": "backbone"}]
    else:
        backbone_groups = layer_decay_groups(backbone, cfg.lr, cfg.layer_decay)
    groups = [
        *backbone_groups,
        {"params": list(net.head.parameters()), "lr": cfg.lr * cfg.head_lr_mult, "name": "head"},
        *extra_groups,
    ]
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               weight_decay=cfg.weight_decay, fused=fused or None)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)


BLOCK = re.compile(r"(?:^|\.)(?:blocks|layers)\.(?:encoder_layer_)?(\d+)\.")
EMBEDDINGS = ("patch_embed", "cls_token", "pos_embed", "reg_token", "conv_proj", "class_token", "pos_embedding",
              "conv1", "positional_embedding")


def layer_depth(name: str, num_blocks: int) -> int:
    """0 for the embeddings, i + 1 for transformer block i, num_blocks + 1 for what follows them."""
    block = BLOCK.search(name)
    if block is not None:
        return int(block.group(1)) + 1
    if any(part in EMBEDDINGS for part in name.split(".")):
        return 0
    return num_blocks + 1


def layer_decay_groups(named_params: list[tuple[str, torch.nn.Parameter]], lr: float, decay: float) -> list[dict]:
    """One group per depth d of a ViT with L blocks (``layer_depth``), at lr * decay^(L + 1 - d)."""
    blocks = {int(m.group(1)) for n, _ in named_params if (m := BLOCK.search(n))}
    if not blocks:
        raise UserError("optim.layer_decay: the backbone has no transformer blocks (blocks.N or "
                        "encoder.layers.encoder_layer_N); layer-wise decay is for ViTs, set it to null")
    num_blocks = max(blocks) + 1
    by_depth: dict[int, list] = {}
    for name, p in named_params:
        by_depth.setdefault(layer_depth(name, num_blocks), []).append(p)
    return [{"params": params, "lr": lr * decay ** (num_blocks + 1 - depth), "name": f"backbone_depth{depth}"}
            for depth, params in sorted(by_depth.items())]


def published_lr_factor(step: int, total: int, warmup: int) -> float:
    """lr_t / lr of the published configs: t / W during a linear warm-up over the first W
    iterations, then cos(7 pi / 16 * p) with p = (t - W) / (T - W) the fraction of the remaining
    iterations done (it ends near cos(7 pi / 16) = 0.195, not 0)."""
    if step < warmup:
        return step / warmup
    p = min(step - warmup, total - warmup) / max(total - warmup, 1)
    return math.cos(7.0 * math.pi / 16.0 * p)


def create_lr_scheduler(cfg: OptimConfig, optimizer: torch.optim.Optimizer, epoch_length: int,
                        epochs: int) -> LRScheduler:
    """An Ignite LRScheduler over iterations (attach to ITERATION_STARTED): ``multistep`` drops
    by ``gamma`` at the given epochs, ``cosine`` anneals to 0 over the run, ``constant`` keeps lr,
    ``published`` is the published configs' schedule (``published_lr_factor``)."""
    if cfg.scheduler == "multistep":
        sched = torch.optim.lr_scheduler.MultiStepLR(optimizer, [m * epoch_length for m in cfg.milestones], cfg.gamma)
    elif cfg.scheduler == "published":
        total = epochs * epoch_length
        sched = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda t: published_lr_factor(t, total, cfg.warmup_iterations))
    elif cfg.scheduler == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * epoch_length))
    else:
        sched = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[], gamma=1.0)
    return LRScheduler(sched)
