"""The tasks by name (``task:`` in a config), complete on import: each is a module of its own
(``classification.py``, ``detection.py``) that fills the seam of ``task.py``."""

from __future__ import annotations

from ..core.config import Config
from .classification import CLASSIFICATION
from .detection import detection_task
from .task import Task

TASKS = {"classification": lambda cfg: CLASSIFICATION, "detection": detection_task}


def get_task(cfg: Config) -> Task:
    """The task that ``cfg.task`` names (detection's depends on ``detection.masks``)."""
    return TASKS[cfg.task](cfg)


def task_named(name: str) -> Task:
    """The task of a finished run by its name (``results.json``'s ``task``), for its metrics' labels."""
    return CLASSIFICATION if name == "classification" else detection_task(masks=True)
