"""Loading pretrained weights into a Classifier's backbone.

``pretrained`` is ``imagenet`` (torchvision's weights API: downloaded into the torch hub cache
when online, read from it when present), a path to a weights file, ``package:<file>`` for a file
shipped in ``models/weights/`` (the demo extractor), or ``None`` (random initialisation).

A weights file is ``.pt``, ``.pth`` or ``.bin`` (``torch.load`` with ``weights_only=True``) or
``.safetensors``. The state dict may be nested under ``state_dict``, ``model`` or ``module`` (as
training scripts save it); the prefixes that wrappers and self-supervised codebases put before
the backbone's own key names (``module.``, ``encoder.``, ``backbone.``, ``model.``, ``visual.``)
are removed; the pretrained model's classifier (``Classifier.source_head``: ``fc.`` for a
ResNet, ``heads.head.`` for a torchvision ViT, timm's classifier name) is kept apart as the
source head (for Co-Tuning) and never loaded into the backbone. This project's own checkpoints
(``backbone.`` and ``head.``) load as they are, their ``head`` as the source head.

Every backbone tensor must load: otherwise the run stops with one line naming the file, how many
keys matched and the first that did not (``model.pretrained_strict: false`` warns instead). A
tensor of the wrong shape always stops the run.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.error import URLError

import torch
from safetensors.torch import load_file

from ..core.errors import UserError
from .classifier import Classifier

log = logging.getLogger(__name__)

NESTING_KEYS = ("state_dict", "model", "module")
PREFIXES = ("module.", "encoder.", "backbone.", "model.", "visual.")


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


def read_weights_file(p: Path) -> dict[str, torch.Tensor]:
    """The state dict of tensors in ``p``, unwrapped from ``state_dict`` / ``model`` / ``module``."""
    if not p.is_file():
        raise UserError(f"model.pretrained: no such weights file: {p}")
    try:
        if p.suffix == ".safetensors":
            state = load_file(str(p))
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # re-raised as a user error naming the file
        reason = f"{e.__class__.__name__}: {e}".splitlines()[0]
        raise UserError(f"model.pretrained: cannot read {p} as a state_dict ({reason})") from None
    while isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        nested = next((state[k] for k in NESTING_KEYS if isinstance(state.get(k), dict)), None)
        if nested is None:
            break
        state = nested
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"model.pretrained: {p} does not hold a state_dict of tensors "
                        f"(looked under {', '.join(NESTING_KEYS)})")
    return state


def strip_prefixes(key: str) -> str:
    """``module.encoder.layer1.0.conv1.weight`` -> ``layer1.0.conv1.weight``."""
    while True:
        for prefix in PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        else:
            return key


def split_state(state: dict[str, torch.Tensor], source_head: str | None
                ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(backbone tensors, source classifier tensors): this project's layout (``backbone.``,
    ``head.``) as it is, any other with the wrappers' prefixes removed and the keys under
    ``source_head`` set apart."""
    ours = any(k.startswith("backbone.") for k in state) and all(k.startswith(("backbone.", "head.")) for k in state)
    backbone, head = {}, {}
    for k, v in state.items():
        if ours:
            part, _, rest = k.partition(".")
            (backbone if part == "backbone" else head)[rest] = v
            continue
        k = strip_prefixes(k)
        if source_head is not None and k.startswith(source_head):
            head[k[len(source_head):]] = v
        else:
            backbone[k] = v
    return backbone, head


def load_pretrained(model: Classifier, spec: str | None, imagenet_weights=None, strict: bool = True) -> PretrainedInfo:
    if spec is None:
        return PretrainedInfo(source=None)
    if spec == "imagenet":
        if imagenet_weights is None:
            raise UserError("model.pretrained: imagenet weights are not available for this architecture")
        state, shown = _imagenet_state_dict(imagenet_weights), "imagenet"
    else:
        path = resolve_weights_path(spec)
        state, shown = read_weights_file(path), str(path)
    backbone_state, head_state = split_state(state, model.source_head)
    expected = model.backbone.state_dict()
    for k, v in backbone_state.items():
        if k in expected and expected[k].shape != v.shape:
            raise UserError(f"model.pretrained: {shown}: {k} has shape {tuple(v.shape)}, the model's "
                            f"{tuple(expected[k].shape)} (weights of another architecture or width?)")
    result = model.backbone.load_state_dict(backbone_state, strict=False)
    info = PretrainedInfo(source=spec, missing_keys=list(result.missing_keys),
                          unexpected_keys=list(result.unexpected_keys),
                          source_head=head_state if {"weight", "bias"} <= set(head_state) else None)
    if info.missing_keys:
        matched = len(expected) - len(info.missing_keys)
        message = (f"model.pretrained: {shown}: {matched} of the backbone's {len(expected)} tensors matched; "
                   f"not found: {', '.join(info.missing_keys[:5])}{', ...' if len(info.missing_keys) > 5 else ''}")
        if strict:
            raise UserError(message + " (model.pretrained_strict: false to train from a partial load)")
        warnings.warn(message + "; left at their random initialisation", stacklevel=2)
    if info.unexpected_keys:
        log.warning("pretrained %s: %d keys that the backbone does not have, ignored: %s", shown,
                    len(info.unexpected_keys), ", ".join(info.unexpected_keys[:10]))
    return info
