"""Several seeds of several configs, one run folder each: ``ROOT/<config name>/seed<k>``.

    adarand-sweep yaml/demo_ft.yaml yaml/demo_adarand.yaml --seeds 0 1 2 --root runs/demo
    adarand-sweep --bases yaml/base/digits_small_cnn.yaml --methods yaml/methods/fnp.yaml \
                  yaml/methods/adarand.yaml --seeds 0 1 2 --root runs/demo train.epochs=10
    adarand-sweep cars_adarand cars_ft --seeds 0 1 2 --root runs/cars --launcher slurm --partition gpu

A positional config may join files with ``+`` (``base.yaml+method.yaml``); ``--bases`` x
``--methods`` adds every combination. ``key=value`` overrides apply to every run. A run whose
folder already holds results.json is skipped and any other continues from its last checkpoint
(``run.py --output`` does that), so an interrupted sweep continues where it stopped. Locally runs go
one after another, each in a process of its own (so each reports its own peak memory); with
``--launcher slurm`` each run is a Slurm job submitted through submitit, requeued on preemption
or timeout, and continuing its run when it starts again. ``tensorboard --logdir ROOT`` then shows
all of them side by side, their HParams in one table.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import submitit

from ..core.config import config_name
from .launch import train


def plan(configs: list[str], bases: list[str], methods: list[str]) -> list[list[str]]:
    runs = [c.split("+") for c in configs]
    runs += [[b, m] for b in bases for m in methods]
    return runs


class RunJob(submitit.helpers.Checkpointable):
    """One run as a cluster job, trained in the job's process (``adarand.train``). When Slurm
    preempts the job or its time runs out, submitit requeues it (``checkpoint()``, inherited,
    resubmits the same call), and the same call continues the run from its last checkpoint (its
    ``output`` folder)."""

    def __init__(self, configs: list[str], overrides: list[str], seed: int, output: str, nproc: int = 1):
        self.configs, self.overrides, self.seed, self.output, self.nproc = configs, overrides, seed, output, nproc

    def __call__(self) -> dict | None:
        return train(self.configs, self.overrides, output=self.output, seed=self.seed, nproc=self.nproc, quiet=True)


def cluster_executor(args: argparse.Namespace, root: Path) -> submitit.AutoExecutor:
    """submitit's executor for ``--launcher slurm`` (or ``submitit-local``: the same jobs as processes
    on this machine, which needs no cluster). Job logs go to ROOT/submitit/."""
    executor = submitit.AutoExecutor(folder=root / "submitit" / "%j",
                                     cluster="local" if args.launcher == "submitit-local" else "slurm")
    params = {"timeout_min": args.time_min, "gpus_per_node": args.gpus, "tasks_per_node": 1,
              "cpus_per_task": args.cpus, "name": "adarand"}
    if args.launcher == "slurm":
        if args.partition:
            params["slurm_partition"] = args.partition
        extra = dict(item.split("=", 1) for item in args.slurm_arg)
        if extra:
            params["slurm_additional_parameters"] = extra
    executor.update_parameters(**params)
    return executor


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="adarand-sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("items", nargs="*", metavar="CONFIG[+CONFIG] | key=value")
    p.add_argument("--bases", nargs="*", default=[], help="dataset/backbone files, combined with every --methods file")
    p.add_argument("--methods", nargs="*", default=[], help="method files")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--root", required=True, help="common folder of the run folders")
    p.add_argument("--launcher", choices=["local", "slurm", "submitit-local"], default="local",
                   help="local: one run after another here; slurm: one job per run through submitit; "
                        "submitit-local: those jobs as processes here (no cluster)")
    p.add_argument("--partition", help="slurm: the partition")
    p.add_argument("--time-min", type=int, default=24 * 60, help="slurm: a job's time limit (it is requeued after)")
    p.add_argument("--gpus", type=int, default=1, help="slurm: GPUs per job (the run gets --nproc GPUS)")
    p.add_argument("--cpus", type=int, default=8, help="slurm: CPUs per job (data loading)")
    p.add_argument("--slurm-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="slurm: any further sbatch option, e.g. --slurm-arg account=myproject")
    p.add_argument("--wait", action="store_true", help="slurm: wait for the jobs and report how they ended")
    args = p.parse_intermixed_args(argv)
    overrides = [i for i in args.items if "=" in i]
    runs = plan([i for i in args.items if "=" not in i], args.bases, args.methods)
    if not runs:
        p.error("no config given")
    if bool(args.bases) != bool(args.methods):
        p.error("--bases and --methods go together")

    root = Path(args.root)
    todo = []
    for files in runs:
        for seed in args.seeds:
            out = root / config_name(files) / f"seed{seed}"
            label = f"{config_name(files)} seed {seed}"
            if (out / "results.json").exists():
                print(f"[sweep] {label}: done already, skipped", flush=True)
                continue
            todo.append((label, files, seed, out))
    start = time.time()
    if args.launcher == "local":
        failed = []
        for label, files, seed, out in todo:
            print(f"[sweep] {label} -> {out}", flush=True)
            command = [sys.executable, "-m", "adarand.run", *files, *overrides, "--seed", str(seed), "--output", str(out),
                       "--quiet"]
            if subprocess.run(command).returncode != 0:
                failed.append(label)
    else:
        executor = cluster_executor(args, root)
        nproc = args.gpus if args.launcher == "slurm" else 1
        jobs = [(label, executor.submit(RunJob(files, overrides, seed, str(out), nproc))) for label, files, seed, out in todo]
        for label, job in jobs:
            print(f"[sweep] {label}: job {job.job_id}", flush=True)
        if not args.wait:
            print(f"[sweep] {len(jobs)} jobs submitted; logs under {root / 'submitit'}; tables: adarand-table {root}")
            return 0
        failed = [label for label, job in jobs if job.exception() is not None]
    print(f"[sweep] {len(todo) - len(failed)} runs ok, {len(failed)} failed, "
          f"{time.time() - start:.0f} s; tables: adarand-table {root}")
    for label in failed:
        print(f"[sweep] failed: {label}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
