"""The whole run: build it, attach its handlers, prepare the method, train, test the selected model."""

from __future__ import annotations

import json
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
from ..core.errors import Interrupted, UserError
from ..core.files import write_json_atomic
from .attach import CHECKPOINTS, attach_handlers
from .build import Run, build_run
from .evaluator import create_evaluator
from .state import RESUMABLE_CHANGES, RunRecord, config_differences

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

    Nothing is written to ``run_dir`` before data, model and method are set up (and, on resume,
    the checkpoint accepted the config); then ``on_ready()`` is called (the command line writes
    the resolved config there)."""
    run = build_run(cfg)
    if run.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(run.device)
    record = RunRecord()
    if on_ready is not None and resume is None:
        on_ready()
    handlers = attach_handlers(run, run_dir, record)
    if resume is None:
        run.regularizer.prepare()  # on resume, what it builds comes from the checkpoint
    else:
        resume_from(resume, run, handlers["to_save"], run_dir)
        if on_ready is not None:  # only once the checkpoint accepted this config
            on_ready()
    try:
        run.trainer.run(run.loaders.train, max_epochs=cfg.train.epochs)
        method_report = run.regularizer.report()  # before close(), which releases what it reports on
    except KeyboardInterrupt:
        raise Interrupted(interrupted_message(run, run_dir)) from None
    finally:
        run.regularizer.close()
    tb = handlers["tb"]
    if run.trainer.state.epoch < cfg.train.epochs:
        if tb is not None:
            tb.close()
        if idist.get_rank() == 0:
            print(f"stopped after epoch {run.trainer.state.epoch} of {cfg.train.epochs}; continue with: "
                  f"python run.py {run_dir / 'config.yaml'} train.stop_after=null --resume {run_dir}")
        return None
    best_file = run_dir / CHECKPOINTS / Path(handlers["best"].last_checkpoint).name
    test = test_selected_model(run, best_file)
    record.tick()
    results = collect_results(run, record, test, method_report)
    if tb is not None:
        tb.writer.add_scalar("test/accuracy", results["test_accuracy"], record.best_epoch)
        tb.close()
    if idist.get_rank() == 0:
        write_json_atomic(run_dir / "results.json", results)
    return results


def interrupted_message(run: Run, run_dir: Path) -> str:
    """Where a Ctrl-C stopped the run, and how to continue it (from the last epoch's checkpoint)."""
    state = run.trainer.state
    where = f"interrupted at epoch {state.epoch}, iteration {state.iteration}"
    if not list((run_dir / CHECKPOINTS).glob("last_*.pt")):
        return f"{where}; no epoch had finished, so nothing was saved: start the run again in another --output folder"
    return (f"{where}; continue from the end of epoch {state.epoch - 1} with: "
            f"python run.py {run_dir / 'config.yaml'} --resume {run_dir}")


def resume_from(checkpoint_file: Path, run: Run, to_save: dict, run_dir: Path) -> None:
    """Restore every object of the training checkpoint; the new last checkpoint then replaces the
    one resumed from when it lies in this run's folder (Checkpoint only knows its own files)."""
    trainer, epochs = run.trainer, run.cfg.train.epochs
    checkpoint = torch.load(checkpoint_file, map_location="cpu", weights_only=True)
    if "config" not in checkpoint:
        raise UserError(f"--resume: {checkpoint_file} holds no config (a checkpoint of another version); start the run anew")
    differences = config_differences(json.loads(checkpoint["config"]["config"]), run.cfg.to_dict())
    if differences:
        raise UserError(f"--resume: the config differs from the run's in {'; '.join(differences)} (a resumed run may "
                        f"change only {', '.join(RESUMABLE_CHANGES)})")
    Checkpoint.load_objects(to_load=to_save, checkpoint=checkpoint)
    if trainer.state.epoch >= epochs:
        raise UserError(f"--resume: {checkpoint_file} is at epoch {trainer.state.epoch} of train.epochs "
                        f"{epochs}: nothing left to train (raise train.epochs to train longer)")
    log.info("resumed from %s at epoch %d", checkpoint_file, trainer.state.epoch)
    if idist.get_rank() == 0 and checkpoint_file.resolve().parent == (run_dir / CHECKPOINTS).resolve():
        trainer.add_event_handler(Events.EPOCH_COMPLETED(once=trainer.state.epoch + 1),
                                  lambda _: checkpoint_file.unlink(missing_ok=True))


def test_selected_model(run: Run, best_file: Path) -> dict:
    """The selected model's metrics on the test split. Its file is read by rank 0 and broadcast:
    on several machines the others need not see the run folder."""
    if idist.get_world_size() > 1:
        best_file = Path(idist.broadcast(str(best_file), src=0))
    Checkpoint.load_objects(to_load={"model": run.net}, checkpoint=load_tensors_on_rank0(best_file, run.device))
    t = run.cfg.train
    evaluator = create_evaluator(run.model, run.device, t.amp, t.channels_last)
    if idist.get_rank() == 0 and t.progress:
        ProgressBar(persist=False, desc="test").attach(evaluator)
    evaluator.run(run.loaders.test)
    out = {k: float(v) for k, v in evaluator.state.metrics.items()} | {"checkpoint": str(best_file), "extra_test": {}}
    for name, loader in run.loaders.extra_test.items():  # scored over the classes each set holds
        classes = run.data.extra_test[name][1]
        extra = create_evaluator(run.model, run.device, t.amp, t.channels_last, classes=classes)
        extra.run(loader)
        out["extra_test"][name] = {**{k: float(v) for k, v in extra.state.metrics.items()}, "classes": len(classes),
                                   "images": len(run.data.extra_test[name][0])}
    return out


def collect_results(run: Run, record: RunRecord, test: dict, method_report: dict) -> dict:
    """What results.json holds: the selected epoch, its validation and test figures, the run."""
    cfg = run.cfg
    return {
        "best_epoch": record.best_epoch,
        "val_accuracy": record.best_val_accuracy,
        "val_loss": record.best_val_loss,
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "seed": cfg.seed,
        "method": cfg.method.name,
        "config": cfg.source,
        "epochs": cfg.train.epochs,
        "time_per_epoch_s": sum(record.epoch_times) / max(1, len(record.epoch_times)),
        "wall_time_s": record.wall_time,
        "world_size": idist.get_world_size(),
        "device": str(run.device),
        "versions": versions(),
        "checkpoint": test["checkpoint"],
        "method_report": method_report,
        "extra_test": test["extra_test"],
        **peak_memory_mib(run.device),
    }
