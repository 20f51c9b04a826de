"""The pretrained extractor's features over a split: one pass, in eval mode, without gradients.

Every method that needs the frozen pretrained model's view of the training split goes through
:func:`feature_pass`: the prior statistics (``class_statistics.py``), the probes of LP-FT and
DELTA (:func:`extract_features`) and Co-Tuning's relationship (through the statistics). Each
process reads a disjoint shard without padding (:func:`feature_loader`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import ignite.distributed as idist
import torch
from ignite.engine import Engine
from ignite.handlers import ProgressBar
from torch import nn
from torch.utils.data import DataLoader

from ..core.distributed import shard_without_padding
from ..core.step import autocast, to_device


def feature_loader(dataset, batch_size: int, num_workers: int) -> DataLoader:
    """This process's shard of ``dataset`` in order (batched by ``dataset.collate`` where it has
    one: detection's images differ in size). Its own generator: the pass never draws from
    the global RNG (a run that reads a cache would otherwise continue with other random numbers
    than one that computed it)."""
    return DataLoader(shard_without_padding(dataset), batch_size=batch_size, shuffle=False,
                      num_workers=num_workers, pin_memory=torch.cuda.is_available(),
                      generator=torch.Generator().manual_seed(0), collate_fn=getattr(dataset, "collate", None))


@torch.no_grad()
def feature_pass(extractor: nn.Module, loader, device: torch.device, consume: Callable[[torch.Tensor, torch.Tensor], None],
                 amp: str = "off", progress: bool = False, desc: str = "features") -> None:
    """``consume(g(x), y)`` for every batch of ``loader``, g = ``extractor`` in eval mode (its mode
    is restored afterwards), the forward pass in the run's precision ``amp``, features in float32."""
    was_training = extractor.training
    extractor.eval()

    def step(engine, batch):
        x, y = batch
        with autocast(device, amp):
            f = extractor(to_device(x, device))
        consume(f.float(), y.to(device, non_blocking=True))

    engine = Engine(step)
    if progress and idist.get_rank() == 0:
        ProgressBar(persist=False, desc=desc).attach(engine)
    try:
        engine.run(loader, max_epochs=1)
    finally:
        extractor.train(was_training)


def extract_features(extractor: nn.Module, loader, device: torch.device, amp: str = "off"
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """All features (N, d) and labels (N,) of the split, gathered from every process."""
    feats, labels = [], []
    feature_pass(extractor, loader, device, lambda f, y: (feats.append(f), labels.append(y)), amp)
    feats, labels = torch.cat(feats), torch.cat(labels)
    if idist.get_world_size() > 1:
        feats, labels = idist.all_gather(feats), idist.all_gather(labels)
    return feats, labels


def fingerprint_module(module: nn.Module) -> str:
    """A digest of a module's parameters and buffers (names, shapes, dtypes, values)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def features_key(extractor: nn.Module, samples: list[tuple[str, int]], num_classes: int, transform, root: str,
                 amp: str = "off") -> str:
    """A key of everything a pass's features depend on: the extractor's weights, the dataset root,
    the exact sample list, the transform, the precision, and an extractor's own input transform
    where it has one (the detector's resizing and normalisation)."""
    parts = {
        "amp": amp,
        "version": 1,
        "weights": fingerprint_module(extractor),
        "root": str(root),
        "samples": hashlib.sha256(json.dumps(samples).encode()).hexdigest(),
        "num_classes": num_classes,
        "transform": repr(transform),
    }
    if isinstance(getattr(extractor, "transform", None), nn.Module):
        parts["input_transform"] = repr(extractor.transform)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]
