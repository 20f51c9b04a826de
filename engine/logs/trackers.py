"""Experiment trackers besides TensorBoard: MLflow and Weights & Biases, through Ignite's own
``MLflowLogger`` and ``WandBLogger`` (``logging.trackers: [tensorboard, mlflow, wandb]``).

Each receives what TensorBoard receives: every scalar under the same tag, at the same step of its
axis (iteration or epoch, ``tb_writer.AXES``), the run's hyperparameters (the HParams table's
settings) and, at the end, the selected model's accuracies; MLflow keeps ``config.yaml`` and the
results as artifacts, W&B the results' numbers in the run's summary. They run on rank 0 only.

* **MLflow**: the run is named after its folder, in the experiment ``logging.experiment``, tagged
  with its method, dataset, arch, cell and seed; the store is ``logging.mlflow_uri``, else
  ``$MLFLOW_TRACKING_URI``, else the SQLite file ``mlflow.db`` in the sweep's root (for a run of a
  sweep, ``ROOT/<cell>/seed<k>``) or in ``output_root`` (offline; ``mlflow ui --backend-store-uri
  sqlite:///…`` shows it). The runs of one sweep are nested under one parent run named after its
  root.
* **W&B**: ``wandb_mode: offline`` writes the run under the run folder's ``wandb/`` (``wandb sync``
  uploads it later). A sweep's runs are grouped by cell (``group``), and each run's ``job_type``
  is its method; W&B's own console output is silenced, one line says where the run went. W&B has
  one increasing step per run, so every point carries its axis as a value (``iteration`` or
  ``epoch``) and each group of tags is plotted against it (``define_metric``).

A continued run logs into the same MLflow run and W&B run (their ids are kept in the run folder's
``trackers.json``). Unlike TensorBoard, which hides what an interrupted attempt logged after the
checkpoint it resumes from, both keep those points: the steps between that checkpoint and the
interruption appear twice.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path

from ...core.config import Config
from ...core.errors import UserError
from ...core.files import write_json_atomic
from .tb_writer import AXES

RUN_IDS = "trackers.json"


def axis_of(tag: str) -> str:
    """``iteration`` or ``epoch``: the x axis of a tag's group (``tb_writer.AXES``)."""
    return AXES.get(tag.split("/", 1)[0], "iteration")


def run_name(run_dir: Path) -> str:
    """The tracker's name of a run: its folder, with the experiment folder above a sweep's ``seed<k>``."""
    return f"{run_dir.parent.name}/{run_dir.name}" if run_dir.name.startswith("seed") else run_dir.name


def sweep_of(run_dir: Path) -> tuple[Path, str] | None:
    """(the sweep's root, the cell) of a run in a sweep's layout ``ROOT/<cell>/seed<k>``, else None."""
    if run_dir.name.startswith("seed") and run_dir.name[4:].isdigit():
        return run_dir.parent.parent, run_dir.parent.name
    return None


def mlflow_uri(cfg: Config, run_dir: Path | None = None, create: bool = True) -> str:
    if cfg.logging.mlflow_uri:
        return cfg.logging.mlflow_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    sweep = sweep_of(run_dir) if run_dir is not None else None
    root = sweep[0].resolve() if sweep else Path(cfg.output_root).expanduser().resolve()
    if create:
        root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def writable_folder(folder: Path) -> bool:
    """Whether ``folder`` is, or could be made, a folder this process writes in."""
    while not folder.exists():
        if folder.parent == folder:
            return False
        folder = folder.parent
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


def check_tracker_stores(cfg: Config, run_dir: Path, timeout_s: float = 3.0) -> None:
    """Before the run folder is made: the MLflow store can be reached and written (a server that
    answers within ``timeout_s``, a SQLite file in a folder that can be written). One line naming
    ``logging.mlflow_uri`` otherwise (UserError); MLflow's own retries would take minutes."""
    if "mlflow" not in cfg.logging.trackers:
        return
    uri = mlflow_uri(cfg, run_dir, create=False)
    scheme, _, rest = uri.partition("://") if "://" in uri else ("file", "", uri)
    fix = "give sqlite:///PATH/mlflow.db (a local file) or the http(s):// address of a running MLflow server"
    if scheme in ("http", "https"):
        host_port = rest.split("/", 1)[0].rsplit("@", 1)[-1]
        host, _, port = host_port.rpartition(":") if ":" in host_port else (host_port, "", "")
        try:
            socket.create_connection((host, int(port) if port else (443 if scheme == "https" else 80)),
                                     timeout=timeout_s).close()
        except (OSError, ValueError) as e:
            raise UserError(f"logging.mlflow_uri: {uri}: no MLflow server answers there within {timeout_s:g} s "
                            f"({e.__class__.__name__}: {e}); start it, or {fix}") from None
    elif scheme == "sqlite":
        folder = Path(rest.removeprefix("/")).parent if rest.startswith("/") else Path(rest).parent
        if not writable_folder(folder):
            raise UserError(f"logging.mlflow_uri: {uri}: its folder {folder} cannot be written; {fix}")
    elif scheme == "file":
        raise UserError(f"logging.mlflow_uri: {uri}: a file store, which MLflow 3 no longer writes; {fix}")


