"""Runs as Slurm jobs through submitit: ``adarand-sweep --launcher slurm`` and ``adarand-tune``'s
workers. A job that Slurm preempts, or whose time runs out, is requeued by submitit and continues
where it stopped."""

from __future__ import annotations

import argparse
from pathlib import Path

import submitit

from ..engine.launch import train


class RunJob(submitit.helpers.Checkpointable):
    """One run as a cluster job, trained in the job's process (``adarand.train``). When Slurm
    preempts the job or its time runs out, submitit requeues it (``checkpoint()``, inherited,
    resubmits the same call), and the same call continues the run from its last checkpoint (its
    ``output`` folder)."""

    def __init__(self, configs: list[str], overrides: list[str], seed: int, output: str, nproc: int = 1):
        self.configs, self.overrides, self.seed, self.output, self.nproc = configs, overrides, seed, output, nproc

    def __call__(self) -> dict | None:
        return train(self.configs, self.overrides, output=self.output, seed=self.seed, nproc=self.nproc, quiet=True,
                     wording="command line")


def cluster_executor(args: argparse.Namespace, root: Path, name: str = "adarand") -> submitit.AutoExecutor:
    """submitit's executor for ``--launcher slurm`` (or ``submitit-local``: the same jobs as processes
    on this machine, which needs no cluster). Job logs go to ROOT/submitit/."""
    executor = submitit.AutoExecutor(folder=root / "submitit" / "%j",
                                     cluster="local" if args.launcher == "submitit-local" else "slurm")
    params = {"timeout_min": args.time_min, "gpus_per_node": args.gpus, "tasks_per_node": 1,
              "cpus_per_task": args.cpus, "name": name}
    if args.launcher == "slurm":
        if args.partition:
            params["slurm_partition"] = args.partition
        extra = dict(item.split("=", 1) for item in args.slurm_arg)
        if extra:
            params["slurm_additional_parameters"] = extra
    executor.update_parameters(**params)
    return executor

