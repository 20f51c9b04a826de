"""Starting a run: the config, the run folder, the processes. ``train()`` is the Python API; the
command line (``run.py``) is a thin layer over it that prints errors as one line.

    import adarand
    results = adarand.train("demo", overrides={"train.epochs": 5}, output="runs/demo5")
    results["test_accuracy"]
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import ignite.distributed as idist
import torch
from torch.multiprocessing import ProcessExitedException

import yaml

from ..core.config import Config, save_config
from ..core.errors import Interrupted, NonFiniteLoss, ProcessDied, UserError, error_line, os_error_message
from ..core.folder_lock import FolderLock
from .checkpoints import CHECKPOINTS, copy_best_models, find_last_checkpoint, last_checkpoints
from .config import load_config
from .logs.trackers import check_tracker_stores
from .run_folder import FINISHED, folder_state
from .training import run_training


def override_items(overrides: Mapping | Sequence[str] | None) -> list[str]:
    """``key.path=value`` strings from a list of them, or from a mapping {key.path: value}."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                for k, v in overrides.items()]
    if isinstance(overrides, str):
        return [overrides]
    return list(overrides)


def quiet_ignite_logs() -> None:
    """Ignite's launcher logs two INFO lines per run, and its Engine an ERROR line before re-raising
    any exception; the run's own one-line errors say it all, so both stay quiet."""
    logging.getLogger("ignite.distributed.launcher.Parallel").setLevel(logging.WARNING)
    logging.getLogger("ignite.engine.engine.Engine").setLevel(logging.CRITICAL)
    # auto_model's "Apply torch DistributedDataParallel" line: its logger is set to INFO anew at each
    # call (ignite.utils.setup_logger), so a filter, which stays, drops its INFO records
    auto = logging.getLogger("ignite.distributed.auto.auto_model")
    if not any(isinstance(f, BelowWarning) for f in auto.filters):
        auto.addFilter(BelowWarning())


class BelowWarning(logging.Filter):
    """Drops records below WARNING."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


def choose_run(cfg: Config, output: str | Path | None, resume: str | Path | None) -> tuple[Path, Path | None]:
    """The run folder, and the last checkpoint to continue from (None: a new run).

    ``resume`` continues a run (its folder or checkpoint file). ``output`` continues the run in
    that folder if it has a last checkpoint, and starts one otherwise, so that the same command
    run again after a kill or a preemption carries on. Without either, a new stamped folder."""
    if resume:
        checkpoint = find_last_checkpoint(Path(resume))
        if output:
            return Path(output), checkpoint
        parent = checkpoint.parent
        return (parent.parent if parent.name == CHECKPOINTS else parent), checkpoint
    if output:
        run_dir = Path(output)
        state = folder_state(run_dir, cfg)  # refuses a folder of another experiment
        found = last_checkpoints(run_dir)
        if not found and state == FINISHED:
            raise UserError(f"--output: {run_dir} holds a finished run (results.json) without its "
                            "checkpoints; choose another folder")
        if state == FINISHED:
            trained = json.loads((run_dir / "results.json").read_text()).get("epochs", 0)
            if trained >= cfg.train.epochs:
                raise UserError(f"{run_dir}: the run has finished, nothing left to train (epoch {trained} of "
                                f"train.epochs {cfg.train.epochs}, results.json written); raise train.epochs to "
                                "train longer, or choose another --output")
        if found:
            print(f"continuing the run in {run_dir} from {found[-1].name}", file=sys.stderr)
        return run_dir, (found[-1] if found else None)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(cfg.output_root).expanduser() / f"{cfg.name}-seed{cfg.seed}-{stamp}", None


def launch_settings(nproc: int, gpus: int | None = None) -> dict:
    """idist.Parallel's arguments: torchrun's environment, ``nproc`` processes, or one.
    ``gpus``: this machine's GPU count (default: what torch sees); with GPUs, one process each."""
    gpus = torch.cuda.device_count() if gpus is None else gpus
    backend = "nccl" if gpus > 0 else "gloo"
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by torchrun: Parallel reads the environment
        return {"backend": backend}
    if nproc < 1:
        raise UserError(f"--nproc: expected a positive number of processes, got {nproc}")
    if gpus > 0 and nproc > gpus:
        raise UserError(f"--nproc: {nproc} processes but this machine has {gpus} GPU(s); one process per GPU")
    if nproc > 1:
        return {"backend": backend, "nproc_per_node": nproc, "master_addr": "127.0.0.1", "master_port": rendezvous_port()}
    return {"backend": None}


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def rendezvous_port() -> int:
    """The port the processes of a run meet on: ``$MASTER_PORT`` when set (a one-line error when it is
    taken), else a free one chosen by the system, as torchrun's ``--standalone`` does; so two runs
    of several processes on one machine do not collide."""
    given = os.environ.get("MASTER_PORT")
    if given:
        if not given.isdigit() or not port_is_free(int(given)):
            raise UserError(f"MASTER_PORT={given}: that port is taken (another run of several processes on this "
                            "machine?) or no port; unset MASTER_PORT to have a free one chosen, or give another")
        return int(given)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# how the Python API's errors name what the caller passed (the command line's name it as typed)
