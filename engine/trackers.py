"""Experiment trackers besides TensorBoard: MLflow and Weights & Biases, through Ignite's own
``MLflowLogger`` and ``WandBLogger`` (``logging.trackers: [tensorboard, mlflow, wandb]``).

Each receives what TensorBoard receives: every scalar under the same tag, at the same step of its
axis (iteration or epoch, ``tb_writer.AXES``), the run's hyperparameters (the HParams table's
settings) and, at the end, the selected model's accuracies; MLflow keeps ``config.yaml`` and the
results as artifacts, W&B the results' numbers in the run's summary. They run on rank 0 only.

* **MLflow**: the run is named after its folder, in the experiment ``logging.experiment``; the
  store is ``logging.mlflow_uri``, else ``$MLFLOW_TRACKING_URI``, else the SQLite file
  ``<output_root>/mlflow.db`` (offline; ``mlflow ui --backend-store-uri sqlite:///…`` shows it).
* **W&B**: ``wandb_mode: offline`` writes the run under the run folder's ``wandb/`` (``wandb sync``
  uploads it later). W&B has one increasing step per run, so every point carries its axis as a
  value (``iteration`` or ``epoch``) and each group of tags is plotted against it
  (``define_metric``).

A continued run logs into the same MLflow run and W&B run (their ids are kept in the run folder's
``trackers.json``). Unlike TensorBoard, which hides what an interrupted attempt logged after the
checkpoint it resumes from, both keep those points: the steps between that checkpoint and the
interruption appear twice.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..core.config import Config
from ..core.files import write_json_atomic
from .tb_writer import AXES

RUN_IDS = "trackers.json"


def axis_of(tag: str) -> str:
    """``iteration`` or ``epoch``: the x axis of a tag's group (``tb_writer.AXES``)."""
    return AXES.get(tag.split("/", 1)[0], "iteration")


def run_name(run_dir: Path) -> str:
    """The tracker's name of a run: its folder, with the experiment folder above a sweep's ``seed<k>``."""
    return f"{run_dir.parent.name}/{run_dir.name}" if run_dir.name.startswith("seed") else run_dir.name


def mlflow_uri(cfg: Config) -> str:
    if cfg.logging.mlflow_uri:
        return cfg.logging.mlflow_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    root = Path(cfg.output_root).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


class MLflowTracker:
    def __init__(self, cfg: Config, run_dir: Path, params: dict, known: dict | None):
        import mlflow
        from ignite.handlers.mlflow_logger import MLflowLogger

        uri = mlflow_uri(cfg)
        mlflow.set_tracking_uri(uri)
        experiment = mlflow.get_experiment_by_name(cfg.logging.experiment)
        if experiment is None:  # artifacts beside a local store (MLflow's default is the working directory)
            local = uri.startswith("sqlite:///")
            location = Path(uri.removeprefix("sqlite:///")).parent / "mlflow-artifacts" if local else None
            mlflow.create_experiment(cfg.logging.experiment, artifact_location=location.as_uri() if local else None)
        mlflow.set_experiment(cfg.logging.experiment)
        continued = known and known.get("uri") == uri and known.get("experiment") == cfg.logging.experiment
        if continued:
            mlflow.start_run(run_id=known["run_id"])
        else:
            mlflow.start_run(run_name=run_name(run_dir), tags={"run_dir": str(run_dir)})
        self.logger = MLflowLogger()  # Ignite's logger takes the active run
        if not continued:
            self.logger.log_params(params)
        self.ids = {"uri": uri, "experiment": cfg.logging.experiment, "run_id": self.logger.active_run.info.run_id}

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.logger.log_metrics(scalars, step=step)

    def finish(self, config_file: Path, results: dict) -> None:
        self.logger.log_artifact(str(config_file))
        self.logger.log_dict(results, "results.json")

    def close(self, status: str) -> None:
        self.logger.end_run(status=status)


class WandBTracker:
    def __init__(self, cfg: Config, run_dir: Path, params: dict, known: dict | None):
        from ignite.handlers.wandb_logger import WandBLogger

        same = known and known.get("project") == cfg.logging.experiment
        self.logger = WandBLogger(project=cfg.logging.experiment, name=run_name(run_dir), dir=str(run_dir),
                                  mode=cfg.logging.wandb_mode, config=params,
                                  id=known["id"] if same else None, resume="allow" if same else None)
        for axis in ("iteration", "epoch"):
            self.logger.define_metric(axis)
        for group, axis in AXES.items():
            self.logger.define_metric(f"{group}/*", step_metric=axis)
        self.ids = {"project": cfg.logging.experiment, "id": self.logger.run.id}

    def log(self, scalars: dict[str, float], step: int) -> None:
        by_axis: dict[str, dict[str, float]] = {}
        for tag, value in scalars.items():
            by_axis.setdefault(axis_of(tag), {})[tag] = value
        for axis, values in by_axis.items():
            self.logger.log({**values, axis: step})

    def finish(self, config_file: Path, results: dict) -> None:
        self.logger.run.summary.update({k: v for k, v in results.items() if isinstance(v, (int, float, str))})

    def close(self, status: str) -> None:
        self.logger.finish(exit_code=0 if status == "FINISHED" else 1)


TRACKERS = {"mlflow": MLflowTracker, "wandb": WandBTracker}


def open_trackers(cfg: Config, run_dir: Path, params: dict) -> list:
    """The trackers ``logging.trackers`` names besides TensorBoard, each with its run started (or
    continued: the ids in ``RUN/trackers.json``), the ids written back."""
    ids_file = run_dir / RUN_IDS
    known = json.loads(ids_file.read_text()) if ids_file.exists() else {}
    opened = {}
    try:
        for name in cfg.logging.trackers:
            if name in TRACKERS:
                opened[name] = TRACKERS[name](cfg, run_dir, params, known.get(name))
    except BaseException:
        for tracker in opened.values():
            tracker.close("FAILED")
        raise
    if opened:
        write_json_atomic(ids_file, {**known, **{name: t.ids for name, t in opened.items()}})
    return list(opened.values())
