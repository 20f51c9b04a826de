"""The whole run: build it, attach its handlers, prepare the method, train, test the selected model."""

from __future__ import annotations

import json
import logging
import math
import platform
import resource
from pathlib import Path

import ignite
import ignite.distributed as idist
import torch
import torchvision
from ignite.handlers import Checkpoint, ProgressBar

from ..core.config import Config
from ..core.console import progress_bars
from ..core.distributed import broadcast_tensors
from ..core.errors import Interrupted, NonFiniteEvaluation, UserError
from ..core.files import write_json_atomic, write_text_atomic
from ..tasks.evaluator import create_evaluator
from .attach import attach_handlers
from .build import Run, build_run
from .checkpoints import (
    CHECKPOINTS,
    checkpoint_epoch,
    checkpoint_step,
    earlier_checkpoint,
    last_checkpoints,
    prepare_folder,
    read_checkpoint,
    stale_files,
)
from .state import RESUMABLE_CHANGES, RunRecord, config_differences
from .test_features import TEST_FEATURES, save_test_features, test_features

log = logging.getLogger(__name__)


def versions() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "pytorch-ignite": ignite.__version__}


def peak_memory_mib(device: torch.device) -> dict:
    out = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    if device.type == "cuda":
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def run_training(local_rank: int, cfg: Config, run_dir: Path, resume: Path | None,
                 on_ready=None, on_engines=None) -> dict | None:
    """The whole run. Returns the results (also written to results.json), or None if stopped early.

    ``resume``: a last checkpoint to continue from; if its training had finished, only the test
    of the selected model is left to do. Nothing is written to ``run_dir`` before data, model and
    method are set up and the checkpoint accepted the config; then ``on_ready()`` is called (the
    command line writes the resolved config there). ``on_engines(trainer, val_evaluator)`` attaches
    the caller's handlers after the run's own."""
    run = build_run(cfg)
    if run.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(run.device)
    record = RunRecord()
    checkpoint = read_training_checkpoint(resume, cfg, run_dir) if resume is not None else None
    if on_ready is not None:
        on_ready()
    prepare_folder(run_dir)
    # the first iteration the continued run logs: TensorBoard hides what an interrupted attempt logged from there on
    purge_step = int(checkpoint["trainer"]["iteration"]) + 1 if checkpoint is not None else 0
    handlers = attach_handlers(run, run_dir, record, purge_step=purge_step)
    if on_engines is not None:
        on_engines(run.trainer, run.val_evaluator)
    if idist.get_rank() == 0 and (run_dir / "results.json").exists():
        (run_dir / "results.json").unlink()  # a finished run trained further: its results are no longer the run's
    if checkpoint is None:
        handlers["saver"].remove_after_next_save(stale_files(run_dir, keep=()))
        run.regularizer.prepare()  # on resume, what it builds comes from the checkpoint
    else:
        restore(checkpoint, resume, run, handlers, run_dir)
    if idist.get_rank() == 0:
        for name, text in run.regularizer.run_files().items():
            write_text_atomic(run_dir / name, text)
    try:
        stop = cfg.train.stop_after
        # a run that stopped at train.stop_after, continued with it still set: nothing more to train
        if run.trainer.state.epoch < cfg.train.epochs and (stop is None or run.trainer.state.epoch < stop):
            run.trainer.run(run.loaders.train, max_epochs=cfg.train.epochs)
        method_report = run.regularizer.report()  # before close(), which releases what it reports on
    except KeyboardInterrupt:
        close_log(handlers["log"], "KILLED")
        raise Interrupted(interrupted_message(run, run_dir)) from None
    except BaseException:  # a stop from outside the run (a pruned trial) or an error: the events so far stay readable
        close_log(handlers["log"], "FAILED")
        raise
    finally:
        run.regularizer.close()
    log = handlers["log"]
    if run.trainer.state.epoch < cfg.train.epochs:
        close_log(log)
        if idist.get_rank() == 0:
            print(f"stopped after epoch {run.trainer.state.epoch} of {cfg.train.epochs}; continue with: "
                  f"adarand-run {run_dir / 'config.yaml'} train.stop_after=null --resume {run_dir}")
        return None
    best_file = run_dir / CHECKPOINTS / Path(handlers["best"].last_checkpoint).name
    test = test_selected_model(run, best_file)
    scores = {name: test[name] for name in run.task.metrics}
    if not all(math.isfinite(v) for v in scores.values()):
        raise NonFiniteEvaluation("test", record.best_epoch, scores)
    record.tick()
    results = collect_results(run, record, test, method_report)
    # the selected model's g(x) on test images, for Figure 3 (where the task has a label per test image)
    if idist.get_rank() == 0 and cfg.diagnostics.test_features > 0 and run.task.test_features:
        t = cfg.train
        kept = test_features(run.net, run.data.test, cfg.diagnostics.test_features, run.device, cfg.data.eval_batch,
                             t.amp, t.channels_last)
        save_test_features(run_dir / TEST_FEATURES, kept, run.data.classes)
    if idist.get_rank() == 0:  # the results first: what the trackers do next cannot cost them
        write_json_atomic(run_dir / "results.json", results)
    if log is not None:
        log.finish(results, handlers["diagnostics"].last_features, run.data.classes)
        log.close()
    return results


def close_log(log, status: str = "FINISHED") -> None:
    if log is not None:
        log.close(status)


