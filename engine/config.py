"""A run's config: the files and overrides read (``core/config.py``), then the method's own
parameters built by the method registry."""

from __future__ import annotations

from pathlib import Path

from ..core.config import Config, read_config
from ..handlers.registry import build_params


def resolve_method(cfg: Config) -> Config:
    """Build ``cfg.method.params`` (a mapping) into the method's parameter dataclass, in place."""
    if isinstance(cfg.method.params, dict):
        cfg.method.params, cfg.method.fixed = build_params(cfg.method, cfg.where)
    return cfg


def load_config(path: str | Path | list, overrides: list[str] = (), seed: int | None = None) -> Config:
    """Read and validate a config with its method's parameters; one-line ConfigError otherwise."""
    return resolve_method(read_config(path, overrides, seed))
