"""Attaching a built run's handlers to its engines, in one place: the schedule, the regularizer,
the training log, validation and model selection, checkpoints, the run's log (TensorBoard and the
experiment trackers) and progress bars."""

from __future__ import annotations

import math
from pathlib import Path

import ignite.distributed as idist
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, ProgressBar, global_step_from_engine

import yaml

from ..core.console import epoch_line, print_line, progress_bars
from ..core.errors import NonFiniteEvaluation
from ..handlers.training_log import TrainingDiagnostics
from .build import Run
from .checkpoints import BEST_PREFIX, CHECKPOINTS, LAST_PREFIX, DurableSaver
from .logs.epoch_log import EPOCH_LOG, write_epoch_log
from .logs.run_log import RunLog
from .state import ConfigState, RNGState, RunRecord


def learning_rate_names(optimizer, others: dict) -> list[tuple[str, dict]]:
    """(``lr/<name>``, param group) for the network's groups (named ``backbone``, ``head``, ...) and
    for the regularizer's own optimizers (``lr/prior``, or ``lr/prior_<group>`` for several groups)."""
    out = [(f"lr/{g.get('name', f'group{i}')}", g) for i, g in enumerate(optimizer.param_groups)]
    for name, opt in others.items():
        groups = opt.param_groups
        out += [(f"lr/{name}" if len(groups) == 1 else f"lr/{name}_{g.get('name', i)}", g) for i, g in enumerate(groups)]
    return out


def attach_handlers(run: Run, run_dir: Path, record: RunRecord, purge_step: int = 0) -> dict:
    """Every handler of the run, in the order they fire within an event. ``purge_step``: the
    first iteration the run logs; TensorBoard hides what an interrupted attempt logged after it."""
    cfg, trainer, val_evaluator, loaders, data = run.cfg, run.trainer, run.val_evaluator, run.loaders, run.data
    net, optimizer, lr_scheduler, regularizer = run.net, run.optimizer, run.lr_scheduler, run.regularizer
    rank0 = idist.get_rank() == 0
    log = RunLog(cfg, run_dir, purge_step=purge_step) if rank0 else None
    if log is not None and log.tb is not None:
        log.tb.add_text("config", "```yaml\n" + yaml.safe_dump(cfg.to_dict(), sort_keys=False) + "```", 0)

    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: loaders.train.sampler.set_epoch(e.state.epoch))
    trainer.add_event_handler(Events.ITERATION_STARTED, lr_scheduler)
    regularizer.attach(trainer)
    diagnostics = TrainingDiagnostics(log, data.num_classes, cfg.train.log_every,
                                      cfg.diagnostics.max_samples, cfg.diagnostics.chunk_size,
                                      len(loaders.train), enabled=cfg.diagnostics.enabled)
    diagnostics.attach(trainer)

    trainer.add_event_handler(Events.STARTED, lambda _: record.tick(count=False))

    @trainer.on(Events.EPOCH_COMPLETED)
    def record_time_and_validate(engine: Engine) -> None:
        record.epoch_times.append(float(engine.state.times[Events.EPOCH_COMPLETED.name]))
        record.tick()
        val_evaluator.run(loaders.val)

    task = run.task

    def validation_metrics(evaluator: Engine) -> dict[str, float]:
        return {name: float(evaluator.state.metrics[name]) for name in task.metrics}

    @val_evaluator.on(Events.COMPLETED)
    def select(evaluator: Engine) -> None:
        metrics = validation_metrics(evaluator)
        if not all(math.isfinite(v) for v in metrics.values()):  # a model that overflows is no result to select
            raise NonFiniteEvaluation("validation", trainer.state.epoch, metrics)
        record.observe(trainer.state.epoch, metrics, task.selection_key(metrics))
        record.add_epoch(trainer.state.epoch, diagnostics.last_epoch, metrics)
        if rank0:
            write_epoch_log(run_dir / EPOCH_LOG, record.history)

    # Model selection: the task's (classification: the best validation accuracy, ties broken by the
    # lower validation loss; detection: bbox AP, then mask AP; RunRecord.observe). The score is the
    # count of such improvements, so the Checkpoint saves exactly when the record finds a new best.
    saver = DurableSaver(run_dir / CHECKPOINTS)  # writes on rank 0 only; a file goes once its successor is durable
    best = Checkpoint({"model": net}, saver, filename_prefix=BEST_PREFIX, n_saved=1,
                      score_function=lambda _: record.improvements,
                      filename_pattern="{filename_prefix}_{name}_{global_step}.{ext}",
                      global_step_transform=global_step_from_engine(trainer))
    val_evaluator.add_event_handler(Events.COMPLETED, best)

    rng = RNGState({"regularizer": run.ctx.generator})
    to_save = {"config": ConfigState(cfg.to_dict()), "trainer": trainer, "model": net, "optimizer": optimizer,
               "lr_scheduler": lr_scheduler,
               "regularizer": regularizer, "rng": rng, "record": record, "best_checkpoint": best}
    if trainer.state.grad_scaler.is_enabled():
        to_save["grad_scaler"] = trainer.state.grad_scaler
    last = Checkpoint(to_save, saver, filename_prefix=LAST_PREFIX, n_saved=1)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, last)

    if cfg.train.stop_after is not None:
        @trainer.on(Events.EPOCH_COMPLETED)
        def stop(engine: Engine) -> None:
            if engine.state.epoch >= cfg.train.stop_after:
                engine.terminate()

    if log is not None:
        named = learning_rate_names(optimizer, regularizer.optimizers())

        @trainer.on(Events.ITERATION_STARTED(every=cfg.train.log_every))
        def log_learning_rates(engine: Engine) -> None:
            log.log({tag: group["lr"] for tag, group in named}, engine.state.iteration)

        @val_evaluator.on(Events.COMPLETED)
        def log_validation(evaluator: Engine) -> None:
            log.log({f"val/{name}": value for name, value in validation_metrics(evaluator).items()},
                    trainer.state.epoch)
    if rank0 and cfg.train.epoch_lines:
        @val_evaluator.on(Events.COMPLETED)
        def print_epoch_line(evaluator: Engine) -> None:
            print_line(epoch_line(trainer.state.epoch, cfg.train.epochs, diagnostics.last_epoch,
                                  task.summary(validation_metrics(evaluator)), task.best(record.best_val), record.best_epoch,
                                  float(trainer.state.times.get(Events.EPOCH_COMPLETED.name) or 0.0),
                                  float(evaluator.state.times[Events.COMPLETED.name] or 0.0)))
    if rank0 and progress_bars(cfg.train.progress):
        ProgressBar(persist=False, desc="train").attach(trainer, metric_names="all")
        ProgressBar(persist=False, desc="val").attach(val_evaluator)
    return {"to_save": to_save, "best": best, "saver": saver, "log": log, "diagnostics": diagnostics}
