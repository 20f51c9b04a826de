"""Command line (``adarand-run``, or ``python run.py`` in the repository)::

    adarand-run CONFIG [MORE ...] [key.path=value ...] [--output DIR] [--seed N] [--resume RUN] [--nproc N] [--quiet]
    adarand-run --list
    adarand-run CONFIG [...] --print-config

A CONFIG is a YAML file or the name of a config shipped with the package (``demo``,
``cars_adarand``, ``base/birds_resnet50``); several are merged in order
(``base/birds_resnet50 methods/fnp``). Errors are printed as one line, with exit code 2 for bad
input or an OS error, 3 for a NaN loss and 130 for Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from adarand.core.errors import Interrupted, NonFiniteLoss, ProcessDied, UserError, error_line, os_error_message


def build_parser() -> argparse.ArgumentParser:
    """adarand-run's options (the command-line reference is generated from them)."""
    p = argparse.ArgumentParser(prog="adarand-run", description="Fine-tune a pretrained backbone (AdaRand and baselines).")
    p.add_argument("items", nargs="*", metavar="CONFIG | key.path=value",
                   help="config files or packaged config names, merged in order, then overrides, "
                        "e.g. demo train.epochs=3")
    p.add_argument("--output", help="run folder (default: <output_root>/<config name>-seed<seed>-<time>); "
                                     "a folder holding a checkpoint continues its run")
    p.add_argument("--seed", type=int, help="run seed (overrides the config's seed)")
    p.add_argument("--resume", help="continue a stopped run: its folder or its last_checkpoint_*.pt file")
    p.add_argument("--nproc", type=int, default=1,
                   help="processes on this machine (one per GPU; gloo on CPUs); torchrun sets this itself")
    p.add_argument("--quiet", action="store_true", help="no progress bars and no per-epoch lines")
    p.add_argument("--list", action="store_true", help="list the packaged configs and the methods, then exit")
    p.add_argument("--print-config", action="store_true", help="print the resolved config, then exit")
    return p


def parse_args(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    p = build_parser()
    args = p.parse_intermixed_args(argv)
    args.configs = [i for i in args.items if "=" not in i]
    args.overrides = [i for i in args.items if "=" in i]
    if not args.configs and not args.list:
        p.error("no config given (a YAML file or a packaged config name; --list lists them)")
    return p, args


def summary(results: dict) -> str:
    from adarand.core.console import result_words

    return (f"done: {results['method']}, test {result_words(results, 'test')} (best validation "
            f"epoch {results['best_epoch']}, val {result_words(results, 'val')}), wall time "
            f"{results['wall_time_s']:.0f} s, run folder {results['run_dir']} (tensorboard --logdir {results['run_dir']})")


def main(argv: list[str] | None = None) -> int:
    parser, args = parse_args(argv)
    # --quiet (a sweep's runs): warnings and errors only, not the caches' INFO lines
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    for name in ("ignite", "ignite.distributed.launcher.Parallel", "faster_coco_eval"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # what each command needs is imported when it runs (``--help`` loads no torch)
    try:
        if args.list:
            from adarand.experiments.catalog import catalog

            print(catalog())
            return 0
        if args.print_config:
            import yaml
            from adarand.engine.config import load_config

            cfg = load_config(args.configs, args.overrides, seed=args.seed)
            print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
            return 0
        return train_command(args)
    except (UserError, NonFiniteLoss, Interrupted, ProcessDied) as e:
        print(error_line(e), file=sys.stderr)
        return 2 if isinstance(e, UserError) else e.exit_code
    except OSError as e:  # a full disk, a read-only folder: the path and the OS error
        if os_error_message(e) is None:
            raise
        print(error_line(e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before training started
        print("interrupted before training started; nothing to continue from", file=sys.stderr)
        return Interrupted.exit_code


def train_command(args: argparse.Namespace) -> int:
    """The run itself; its summary line at the end."""
    from torch.multiprocessing import ProcessExitedException

    from adarand.engine.launch import train

    try:
        results = train(args.configs, args.overrides, output=args.output, seed=args.seed, resume=args.resume,
                        nproc=args.nproc, quiet=args.quiet, wording="command line")
    except ProcessExitedException as e:  # a spawned process stopped on an error it printed
        if e.exit_code in (2, NonFiniteLoss.exit_code, Interrupted.exit_code):
            return e.exit_code
        raise
    if results is not None and int(os.environ.get("RANK", "0")) == 0:  # torchrun starts every rank here
        print(summary(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
