"""A run's config: the files and overrides read (``core/config.py``), then the method's own
parameters built by the method registry."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..core.config import Config, read_config
from ..core.errors import ConfigError
from ..handlers.registry import build_params, known_regularizers, task_problem
from ..models import detection_arch_problem, unknown_arch


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
    check_task(cfg)
    if cfg.method.name in known_regularizers():  # an unknown name is resolve_method's error
        problem = task_problem(cfg.method.name, cfg.task)
        if problem:
            raise ConfigError(cfg.where("method.name"), "method.name", problem)
    return resolve_method(cfg)


DETECTION_PACKAGES = ("torchmetrics", "pycocotools")


def check_task(cfg: Config) -> None:
    """The task's data, backbone and packages: detection reads instance annotations (data.name coco,
    voc_instances or synthetic_shapes), builds on a ResNet or small_cnn, and needs the extra
    ``detection``; classification reads no instance annotations."""
    detection_data = cfg.data.name in ("coco", "voc_instances") or (cfg.data.name == "synthetic_shapes" and
                                                                    cfg.data.shapes_task == "target")
    if cfg.task == "classification":
        if detection_data:
            raise ConfigError(cfg.where("data.name"), "data.name", f"{cfg.data.name} holds instance annotations, for "
                                                                   "task: detection")
        return
    if not detection_data:
        shown = cfg.data.name + (" with shapes_task: source" if cfg.data.name == "synthetic_shapes" else "")
        raise ConfigError(cfg.where("data.name"), "data.name", "task: detection reads instance annotations: coco, "
                                                               f"voc_instances or synthetic_shapes (target), not {shown}")
    missing = [m for m in DETECTION_PACKAGES if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(cfg.where("task"), "task", f"detection needs {' and '.join(missing)}, not installed: "
                                                     "pip install 'adarand[detection]'")
    problem = detection_arch_problem(cfg.model.arch)
    if problem:
        raise ConfigError(cfg.where("model.arch"), "model.arch", problem)