PYTHON_WORDING = (("command line: key", "overrides: key"), ("--output DIR", "output="), ("--output", "output="),
                  ("--resume", "resume="), ("--nproc", "nproc="), ("--seed", "seed="))


def in_python_words(e: UserError) -> UserError:
    """The error, its message naming the arguments of ``train`` instead of the command line's."""
    text = str(e)
    for cli, python in PYTHON_WORDING:
        text = text.replace(cli, python)
    e.args = (text,)
    return e


def train(config: str | Path | Sequence[str | Path], overrides: Mapping | Sequence[str] | None = None, *,
          output: str | Path | None = None, seed: int | None = None, resume: str | Path | None = None,
          nproc: int = 1, quiet: bool = False, on_engines=None, wording: str = "python") -> dict | None:
    """Fine-tune as ``adarand-run`` does, and return ``results.json``'s contents. ``wording``: how errors name the
    arguments, ``"python"`` (``overrides: key ...``, ``output=``) or ``"command line"`` (as typed)."""
    try:
        return run(config, overrides, output=output, seed=seed, resume=resume, nproc=nproc, quiet=quiet,
                   on_engines=on_engines)
    except UserError as e:
        if wording == "python":
            raise in_python_words(e) from None
        raise


def run(config: str | Path | Sequence[str | Path], overrides: Mapping | Sequence[str] | None = None, *,
        output: str | Path | None = None, seed: int | None = None, resume: str | Path | None = None,
        nproc: int = 1, quiet: bool = False, on_engines=None) -> dict | None:
    """Fine-tune as ``adarand-run`` does, and return the results (what ``results.json`` holds), or
    None when the run stopped before its last epoch (``train.stop_after``).

    ``config``: a config file, a packaged config's name (``"demo"``, ``"cars_adarand"``), or a list
    of them merged in order. ``overrides``: ``["train.epochs=5"]`` or ``{"train.epochs": 5}``.
    ``output``: the run folder (a folder holding a checkpoint continues its run); ``resume``: a
    run folder or checkpoint to continue. ``quiet``: no progress bars and no per-epoch lines.
    ``on_engines(trainer, val_evaluator)``: called once the run's handlers are attached, to attach
    more (``adarand-tune`` attaches Optuna's pruning handler); one process only.

    The run folder is the command line's: ``config.yaml``, checkpoints, TensorBoard events and
    ``results.json``. Bad input raises the command line's errors (``adarand.core.errors.UserError``,
    with its one-line message); a NaN loss raises ``adarand.core.errors.NonFiniteLoss``."""
    quiet_ignite_logs()
    configs = [config] if isinstance(config, (str, Path)) else list(config)
    items = override_items(overrides)
    if quiet:
        items += ["train.progress=false", "train.epoch_lines=false"]
    cfg = load_config(configs, items, seed=seed)
    if on_engines is not None and nproc > 1:
        raise UserError("on_engines: handlers of the caller attach to a run of one process only (nproc=1)")
    # A folder that already exists is locked before anything of it is read (its checkpoints rotate
    # while a run writes them); a new one when the run first writes to it (run_worker).
    lock = FolderLock(Path(output)) if output and int(os.environ.get("RANK", "0")) == 0 else None
    if lock is not None and lock.folder.is_dir():
        lock.acquire()
    try:
        run_dir, checkpoint = choose_run(cfg, output, resume)
        check_tracker_stores(cfg, run_dir)  # before anything is written: a store that fails is one line
        settings = launch_settings(nproc, gpus=0 if cfg.train.device == "cpu" else None)  # CPU processes: gloo
        with idist.Parallel(**settings) as parallel:
            parallel.run(run_worker, cfg, run_dir, checkpoint, nproc > 1, on_engines,
                         lock is None or not lock.held)
    except ProcessExitedException as e:
        if not e.signal_name:  # it exited on an error it printed
            raise
        raise ProcessDied(process_died_message(e, configs, items, run_dir, nproc),
                          getattr(signal, e.signal_name, signal.SIGKILL).value) from None
    finally:
        if lock is not None:
            lock.release()
    results = run_dir / "results.json"  # written at the run's end only (a continued run removes the old one)
    return json.loads(results.read_text()) | {"run_dir": str(run_dir)} if results.exists() else None


