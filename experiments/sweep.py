"""Seeds x configs x grid points, one run folder each: ``ROOT/<config name>[-<label>]/seed<k>``.

    adarand-sweep yaml/demo_ft.yaml yaml/demo_adarand.yaml --seeds 0 1 2 --root runs/demo
    adarand-sweep --bases yaml/base/digits_small_cnn.yaml --methods yaml/methods/fnp.yaml \
                  yaml/methods/adarand.yaml --seeds 0 1 2 --root runs/demo train.epochs=10
    adarand-sweep demo_adarand method.lambda=[0,0.1,0.3] method.alpha=[0.5,0.7] --root runs/grid
    adarand-sweep cars_adarand cars_ft --seeds 0 1 2 --root runs/cars --launcher slurm --partition gpu

A config may join files with ``+`` (``base.yaml+method.yaml``), positional or in ``--bases`` and
``--methods``; ``--bases`` x ``--methods`` adds every combination. ``key=value`` overrides apply
to every run, and an override whose value is a list (for a key that holds no list) is a grid
axis: the sweep runs the Cartesian product of the axes x the seeds (``experiments/grid.py``). The
folder's label names what the overrides set (``digits_small_cnn-adarand-lambda0.1/seed0``).

Nothing starts until every run of the plan has loaded and validated its config and every folder
that already holds a run has been checked against it: a folder whose ``config.yaml`` differs from
the run asked for (in any key but how a run prints and where caches live) stops the sweep with
the differing keys. The plan is printed first (how many runs, which folders, how many done). A
run whose folder holds results.json of the same config is skipped; one that was stopped continues
from its last checkpoint. Locally the runs go one after another, each in a process of its own (so
each reports its own peak memory), with a line per finished run (its accuracies and time) and an
estimate of the time left; ``--verbose`` passes each run's epoch lines through. With
``--launcher slurm`` each run is a Slurm job submitted through submitit, requeued on preemption
or timeout, and continuing its run when it starts again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from ..core.config import config_name, expand_packaged, merged_files
from ..core.console import result_words
from ..core.errors import UserError
from ..core.folder_lock import FolderLock
from ..engine.config import load_config
from ..engine.run_folder import DISPLAY_KEYS, FINISHED, NEW, STARTED, folder_state
from .cluster import RunJob, cluster_executor
from .grid import folder_label, grid_points, undeclared_axes


@dataclasses.dataclass
class PlannedRun:
    files: list[str]
    overrides: list[str]  # the grid point's overrides, and the sweep's plain ones
    seed: int
    out: Path
    state: str  # NEW, STARTED or FINISHED

    @property
    def label(self) -> str:
        return f"{self.out.parent.name} seed {self.seed}"


def config_groups(configs: list[str], bases: list[str], methods: list[str]) -> list[list[str]]:
    """The file lists of the runs: each positional config, then every base x method (each may join
    files with ``+``)."""
    runs = [c.split("+") for c in configs]
    bases = [name for b in bases for name in expand_packaged(b)]
    methods = [name for m in methods for name in expand_packaged(m)]
    runs += [b.split("+") + m.split("+") for b in bases for m in methods]
    return runs


def selected_method(files: list[str]) -> str:
    method = merged_files(files).get("method")
    name = method.get("name", "finetune") if isinstance(method, dict) else "finetune"
    return name if isinstance(name, str) else "finetune"


def plan(groups: list[list[str]], overrides: list[str], seeds: list[int], root: Path) -> list[PlannedRun]:
    """Every run of the sweep, each config loaded and validated and each folder checked. Raises
    UserError naming every problem found (a line each) before anything runs."""
    runs, problems, folders = [], [], {}
    lacking: dict[str, list[str]] = {}  # grid axis -> the configs whose method lacks it
    for files in groups:
        try:
            method = selected_method(files)
            points = grid_points(overrides, method)
        except UserError as e:
            problems.append(f"error: {e}")
            continue
        for key in undeclared_axes(overrides, method):
            lacking.setdefault(key, []).append(config_name(files))
        for point in points:
            label = folder_label(point, DISPLAY_KEYS)
            name = config_name(files) + (f"-{label}" if label else "")
            for seed in seeds:
                out = root / name / f"seed{seed}"
                try:
                    cfg = load_config(files, point, seed=seed)
                    state = folder_state(out, cfg, allowed=DISPLAY_KEYS, what="adarand-sweep")
                except UserError as e:
                    problems.append(f"error: {e}")
                    continue
                if out in folders:
                    problems.append(f"error: adarand-sweep: {' + '.join(files)} with {' '.join(point) or 'no overrides'} and "
                                    f"{' + '.join(folders[out].files)} with {' '.join(folders[out].overrides) or 'no overrides'} "
                                    f"would share the folder {out}; give the config files distinct names")
                    continue
                folders[out] = run = PlannedRun(list(files), point, seed, out, state)
                runs.append(run)
    for key, names in lacking.items():
        if len(names) == len(groups):
            problems.append(f"error: command line: key '{key}': not a parameter of the method of any config "
                            f"({', '.join(names)})")
        else:
            print(f"[sweep] {key} is not a parameter of {', '.join(names)}: those run once per seed, as the grid's "
                  "baseline", flush=True)
    if problems:
        raise UserError("\n".join(dict.fromkeys(problems)).removeprefix("error: "))
    return runs


def describe_plan(runs: list[PlannedRun], root: Path, seeds: list[int]) -> str:
    count = {s: sum(r.state == s for r in runs) for s in (FINISHED, STARTED, NEW)}
    folders = list(dict.fromkeys(r.out.parent for r in runs))
    lines = [f"[sweep] plan: {plural(len(runs), 'run')} ({plural(len(folders), 'config')} x {plural(len(seeds), 'seed')}) "
             f"under {root}: "
             f"{count[FINISHED]} done, {count[STARTED]} to continue, {count[NEW]} to start"]
    for folder in folders:
        mine = [r for r in runs if r.out.parent == folder]
        states = ", ".join(f"{word} {n}" for word, n in (
            ("done", sum(r.state == FINISHED for r in mine)), ("to continue", sum(r.state == STARTED for r in mine)),
            ("new", sum(r.state == NEW for r in mine))) if n)
        lines.append(f"[sweep]   {folder}: seeds {' '.join(str(r.seed) for r in mine)} ({states})")
    return "\n".join(lines)


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def minutes(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def finished_line(run: PlannedRun, k: int, n: int, elapsed: float, took: list[float]) -> str:
    """``[sweep] 3/45 <folder> seed 0: test 85.71 %, val 90.00 % (epoch 31), 12 s; 42 to go, about 8 min left``."""
    res = json.loads((run.out / "results.json").read_text())
    left = n - k
    eta = f"; {left} to go, about {minutes(sum(took) / len(took) * left)} left" if left else f"; all {n} finished"
    return (f"[sweep] {k}/{n} {run.label}: test {result_words(res, 'test')}; val {result_words(res, 'val')} "
            f"(epoch {res['best_epoch']}), {minutes(elapsed)}{eta}")


def run_local(todo: list[PlannedRun], verbose: bool) -> list[str]:
    """Each run in a process of its own, one after another; the labels of those that failed."""
    failed, took = [], []
    for k, run in enumerate(todo, start=1):
        command = [sys.executable, "-m", "adarand.run", *run.files, *run.overrides, "--seed", str(run.seed),
                   "--output", str(run.out)]
        if verbose:
            print(f"[sweep] {k}/{len(todo)} {run.label} -> {run.out}", flush=True)
        start = time.time()
        done = subprocess.run(command if verbose else [*command, "--quiet"],
                              stdout=None if verbose else subprocess.DEVNULL)
        took.append(time.time() - start)
        if done.returncode == 0 and (run.out / "results.json").exists():
            print(finished_line(run, k, len(todo), took[-1], took), flush=True)
        else:
            failed.append(run.label)
            print(f"[sweep] {k}/{len(todo)} {run.label}: failed (exit {done.returncode}), {minutes(took[-1])}", flush=True)
    return failed


def build_parser() -> argparse.ArgumentParser:
    """adarand-sweep's options (the command-line reference is generated from them)."""
    p = argparse.ArgumentParser(prog="adarand-sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("items", nargs="*", metavar="CONFIG[+CONFIG] | key=value | key=[v1,v2,...]")
    p.add_argument("--bases", nargs="*", default=[], help="dataset/backbone files, combined with every --methods file")
    p.add_argument("--methods", nargs="*", default=[], help="method files")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--root", required=True, help="common folder of the run folders")
    p.add_argument("--plan", action="store_true", help="print the plan (runs, folders, what is done) and exit")
    p.add_argument("--verbose", action="store_true", help="pass each run's epoch lines through")
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
    return p


def parse_args(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    p = build_parser()
    args = p.parse_intermixed_args(argv)
    # --bases and --methods take every word up to the next option: overrides written after them are overrides
    overrides_after = [i for i in args.bases + args.methods if "=" in i]
    args.bases = [i for i in args.bases if "=" not in i]
    args.methods = [i for i in args.methods if "=" not in i]
    args.items += overrides_after
    args.overrides = [i for i in args.items if "=" in i]
    try:
        args.groups = config_groups([i for i in args.items if "=" not in i], args.bases, args.methods)
    except UserError as e:  # a pattern that names no packaged config
        p.exit(2, f"error: {e}\n")
    if not args.groups:
        p.error("no config given")
    if bool(args.bases) != bool(args.methods):
        p.error("--bases and --methods go together")
    return p, args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    _, args = parse_args(argv)
    root = Path(args.root)
    try:
        runs = plan(args.groups, args.overrides, args.seeds, root)
    except UserError as e:
        for line in str(e).splitlines():
            print(line if line.startswith("error: ") else f"error: {line}", file=sys.stderr)
        return 2
    print(describe_plan(runs, root, args.seeds), flush=True)
    if args.plan:
        return 0
    todo = [r for r in runs if r.state != FINISHED]
    start = time.time()
    if args.launcher == "local":
        # one sweep at a time in a root: a second would start the runs the first is training
        lock = FolderLock(root, busy="another adarand-sweep is running in this root",
                          instead="it runs what this command would (the same command later skips what it "
                                  "finished): wait for it, or give another --root")
        try:
            lock.acquire()
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        try:
            failed = run_local(todo, args.verbose)
        except KeyboardInterrupt:
            done = sum((r.out / "results.json").exists() for r in runs)
            print(f"\n[sweep] interrupted: {done} of {len(runs)} runs finished; the same command continues the sweep "
                  f"(finished runs are skipped, a stopped one continues): adarand-sweep {shlex.join(argv)}",
                  file=sys.stderr)
            return 130
        finally:
            lock.release()
    else:
        failed = run_cluster(todo, args, root)
        if failed is None:
            return 0
    print(f"[sweep] {plural(len(todo) - len(failed), 'run')} ok, {len(failed)} failed, {len(runs) - len(todo)} done before, "
          f"{minutes(time.time() - start)}; tables: adarand-table {root}", flush=True)
    for label in failed:
        print(f"[sweep] failed: {label}", file=sys.stderr)
    return 1 if failed else 0


def run_cluster(todo: list[PlannedRun], args: argparse.Namespace, root: Path) -> list[str] | None:
    """One submitit job per run; with ``--wait`` the labels of those that failed, else None."""
    executor = cluster_executor(args, root)
    nproc = args.gpus if args.launcher == "slurm" else 1
    jobs = [(run, executor.submit(RunJob(run.files, run.overrides, run.seed, str(run.out), nproc))) for run in todo]
    for run, job in jobs:
        print(f"[sweep] {run.label}: job {job.job_id}", flush=True)
    if not args.wait:
        print(f"[sweep] {len(jobs)} jobs submitted; logs under {root / 'submitit'}; tables: adarand-table {root}")
        return None
    failed, took, start = [], [], time.time()
    for k, (run, job) in enumerate(jobs, start=1):
        error = job.exception()
        took.append(time.time() - start)
        if error is None and (run.out / "results.json").exists():
            print(finished_line(run, k, len(jobs), took[-1], took), flush=True)
        else:
            failed.append(run.label)
            print(f"[sweep] {k}/{len(jobs)} {run.label}: failed ({str(error).strip().splitlines()[-1:] or ''})", flush=True)
    return failed


if __name__ == "__main__":
    sys.exit(main())
