"""One run: building it from a config, training with Ignite, checkpoints and resume, the run folder
and its logs (``engine.logs``), and loading a finished run's model (``engine.trained``).

Modules that moved out of this package keep their old import path for one release
(``adarand.engine.sweep`` is ``adarand.experiments.sweep``, with a ``DeprecationWarning``)."""

import sys

from ..core.moved import MovedModules

MOVED = {f"adarand.engine.{old}": f"adarand.{new}" for old, new in {
    "sweep": "experiments.sweep", "grid": "experiments.grid", "cluster": "experiments.cluster",
    "tune": "experiments.tune", "search_space": "experiments.search_space", "report": "experiments.report",
    "plots": "experiments.plots", "figure_style": "experiments.figure_style",
    "evaluation": "experiments.evaluation", "export": "experiments.export", "catalog": "experiments.catalog",
    "folder_lock": "core.folder_lock", "task": "tasks.task", "tasks": "tasks",
    "classification": "tasks.classification", "detection": "tasks.detection", "evaluator": "tasks.evaluator",
    "run_log": "engine.logs.run_log", "trackers": "engine.logs.trackers", "tb_writer": "engine.logs.tb_writer",
    "tb_summary": "engine.logs.tb_summary", "epoch_log": "engine.logs.epoch_log"}.items()}

if not any(isinstance(f, MovedModules) and f.moved == MOVED for f in sys.meta_path):
    sys.meta_path.append(MovedModules(MOVED, until="0.3"))
