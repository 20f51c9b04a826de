"""The tasks by name (``task:`` in a config), complete on import: each is a module of its own
(``classification.py``, ``detection.py``) that fills the seam of ``task.py``."""

from __future__ import annotations

from ..core.config import Config
from .classification import CLASSIFICATION
from .detection import detection_task
from .task import Task


def get_task(cfg: Config) -> Task:
    """The task that ``cfg.task`` names (detection's depends on ``detection.masks``)."""
    return detection_task(cfg) if cfg.task == "detection" else CLASSIFICATION
