"""Building a run from a config: data, model, regularizer, engines, and the handlers around them.

``run_training`` is the whole run; the ``setup_*`` / ``create_*`` functions are its parts, and
``attach_handlers`` is the one place where everything is attached to the engines.
"""

from __future__ import annotations

import json
import logging
import platform
import resource
from dataclasses import dataclass
from pathlib import Path

import ignite
import ignite.distributed as idist
import torch
import torchvision
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver, ProgressBar, TerminateOnNan, global_step_from_engine
from ignite.handlers.tensorboard_logger import OptimizerParamsHandler, OutputHandler, TensorboardLogger
from ignite.utils import manual_seed
from torch.utils.data import DataLoader, DistributedSampler

from ..datasets import DataSplits, create_datasets
from ..datasets.seeded import SeededDataset, SeededSampler, sample_seed
from ..handlers.diagnostics import TrainingDiagnostics
from ..handlers.priors import shard_without_padding
from ..handlers.registry import Regularizer, get_regularizer_class
from ..models import Classifier, create_model
from .config import Config
from .context import RunContext
from .distributed import load_tensors_on_rank0
from .errors import UserError
from .evaluator import create_evaluator
from .files import write_atomic
from .optim import create_lr_scheduler, create_optimizer
from .state import RNGState, RunRecord
from .trainer import create_trainer

log = logging.getLogger(__name__)
CHECKPOINTS = "checkpoints"


@dataclass
class Loaders:
    train: DataLoader
    val: DataLoader
    test: DataLoader


def setup_data(cfg: Config) -> tuple[DataSplits, Loaders]:
    data = create_datasets(cfg.data, cfg.cache_dir)
    d = cfg.data
    world, rank = idist.get_world_size(), idist.get_rank()
    if len(data.train) < d.batch_size * world:
        raise UserError(f"data: the training split has {len(data.train)} images, fewer than one global batch "
                        f"(batch_size {d.batch_size} x {world} processes)")
    if len(data.val) == 0:
        raise UserError("data.val_ratio: the validation split is empty; model selection needs one")
    pin = torch.cuda.is_available()
    # A seeded sampler even on one process: the order of epoch e depends only on (seed, e),
    # which is what makes --resume reproduce an uninterrupted run.
    # Each image's augmentation is seeded by (seed, epoch, image) (datasets/seeded.py), and the
    # loader's own generator seeds its workers: the data never depend on the global RNG, so every
    # method sees the same batches at one seed.
    order = DistributedSampler(data.train, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=True)
    train = DataLoader(SeededDataset(data.train), batch_size=d.batch_size, sampler=SeededSampler(order, cfg.seed),
                       num_workers=d.num_workers, drop_last=True, pin_memory=pin,
                       generator=torch.Generator().manual_seed(cfg.seed))
    ebs = d.eval_batch_size or d.batch_size

    def eval_loader(ds):
        # each process a disjoint shard without padding, so the reduced metrics count every image once;
        # own generator: evaluating does not move the global RNG that training draws from
        return DataLoader(shard_without_padding(ds, rank, world), batch_size=ebs, shuffle=False,
                          num_workers=d.num_workers, pin_memory=pin, generator=torch.Generator().manual_seed(0))

    return data, Loaders(train=train, val=eval_loader(data.val), test=eval_loader(data.test))


def setup_model(cfg: Config, data: DataSplits):
    net, info = create_model(cfg.model, data.num_classes, in_channels=1 if cfg.data.grayscale else 3)
    device = idist.device()
    net = net.to(device)
    if cfg.train.channels_last:
        net = net.to(memory_format=torch.channels_last)
    model = idist.auto_model(net, sync_bn=cfg.train.sync_bn)
    return net, model, info, device


def regularizer_seed(seed: int, rank: int) -> int:
    """The seed of the regularizers' generator: its own stream per run seed and process."""
    return sample_seed(seed, -1, rank)


def setup_regularizer(ctx: RunContext) -> Regularizer:
    cls = get_regularizer_class(ctx.cfg.method.name)
    return cls(ctx.cfg.method.params, ctx)


@dataclass
class Run:
    """The parts of a run, built but not yet attached to each other."""

    cfg: Config
    data: DataSplits
    loaders: Loaders
    net: Classifier
    model: torch.nn.Module
    device: torch.device
    ctx: RunContext
    regularizer: Regularizer
    optimizer: torch.optim.Optimizer
    lr_scheduler: object
    trainer: Engine
    val_evaluator: Engine


