"""Building a run from a config: data, model, regularizer, optimizer, schedule and engines, not
yet attached to each other (``attach.py`` does that)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import ignite.distributed as idist
import torch
from ignite.engine import Engine
from ignite.utils import manual_seed
from torch.utils.data import DataLoader, DistributedSampler

from ..core.config import Config
from ..core.console import progress_bars
from ..core.distributed import shard_without_padding
from ..core.errors import UserError
from ..core.seeded import SeededDataset, SeededSampler, sample_seed
from ..datasets import DataSplits, ImageSets
from ..handlers.context import RunContext
from ..handlers.registry import Regularizer, get_regularizer_class
from ..models import Classifier, backbone_preprocessing
from ..tasks import get_task
from ..tasks.task import Task
from .optim import create_lr_scheduler, create_optimizer
from .trainer import create_trainer


@dataclass
class Loaders:
    train: DataLoader
    val: DataLoader
    test: DataLoader
    extra_test: dict[str, DataLoader]  # by name (data.extra_test)


def setup_data(cfg: Config) -> tuple[DataSplits, Loaders]:
    task = get_task(cfg)
    data = task.create_datasets(cfg, progress_bars(cfg.train.progress) and idist.get_rank() == 0)
    d = cfg.data
    world, rank = idist.get_world_size(), idist.get_rank()
    if len(data.train) < d.batch_size * world:
        raise UserError(f"data: the training split has {len(data.train)} images, fewer than one global batch "
                        f"(batch_size {d.batch_size} x {world} processes)")
    if data.num_classes < task.min_classes:
        fewest = {1: "one", 2: "two"}.get(task.min_classes, str(task.min_classes))
        raise UserError(f"data.root: {data.root} has {data.num_classes} class ({', '.join(data.classes)}); "
                        f"{task.name} needs at least {fewest}")
    if len(data.val) == 0:
        raise UserError("data.val_ratio: the validation split is empty; model selection needs one")
    pin = torch.cuda.is_available()
    # A seeded sampler even on one process: the order of epoch e depends only on (seed, e),
    # which is what makes --resume reproduce an uninterrupted run.
    # Each image's augmentation is seeded by (seed, epoch, image) (core/seeded.py), and the
    # loader's own generator seeds its workers: the data never depend on the global RNG, so every
    # method sees the same batches at one seed.
    order = DistributedSampler(data.train, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=True)
    train = DataLoader(SeededDataset(data.train), batch_size=d.batch_size, sampler=SeededSampler(order, cfg.seed),
                       num_workers=d.num_workers, drop_last=True, pin_memory=pin,
                       generator=torch.Generator().manual_seed(cfg.seed), collate_fn=getattr(data.train, "collate", None))
    def eval_loader(ds):
        # each process a disjoint shard without padding, so the reduced metrics count every image once;
        # own generator: evaluating does not move the global RNG that training draws from
        return DataLoader(shard_without_padding(ds, rank, world), batch_size=d.eval_batch, shuffle=False,
                          num_workers=d.num_workers, pin_memory=pin, generator=torch.Generator().manual_seed(0),
                          collate_fn=getattr(ds, "collate", None))

    return data, Loaders(train=train, val=eval_loader(data.val), test=eval_loader(data.test),
                         extra_test={name: eval_loader(ds) for name, (ds, _) in data.extra_test.items()})


def run_device(setting: str) -> torch.device:
    """``train.device``: auto is Ignite's choice (each process its GPU, else the CPU); cpu; cuda (each
    process its GPU); cuda:N (a run of one process on GPU N)."""
    if setting == "cpu":
        return torch.device("cpu")
    if setting == "auto":
        return idist.device()
    if not torch.cuda.is_available():
        raise UserError(f"train.device: {setting}, but torch sees no GPU (torch {torch.__version__}, "
                        f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
    if setting == "cuda":
        return idist.device()
    index = int(setting.split(":")[1])
    if idist.get_world_size() > 1:
        raise UserError(f"train.device: {setting} names one GPU, but the run has {idist.get_world_size()} processes "
                        "(each takes its own: use cuda or auto)")
    if index >= torch.cuda.device_count():
        raise UserError(f"train.device: {setting}, but this machine has {torch.cuda.device_count()} GPU(s)")
    torch.cuda.set_device(index)
    return torch.device(setting)


def setup_model(cfg: Config, data: DataSplits, task: Task):
    net, info = task.create_model(cfg, data)
    device = run_device(cfg.train.device)
    net = net.to(device)
    if cfg.train.channels_last:
        net = net.to(memory_format=torch.channels_last)
    # Ignite's auto_model wraps the model for the processes (DDP) and moves it to idist.device(); a
    # run of one process that was told to stay on the CPU keeps its model as it is
    single_cpu = device.type == "cpu" and idist.get_world_size() == 1
    model = net if single_cpu else idist.auto_model(net, sync_bn=cfg.train.sync_bn)
    if cfg.train.compile:  # after DDP's wrapping, as torch recommends; ``net`` keeps the plain weights
        model = torch.compile(model, backend=cfg.train.compile_backend)
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
    task: Task
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
    # the transforms follow the backbone wherever the config leaves them unset (the resolved values
    # are what the run's config.yaml records)
    cfg.data = cfg.data.with_preprocessing(backbone_preprocessing(cfg.model))
    task = get_task(cfg)
    data, loaders = setup_data(cfg)
    net, model, pretrained, device = setup_model(cfg, data, task)
    generator = torch.Generator(device=device).manual_seed(regularizer_seed(cfg.seed, idist.get_rank()))
    ctx = RunContext(cfg=cfg, model=model, net=net, device=device, data=data, epoch_length=len(loaders.train),
                     pretrained=pretrained, generator=generator, image_sets=ImageSets(cfg.data, cfg.cache_dir))
    regularizer = setup_regularizer(ctx)
    # fp16: a fused optimizer, so that the grad scaler does not read its inf flag back every step
    optimizer = create_optimizer(cfg.optim, net, regularizer.parameter_groups(), fused=cfg.train.amp == "fp16")
    lr_scheduler = create_lr_scheduler(cfg.optim, optimizer, len(loaders.train), cfg.train.epochs)
    t = cfg.train
    trainer = create_trainer(model, optimizer, device, amp=t.amp, channels_last=t.channels_last, forward=task.forward)
    return Run(cfg=cfg, task=task, data=data, loaders=loaders, net=net, model=model, device=device, ctx=ctx,
               regularizer=regularizer, optimizer=optimizer, lr_scheduler=lr_scheduler, trainer=trainer,
               val_evaluator=task.create_evaluator(model, device, t.amp, t.channels_last))