def run_tags(cfg: Config, run_dir: Path) -> dict[str, str]:
    sweep = sweep_of(run_dir)
    return {"run_dir": str(run_dir), "method": cfg.method.name, "dataset": cfg.data.name, "arch": cfg.model.arch,
            "seed": str(cfg.seed), "cell": sweep[1] if sweep else run_dir.name}


def sweep_parent(mlflow, experiment_id: str, root: Path) -> str:
    """The id of the parent run of the sweep at ``root`` (made by its first run, under a lock in the
    root, so that runs started together find one parent)."""
    with open(root / ".mlflow-parent.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        client = mlflow.tracking.MlflowClient()
        found = client.search_runs([experiment_id], filter_string=f"tags.`adarand.sweep` = '{root}'", max_results=1)
        if found:
            return found[0].info.run_id
        parent = client.create_run(experiment_id, run_name=f"sweep {root.name}", tags={"adarand.sweep": str(root)})
        client.set_terminated(parent.info.run_id, "FINISHED")  # a folder for its runs: nothing runs in it
        return parent.info.run_id


class MLflowTracker:
    def __init__(self, cfg: Config, run_dir: Path, params: dict, known: dict | None):
        import mlflow
        from ignite.handlers.mlflow_logger import MLflowLogger

        uri = mlflow_uri(cfg, run_dir)
        mlflow.set_tracking_uri(uri)
        experiment = mlflow.get_experiment_by_name(cfg.logging.experiment)
        if experiment is None:  # artifacts beside a local store (MLflow's default is the working directory)
            local = uri.startswith("sqlite:///")
            location = Path(uri.removeprefix("sqlite:///")).parent / "mlflow-artifacts" if local else None
            mlflow.create_experiment(cfg.logging.experiment, artifact_location=location.as_uri() if local else None)
        experiment = mlflow.set_experiment(cfg.logging.experiment)
        continued = known and known.get("uri") == uri and known.get("experiment") == cfg.logging.experiment
        if continued:
            mlflow.start_run(run_id=known["run_id"])
        else:
            tags = run_tags(cfg, run_dir)
            sweep = sweep_of(run_dir)
            if sweep is not None:  # nested under its sweep's parent run
                tags["mlflow.parentRunId"] = sweep_parent(mlflow, experiment.experiment_id, sweep[0].resolve())
            mlflow.start_run(run_name=run_name(run_dir), tags=tags)
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
        import wandb
        from ignite.handlers.wandb_logger import WandBLogger

        same = known and known.get("project") == cfg.logging.experiment
        sweep = sweep_of(run_dir)
        self.logger = WandBLogger(project=cfg.logging.experiment, name=run_name(run_dir), dir=str(run_dir),
                                  mode=cfg.logging.wandb_mode, config=params, group=sweep[1] if sweep else None,
                                  job_type=cfg.method.name, id=known["id"] if same else None,
                                  resume="allow" if same else None, settings=wandb.Settings(silent=True))
        for axis in ("iteration", "epoch"):
            self.logger.define_metric(axis)
        for group, axis in AXES.items():
            self.logger.define_metric(f"{group}/*", step_metric=axis)
        self.ids = {"project": cfg.logging.experiment, "id": self.logger.run.id}
        self.line = None if not cfg.train.epoch_lines else (
            f"wandb: run {run_name(run_dir)} ({cfg.logging.wandb_mode}) in {run_dir / 'wandb'}"
            + (f"; upload it with: wandb sync {run_dir / 'wandb'}/offline-run-*" if cfg.logging.wandb_mode == "offline" else ""))

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
        if self.line is not None:  # W&B's own summary is silenced: this one line instead
            print(self.line, flush=True)


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