def process_died_message(e: ProcessExitedException, configs: list, items: list[str], run_dir: Path, nproc: int) -> str:
    """Which rank died and how, and the command that continues the run (from its last checkpoint, or
    from the start in the same folder before the first one)."""
    found = last_checkpoints(run_dir)
    how = (f"adarand-run {run_dir / 'config.yaml'} --resume {run_dir} --nproc {nproc}" if found else
           f"adarand-run {' '.join(map(str, configs))} {' '.join(items)} --output {run_dir} --nproc {nproc}".replace("  ", " "))
    return (f"process {e.error_index} of {nproc} (rank {e.error_index}, pid {e.error_pid}) was killed by {e.signal_name}"
            f"{' (as the out-of-memory killer does)' if e.signal_name == 'SIGKILL' else ''}; the other processes were "
            f"stopped; continue the run with: {how}")


def run_worker(local_rank: int, cfg: Config, run_dir: Path, resume: Path | None, spawned: bool,
               on_engines=None, claim: bool = True) -> None:
    """One process of the run. A spawned process cannot hand its exception to the caller: it prints
    the one line (rank 0 for errors of the run, every process for an OS error) and exits with the
    error's code."""
    quiet_ignite_logs()  # a spawned process starts with the logging configuration of a new interpreter
    if idist.get_world_size() > 1:  # one folder for all processes (torchrun: each chose its own)
        run_dir = Path(idist.broadcast(str(run_dir), src=0))
    if cfg.train.threads is not None:
        torch.set_num_threads(cfg.train.threads)
    lock = FolderLock(run_dir)

    def claim_folder() -> None:  # before the run writes anything there: one run at a time in a folder
        if idist.get_rank() == 0:
            if claim:  # not yet locked by the launching process
                lock.acquire()
            if resume is not None:  # continued into another folder: the selected models come along
                copy_best_models(resume, run_dir)
        write_config(cfg, run_dir)

    try:
        run_training(local_rank, cfg, run_dir, resume, on_ready=claim_folder, on_engines=on_engines)
    except OSError as e:
        if not spawned or os_error_message(e) is None:
            raise
        print(f"error: {os_error_message(e)}", file=sys.stderr)
        raise SystemExit(2) from None
    except (UserError, NonFiniteLoss, Interrupted) as e:
        if not spawned:
            raise
        if idist.get_rank() == 0:
            print(error_line(e), file=sys.stderr)
        raise SystemExit(2 if isinstance(e, UserError) else e.exit_code) from None
    finally:
        lock.release()
        # The engines and their handlers form reference cycles that keep the DDP model, and through it
        # the process group, alive after ignite destroys the group; gloo's threads then die only at
        # interpreter exit, where they can abort the process ("terminate called without an active
        # exception", seen in CI). Collecting here frees them while the interpreter is whole.
        gc.collect()


def write_config(cfg: Config, run_dir: Path) -> None:
    if idist.get_rank() == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