def build_run(cfg: Config) -> Run:
    """Data, model, regularizer, optimizer, schedule and engines, in that order (the regularizer
    comes before the optimizer because it may add parameter groups)."""
    manual_seed(cfg.seed + idist.get_rank())
    data, loaders = setup_data(cfg)
    net, model, pretrained, device = setup_model(cfg, data)
    generator = torch.Generator(device=device).manual_seed(regularizer_seed(cfg.seed, idist.get_rank()))
    ctx = RunContext(cfg=cfg, model=model, net=net, device=device, data=data, epoch_length=len(loaders.train),
                     pretrained=pretrained, generator=generator)
    regularizer = setup_regularizer(ctx)
    # fp16: a fused optimizer, so that the grad scaler does not read its inf flag back every step
    optimizer = create_optimizer(cfg.optim, net, regularizer.parameter_groups(), fused=cfg.train.amp == "fp16")
    lr_scheduler = create_lr_scheduler(cfg.optim, optimizer, len(loaders.train), cfg.train.epochs)
    t = cfg.train
    trainer = create_trainer(model, optimizer, device, amp=t.amp, channels_last=t.channels_last)
    return Run(cfg=cfg, data=data, loaders=loaders, net=net, model=model, device=device, ctx=ctx,
               regularizer=regularizer, optimizer=optimizer, lr_scheduler=lr_scheduler, trainer=trainer,
               val_evaluator=create_evaluator(model, device, t.amp, t.channels_last))


def attach_handlers(run: Run, run_dir: Path, record: RunRecord) -> dict:
    """Every handler of the run, in the order they fire within an event."""
    cfg, trainer, val_evaluator, loaders, data = run.cfg, run.trainer, run.val_evaluator, run.loaders, run.data
    net, optimizer, lr_scheduler, regularizer = run.net, run.optimizer, run.lr_scheduler, run.regularizer
    rank0 = idist.get_rank() == 0
    tb = TensorboardLogger(log_dir=str(run_dir)) if rank0 else None

    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: loaders.train.sampler.set_epoch(e.state.epoch))
    trainer.add_event_handler(Events.ITERATION_STARTED, lr_scheduler)
    regularizer.attach(trainer)
    diagnostics = TrainingDiagnostics(tb.writer if tb else None, data.num_classes, cfg.train.log_every,
                                      cfg.diagnostics.max_samples, cfg.diagnostics.chunk_size,
                                      len(loaders.train), enabled=cfg.diagnostics.enabled)
    diagnostics.attach(trainer)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(every=cfg.train.log_every),
                              TerminateOnNan(output_transform=lambda step: step.loss))

    trainer.add_event_handler(Events.STARTED, lambda _: record.tick(count=False))

    @trainer.on(Events.EPOCH_COMPLETED)
    def record_time_and_validate(engine: Engine) -> None:
        record.epoch_times.append(float(engine.state.times[Events.EPOCH_COMPLETED.name]))
        record.tick()
        val_evaluator.run(loaders.val)

    @val_evaluator.on(Events.COMPLETED)
    def select(evaluator: Engine) -> None:
        metrics = evaluator.state.metrics
        record.observe(trainer.state.epoch, float(metrics["accuracy"]), float(metrics["loss"]))

    # Model selection: the best validation accuracy, ties broken by the lower validation loss
    # (RunRecord.observe). The score is the count of such improvements, so the Checkpoint saves
    # exactly when the record finds a new best.
    saver = DiskSaver(str(run_dir / CHECKPOINTS), require_empty=False)  # writes on rank 0 only
    best = Checkpoint({"model": net}, saver, filename_prefix="best", n_saved=1,
                      score_function=lambda _: record.improvements,
                      filename_pattern="{filename_prefix}_{name}_{global_step}.{ext}",
                      global_step_transform=global_step_from_engine(trainer))
    val_evaluator.add_event_handler(Events.COMPLETED, best)

    rng = RNGState({"regularizer": run.ctx.generator})
    to_save = {"trainer": trainer, "model": net, "optimizer": optimizer, "lr_scheduler": lr_scheduler,
               "regularizer": regularizer, "rng": rng, "record": record, "best_checkpoint": best}
    if trainer.state.grad_scaler.is_enabled():
        to_save["grad_scaler"] = trainer.state.grad_scaler
    last = Checkpoint(to_save, saver, filename_prefix="last", n_saved=1)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, last)

    if cfg.train.stop_after is not None:
        @trainer.on(Events.EPOCH_COMPLETED)
        def stop(engine: Engine) -> None:
            if engine.state.epoch >= cfg.train.stop_after:
                engine.terminate()

    if tb is not None:
        every = Events.ITERATION_STARTED(every=cfg.train.log_every)
        tb.attach(trainer, OptimizerParamsHandler(optimizer, param_name="lr"), every)
        for name, opt in regularizer.optimizers().items():
            tb.attach(trainer, OptimizerParamsHandler(opt, param_name="lr", tag=name), every)
        tb.attach(val_evaluator, OutputHandler(tag="val", metric_names=["accuracy", "loss"],
                                               global_step_transform=global_step_from_engine(trainer)),
                  Events.COMPLETED)
    if rank0 and cfg.train.progress:
        ProgressBar(persist=False, desc="train").attach(trainer, metric_names="all")
        ProgressBar(persist=False, desc="val").attach(val_evaluator)
    return {"to_save": to_save, "best": best, "tb": tb, "diagnostics": diagnostics}


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


def write_json_atomic(path: Path, obj: dict) -> None:
    write_atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2)))


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

