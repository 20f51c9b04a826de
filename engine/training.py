"""The whole run: build it, attach its handlers, prepare the method, train, test the selected model."""

from __future__ import annotations

import logging
import platform
import resource
from pathlib import Path

import ignite
import ignite.distributed as idist
import torch
import torchvision
from ignite.engine import Events
from ignite.handlers import Checkpoint, ProgressBar

from ..core.config import Config
from ..core.distributed import load_tensors_on_rank0
from ..core.errors import UserError
from ..core.files import write_json_atomic
from .attach import CHECKPOINTS, attach_handlers
from .build import build_run
from .evaluator import create_evaluator
from .state import RunRecord

log = logging.getLogger(__name__)


def find_last_checkpoint(path: Path) -> Path:
    """``path`` itself when it is a file, else the newest ``last_*.pt`` under ``path/checkpoints``."""
    if path.is_file():
        return path
    found = sorted((path / CHECKPOINTS).glob("last_*.pt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise UserError(f"--resume: no checkpoint at {path} (expected a file or a run folder with "
                        f"{CHECKPOINTS}/last_checkpoint_*.pt)")
    return found[-1]


def versions() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "pytorch-ignite": ignite.__version__}


def peak_memory_mib(device: torch.device) -> dict:
    out = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    if device.type == "cuda":
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def run_training(local_rank: int, cfg: Config, run_dir: Path, resume: Path | None,
                 on_ready=None) -> dict | None:
    """The whole run. Returns the results (also written to results.json), or None if stopped early.

    Nothing is written to ``run_dir`` before data, model and method are set up; then
    ``on_ready()`` is called (the command line writes the resolved config there)."""
    rank = idist.get_rank()
    run = build_run(cfg)
    if run.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(run.device)
    loaders, net, model, device = run.loaders, run.net, run.model, run.device
    regularizer, trainer = run.regularizer, run.trainer
    record = RunRecord()
    if on_ready is not None:
        on_ready()
    handlers = attach_handlers(run, run_dir, record)

    if resume is not None:
        checkpoint = torch.load(resume, map_location="cpu", weights_only=True)
        Checkpoint.load_objects(to_load=handlers["to_save"], checkpoint=checkpoint)
        if trainer.state.epoch >= cfg.train.epochs:
            raise UserError(f"--resume: {resume} is at epoch {trainer.state.epoch} of train.epochs "
                            f"{cfg.train.epochs}: nothing left to train (raise train.epochs to train longer)")
        log.info("resumed from %s at epoch %d", resume, trainer.state.epoch)
        if rank == 0 and resume.resolve().parent == (run_dir / CHECKPOINTS).resolve():
            # the new last checkpoint replaces the one resumed from (Checkpoint only knows its own files)
            trainer.add_event_handler(Events.EPOCH_COMPLETED(once=trainer.state.epoch + 1),
                                      lambda _: resume.unlink(missing_ok=True))

    if resume is None:
        regularizer.prepare()  # on resume, what it builds comes from the checkpoint
    try:
        trainer.run(loaders.train, max_epochs=cfg.train.epochs)
        method_report = regularizer.report()  # before close(), which releases what it reports on
    finally:
        regularizer.close()
    tb = handlers["tb"]
    if trainer.state.epoch < cfg.train.epochs:
        if tb is not None:
            tb.close()
        if rank == 0:
            print(f"stopped after epoch {trainer.state.epoch} of {cfg.train.epochs}; continue with: "
                  f"python run.py {run_dir / 'config.yaml'} train.stop_after=null --resume {run_dir}")
        return None

    # the best-validation model on the test split
    best_file = run_dir / CHECKPOINTS / Path(handlers["best"].last_checkpoint).name
    best_file = Path(idist.broadcast(str(best_file), src=0)) if idist.get_world_size() > 1 else best_file
    # read by rank 0 and broadcast: on several machines the others need not see the run folder
    Checkpoint.load_objects(to_load={"model": net}, checkpoint=load_tensors_on_rank0(best_file, device))
    test_evaluator = create_evaluator(model, device, cfg.train.amp, cfg.train.channels_last)
    if rank == 0 and cfg.train.progress:
        ProgressBar(persist=False, desc="test").attach(test_evaluator)
    test_evaluator.run(loaders.test)
    test = test_evaluator.state.metrics
    record.tick()
    results = {
        "best_epoch": record.best_epoch,
        "val_accuracy": record.best_val_accuracy,
        "val_loss": record.best_val_loss,
        "test_accuracy": float(test["accuracy"]),
        "test_loss": float(test["loss"]),
        "seed": cfg.seed,
        "method": cfg.method.name,
        "config": cfg.source,
        "epochs": cfg.train.epochs,
        "time_per_epoch_s": sum(record.epoch_times) / max(1, len(record.epoch_times)),
        "wall_time_s": record.wall_time,
        "world_size": idist.get_world_size(),
        "device": str(device),
        "versions": versions(),
        "checkpoint": str(best_file),
        "method_report": method_report,
        **peak_memory_mib(device),
    }
    if tb is not None:
        tb.writer.add_scalar("test/accuracy", results["test_accuracy"], record.best_epoch)
        tb.close()
    if rank == 0:
        write_json_atomic(run_dir / "results.json", results)
    return results