def interrupted_message(run: Run, run_dir: Path) -> str:
    """Where a Ctrl-C stopped the run, and how to continue it (from the last epoch's checkpoint)."""
    state = run.trainer.state
    where = f"interrupted at epoch {state.epoch}, iteration {state.iteration}"
    found = last_checkpoints(run_dir)
    if not found:
        return (f"{where}; no epoch had finished, so nothing was saved; start it again with: "
                f"adarand-run {run_dir / 'config.yaml'} --output {run_dir}")
    epoch = checkpoint_step(found[-1]) // run.ctx.epoch_length  # last_checkpoint_<iteration>.pt
    return (f"{where}; continue from the end of epoch {epoch} with: "
            f"adarand-run {run_dir / 'config.yaml'} --resume {run_dir}")


def read_training_checkpoint(checkpoint_file: Path, cfg: Config, run_dir: Path) -> dict:
    """The last checkpoint's contents, once it has shown that it is readable, that it was written
    by a run of this config (up to the keys a resumed run may change), and that something is left
    to do: training, or the test of a run whose training had finished."""
    checkpoint = read_checkpoint(checkpoint_file, ("trainer", "config"), earlier_checkpoint(checkpoint_file))
    differences = config_differences(json.loads(checkpoint["config"]["config"]), cfg.to_dict())
    if differences:
        raise UserError(f"--resume: the config differs from the run's in {'; '.join(differences)} (a resumed run may "
                        f"change only {', '.join(RESUMABLE_CHANGES)})")
    epoch = checkpoint_epoch(checkpoint)
    if epoch >= cfg.train.epochs and (run_dir / "results.json").exists():
        raise UserError(f"{run_dir}: the run has finished, nothing left to train (epoch {epoch} of train.epochs "
                        f"{cfg.train.epochs}, results.json written); raise train.epochs to train longer, or choose "
                        "another --output")
    return checkpoint


def restore(checkpoint: dict, checkpoint_file: Path, run: Run, handlers: dict, run_dir: Path) -> None:
    """Load every object of the training checkpoint. The files of the folder that the restored
    state does not name (the one resumed from, what an earlier attempt left) are removed once the
    next last checkpoint is durable (Ignite's Checkpoint only knows its own files)."""
    Checkpoint.load_objects(to_load=handlers["to_save"], checkpoint=checkpoint)
    trainer = run.trainer
    if trainer.state.epoch >= run.cfg.train.epochs:
        log.info("resumed from %s: training had finished at epoch %d; testing the selected model",
                 checkpoint_file, trainer.state.epoch)
    else:
        log.info("resumed from %s at epoch %d", checkpoint_file, trainer.state.epoch)
    keep = [Path(handlers["best"].last_checkpoint).name] if handlers["best"].last_checkpoint else []
    handlers["saver"].remove_after_next_save(stale_files(run_dir, keep))


def test_selected_model(run: Run, best_file: Path) -> dict:
    """The selected model's metrics on the test split. Its file is read by rank 0 and broadcast:
    on several machines the others need not see the run folder."""
    if idist.get_world_size() > 1:
        best_file = Path(idist.broadcast(str(best_file), src=0))
    state = read_checkpoint(best_file) if idist.get_rank() == 0 else None
    if idist.get_world_size() > 1:
        state = broadcast_tensors(state, run.device)
    Checkpoint.load_objects(to_load={"model": run.net}, checkpoint=state)
    t = run.cfg.train
    evaluator = run.task.create_evaluator(run.model, run.device, t.amp, t.channels_last)
    if idist.get_rank() == 0 and progress_bars(t.progress):
        ProgressBar(persist=False, desc="test").attach(evaluator)
    evaluator.run(run.loaders.test)
    out = {k: float(evaluator.state.metrics[k]) for k in run.task.metrics} | {"checkpoint": str(best_file),
                                                                              "extra_test": {}}
    for name, loader in run.loaders.extra_test.items():  # scored over the classes each set holds
        classes = run.data.extra_test[name][1]
        extra = create_evaluator(run.model, run.device, t.amp, t.channels_last, classes=classes)
        extra.run(loader)
        out["extra_test"][name] = {**{k: float(v) for k, v in extra.state.metrics.items()}, "classes": len(classes),
                                   "images": len(run.data.extra_test[name][0])}
    return out


def collect_results(run: Run, record: RunRecord, test: dict, method_report: dict) -> dict:
    """What results.json holds: the selected epoch, its validation and test figures (``val_<metric>``,
    ``test_<metric>`` for each of the task's metrics; ``metric`` names the one that selects), the run."""
    cfg = run.cfg
    return {
        "best_epoch": record.best_epoch,
        "task": run.task.name,
        "metric": run.task.primary,
        **{f"val_{name}": record.best_val[name] for name in run.task.metrics},
        **{f"test_{name}": test[name] for name in run.task.metrics},
        "seed": cfg.seed,
        "method": cfg.method.name,
        "classes": list(run.data.classes),
        "config": cfg.source,
        "epochs": cfg.train.epochs,
        "time_per_epoch_s": sum(record.epoch_times) / max(1, len(record.epoch_times)),
        "wall_time_s": record.wall_time,
        "world_size": idist.get_world_size(),
        "device": str(run.device),
        "threads": torch.get_num_threads(),
        "versions": versions(),
        "checkpoint": test["checkpoint"],
        "method_report": method_report,
        "extra_test": test["extra_test"],
        **peak_memory_mib(run.device),
    }
