"""Loading pretrained weights into a Classifier's backbone.

``pretrained`` is ``imagenet`` (torchvision's weights API: downloaded into the torch hub cache
when online, read from it when present), a path to a state_dict (torchvision's key names, or
ours under ``backbone.``/``head.``; one of our checkpoints with a ``model`` entry also works),
``package:<file>`` for a file shipped in ``models/weights/`` (the demo extractor), or ``None``
(random initialisation).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.error import URLError

import torch

from ..core.errors import UserError
from .classifier import Classifier

log = logging.getLogger(__name__)


@dataclass
class PretrainedInfo:
    source: str | None
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    # the pretrained model's own classifier (e.g. ImageNet's fc), kept for methods that use it
    source_head: dict[str, torch.Tensor] | None = None


def _imagenet_state_dict(weights) -> dict[str, torch.Tensor]:
    try:
        return weights.get_state_dict(progress=True)
    except (URLError, OSError) as e:
        hub = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
        raise UserError(
            f"model.pretrained: imagenet: could not download {weights.url} ({e.__class__.__name__}); "
            f"place the file at {hub} or set model.pretrained to a local state_dict file"
        ) from None


PACKAGE_WEIGHTS = Path(__file__).resolve().parent / "weights"


def resolve_weights_path(spec: str) -> Path:
    """``package:<name>`` is a file shipped in ``models/weights/``; anything else a path."""
    if spec.startswith("package:"):
        return PACKAGE_WEIGHTS / spec[len("package:"):]
    return Path(spec).expanduser()


def _file_state_dict(path: str) -> dict[str, torch.Tensor]:
    p = resolve_weights_path(path)
    if not p.is_file():
        raise UserError(f"model.pretrained: no such weights file: {p}")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # re-raised as a user error naming the file
        reason = f"{e.__class__.__name__}: {e}".splitlines()[0]
        raise UserError(f"model.pretrained: cannot read {p} as a PyTorch state_dict ({reason})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"model.pretrained: {p} does not hold a state_dict of tensors")
    return state


def load_pretrained(model: Classifier, spec: str | None, imagenet_weights=None) -> PretrainedInfo:
    if spec is None:
        return PretrainedInfo(source=None)
    if spec == "imagenet":
        if imagenet_weights is None:
            raise UserError("model.pretrained: imagenet weights are not available for this architecture")
        state = _imagenet_state_dict(imagenet_weights)
    else:
        state = _file_state_dict(spec)

    backbone_state, head_state = {}, {}
    for k, v in state.items():
        if k.startswith("backbone."):
            backbone_state[k[len("backbone."):]] = v
        elif k.startswith("head."):
            head_state[k[len("head."):]] = v
        elif k.startswith("fc."):
            head_state[k[len("fc."):]] = v
        else:
            backbone_state[k] = v
    result = model.backbone.load_state_dict(backbone_state, strict=False)
    info = PretrainedInfo(source=spec, missing_keys=list(result.missing_keys),
                          unexpected_keys=list(result.unexpected_keys),
                          source_head=head_state if {"weight", "bias"} <= set(head_state) else None)
    if info.missing_keys:
        log.warning("pretrained %s: %d backbone keys missing (left at random init): %s", spec,
                    len(info.missing_keys), ", ".join(info.missing_keys[:10]))
    if info.unexpected_keys:
        log.warning("pretrained %s: %d unexpected keys ignored: %s", spec,
                    len(info.unexpected_keys), ", ".join(info.unexpected_keys[:10]))
    return info
