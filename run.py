"""Command line: ``python run.py CONFIG.yaml [MORE.yaml ...] [key.path=value ...] [--output DIR] [--seed N] [--resume RUN]``.

Several config files are merged in order (``yaml/base/birds_resnet50.yaml yaml/methods/fnp.yaml``).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import time
from pathlib import Path

import ignite.distributed as idist
import torch
from torch.multiprocessing import ProcessExitedException

from adarand.core.config import save_config
from adarand.core.errors import Interrupted, NonFiniteLoss, UserError, os_error_message
from adarand.engine.checkpoints import CHECKPOINTS, find_last_checkpoint, last_checkpoints
from adarand.engine.config import load_config
from adarand.engine.training import run_training


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="run.py", description="Fine-tune a pretrained backbone (AdaRand and baselines).")
    p.add_argument("items", nargs="+", metavar="CONFIG.yaml | key.path=value",
                   help="config file(s), merged in order, then overrides, e.g. yaml/demo_adarand.yaml train.epochs=3")
    p.add_argument("--output", help="run folder (default: <output_root>/<config name>-seed<seed>-<time>); "
                                     "a folder holding a checkpoint continues its run")
    p.add_argument("--seed", type=int, help="run seed (overrides the config's seed)")
    p.add_argument("--resume", help="continue a stopped run: its folder or its last_checkpoint_*.pt file")
    p.add_argument("--nproc", type=int, default=1,
                   help="processes on this machine (one per GPU; gloo on CPUs); torchrun sets this itself")
    args = p.parse_intermixed_args(argv)
    args.configs = [i for i in args.items if "=" not in i]
    args.overrides = [i for i in args.items if "=" in i]
    if not args.configs:
        p.error("no config file given")
    return args


def choose_run(args: argparse.Namespace, cfg) -> tuple[Path, Path | None]:
    """The run folder, and the last checkpoint to continue from (None: a new run).

    ``--resume`` continues a run (its folder or checkpoint file). ``--output DIR`` continues the run
    in DIR if it has a last checkpoint, and starts one otherwise, so that the same command run
    again after a kill or a preemption carries on. Without either, a new stamped folder."""
    if args.resume:
        resume = find_last_checkpoint(Path(args.resume))
        if args.output:
            return Path(args.output), resume
        return (resume.parent.parent if resume.parent.name == CHECKPOINTS else resume.parent), resume
    if args.output:
        run_dir = Path(args.output)
        found = last_checkpoints(run_dir)
        if not found and (run_dir / "results.json").exists():
            raise UserError(f"--output: {run_dir} holds a finished run (results.json) without its "
                            "checkpoints; choose another folder")
        if found:
            print(f"continuing the run in {run_dir} from {found[-1].name}", file=sys.stderr)
        return run_dir, (found[-1] if found else None)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(cfg.output_root).expanduser() / f"{cfg.name}-seed{cfg.seed}-{stamp}", None


def launch_settings(nproc: int, gpus: int | None = None) -> dict:
    """idist.Parallel's arguments: torchrun's environment, ``--nproc N`` processes, or one.
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
        return {"backend": backend, "nproc_per_node": nproc}
    return {"backend": None}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for name in ("ignite", "ignite.distributed.launcher.Parallel"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        cfg = load_config(args.configs, args.overrides, seed=args.seed)
        run_dir, resume = choose_run(args, cfg)
        settings = launch_settings(args.nproc)
        from adarand.run import _run  # importable by name in spawned processes

        with idist.Parallel(**settings) as parallel:
            parallel.run(_run, cfg, run_dir, resume, args.nproc > 1)
    except UserError as e:
        if not getattr(e, "reported", False):
            print(f"error: {e}", file=sys.stderr)
        return 2
    except (NonFiniteLoss, Interrupted) as e:
        if not getattr(e, "reported", False):
            print(f"{'error: ' if isinstance(e, NonFiniteLoss) else ''}{e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # a full disk, a read-only folder: the path and the OS error
        if getattr(e, "reported", False):
            return 2
        message = os_error_message(e)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before training started
        print("interrupted before training started; nothing to continue from", file=sys.stderr)
        return Interrupted.exit_code
    except ProcessExitedException as e:  # a spawned process stopped on an error it printed
        if e.exit_code in (2, NonFiniteLoss.exit_code, Interrupted.exit_code):
            return e.exit_code
        raise
    return 0


def _run(local_rank: int, cfg, run_dir: Path, resume: Path | None, spawned: bool) -> None:
    rank = idist.get_rank()
    if idist.get_world_size() > 1:  # one folder for all processes (torchrun: each chose its own)
        run_dir = Path(idist.broadcast(str(run_dir), src=0))
    try:
        results = run_training(local_rank, cfg, run_dir, resume, on_ready=lambda: _write_config(cfg, run_dir))
    except OSError as e:
        message = os_error_message(e)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)  # every process that meets one says so
        e.reported = True
        if spawned:
            raise SystemExit(2) from None
        raise
    except (UserError, NonFiniteLoss, Interrupted) as e:
        if rank == 0:
            print(f"{'' if isinstance(e, Interrupted) else 'error: '}{e}", file=sys.stderr)
        e.reported = True
        if spawned:
            raise SystemExit(2 if isinstance(e, UserError) else e.exit_code) from None
        raise
    finally:
        # The engines and their handlers form reference cycles that keep the DDP model, and through it
        # the process group, alive after ignite destroys the group; gloo's threads then die only at
        # interpreter exit, where they can abort the process ("terminate called without an active
        # exception", seen in CI). Collecting here frees them while the interpreter is whole.
        gc.collect()
    if rank == 0 and results is not None:
        print(f"test accuracy: {100 * results['test_accuracy']:.2f} % (best validation epoch {results['best_epoch']}, "
              f"val accuracy {100 * results['val_accuracy']:.2f} %)")
        print(f"results: {run_dir / 'results.json'}")
        print(f"view the training curves: tensorboard --logdir {run_dir}")


def _write_config(cfg, run_dir: Path) -> None:
    if idist.get_rank() == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")


if __name__ == "__main__":
    sys.exit(main())
