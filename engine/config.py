"""A run's config: the files and overrides read (``core/config.py``), then the method's own
parameters built by the method registry."""

from __future__ import annotations

from pathlib import Path

from ..core.config import Config, read_config
from ..core.errors import ConfigError
from ..handlers.registry import build_params
from ..models import unknown_arch


def resolve_method(cfg: Config) -> Config:
    """Build ``cfg.method.params`` (a mapping) into the method's parameter dataclass, in place."""
    if isinstance(cfg.method.params, dict):
        cfg.method.params, cfg.method.fixed = build_params(cfg.method, cfg.where)
    return cfg


def load_config(path: str | Path | list, overrides: list[str] = (), seed: int | None = None) -> Config:
    """Read and validate a config with its method's parameters and its backbone's name; one-line
    ConfigError otherwise, naming the file (or the command line) that set the key."""
    cfg = read_config(path, overrides, seed)
    problem = unknown_arch(cfg.model.arch)
    if problem:
        raise ConfigError(cfg.where("model.arch"), "model.arch", problem)
    return resolve_method(cfg)
