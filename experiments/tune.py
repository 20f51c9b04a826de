"""Optuna studies over any config keys (``adarand-tune``; the ``tune`` extra: Optuna and
optuna-integration).

    adarand-tune demo_adarand --space space.yaml --trials 20 --root runs/tune [key=value ...]
    adarand-tune cars_adarand --space space.yaml --trials 50 --root runs/tune --workers 4 --launcher slurm \
                 --storage postgresql://user:password@host/db

Each trial is an ordinary run folder, ``ROOT/trial<number>`` (``adarand-table ROOT`` reads it,
and a killed trial continues from its last checkpoint), trained with the config files, the
overrides given and the trial's values for the search space's keys (``experiments/search_space.py``),
at one seed (``--seed``). The objective is the run's best validation accuracy, so the test split
plays no part in the search. Each epoch's validation accuracy is reported to Optuna, and Optuna's
pruner stops an unpromising trial through optuna-integration's PyTorch Ignite pruning handler.

The study lives in ``--storage``: by default a SQLite file in ROOT, so the same command continues
it after a kill, and several workers (``--workers N``: local processes, or Slurm jobs with
``--launcher slurm``) share it. ``--trials`` is the study's total: a worker starts a trial only
while fewer have been started (complete, pruned, running, or failed on their own), deciding under
a file lock in ROOT, so workers never run more trials than asked, nor one trial twice. A trial
whose worker died (killed, preempted) is retried with the same values in its own folder, where it
continues: at once when the worker ran on this machine, after ``--grace-s`` without a heartbeat
otherwise. A study keeps the configs, overrides, seed and space it was started with, and refuses
to continue with others.

At the end it prints the best trial's overrides and the ``adarand-sweep`` command that runs them
over seeds for the final table.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import shlex
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import submitit
from ignite.engine import Events

from ..core.console import result_words
from ..core.errors import ConfigError, Interrupted, NonFiniteLoss, UserError
from ..engine.config import load_config
from ..engine.launch import train
from ..engine.run_folder import DISPLAY_KEYS, FINISHED, folder_state
from ..tasks import get_task
from .cluster import cluster_executor
from .grid import display_value, format_value, grid_points
from .report import metric_label
from .search_space import read_space
from .sweep import minutes, selected_method

EXTRA = "pip install 'adarand[tune]'"


def require_optuna():
    """Optuna and its Ignite pruning handler, or one line naming the extra that installs them."""
    try:
        import optuna
        import optuna_integration  # noqa: F401
    except ImportError as e:
        raise UserError(f"adarand-tune needs Optuna and optuna-integration ({e.name} is missing): {EXTRA}") from None
    # each trial's end is printed here, in one line: Optuna's own record of a failed or interrupted
    # trial (a warning with its traceback) would repeat it
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    # the heartbeat that retries a dead worker's trial is marked experimental
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def build_parser() -> argparse.ArgumentParser:
    """adarand-tune's options (the command-line reference is generated from them)."""
    p = argparse.ArgumentParser(prog="adarand-tune", description=__doc__.split("\n\n")[0])
    p.add_argument("items", nargs="*", metavar="CONFIG | key=value")
    p.add_argument("--space", required=True, help="the search space (YAML: key: {type: float|int|categorical, ...})")
    p.add_argument("--trials", type=int, required=True, help="the study's total number of trials")
    p.add_argument("--root", required=True, help="the study's folder: its trials' run folders and, by default, its storage")
    p.add_argument("--study-name", "--study", dest="study",
                   help="the study's name in the storage (default: the config files' names, e.g. demo_adarand)")
    p.add_argument("--storage", help="an Optuna RDB URL (default: sqlite:///ROOT/study.db)")
    p.add_argument("--seed", type=int, default=0, help="the run seed of every trial")
    p.add_argument("--sampler", choices=["tpe", "random"], default="tpe")
    p.add_argument("--sampler-seed", type=int, help="seed of the sampler (worker i uses SEED + i)")
    p.add_argument("--pruner", choices=["median", "none"], default="median")
    p.add_argument("--prune-startup", type=int, default=3, help="trials that finish before any is pruned")
    p.add_argument("--prune-warmup", type=int, default=1, help="epochs of a trial before it may be pruned")
    p.add_argument("--grace-s", type=int, default=300,
                   help="a running trial without a heartbeat for this long is retried (its worker died elsewhere)")
    p.add_argument("--final-seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds of the printed final sweep")
    p.add_argument("--summary", action="store_true", help="print the study's state and best trial, run nothing")
    p.add_argument("--workers", type=int, default=1, help="worker processes (local) or jobs (slurm)")
    p.add_argument("--launcher", choices=["local", "slurm", "submitit-local"], default="local")
    p.add_argument("--partition", help="slurm: the partition")
    p.add_argument("--time-min", type=int, default=24 * 60, help="slurm: a job's time limit (it is requeued after)")
    p.add_argument("--gpus", type=int, default=1, help="slurm: GPUs per job")
    p.add_argument("--cpus", type=int, default=8, help="slurm: CPUs per job")
    p.add_argument("--slurm-arg", action="append", default=[], metavar="KEY=VALUE", help="slurm: any further sbatch option")
    p.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)  # a worker of a local study
    return p


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_intermixed_args(argv)
    args.configs = [i for i in args.items if "=" not in i]
    args.overrides = [i for i in args.items if "=" in i]
    if not args.configs:
        p.error("no config given")
    if args.study is None:
        args.study = "+".join(Path(c).stem for c in args.configs)
    if args.trials < 1 or args.workers < 1:
        p.error("--trials and --workers take a positive number")
    return args


class Study:
    """What every worker of one study shares: the configs, the fixed overrides, the search space,
    the seed, the root and Optuna's study in its storage."""

    def __init__(self, args: argparse.Namespace, optuna, worker: int = 0):
        self.args, self.optuna = args, optuna
        self.root = Path(args.root)
        self.configs, self.overrides, self.seed = args.configs, args.overrides, args.seed
        self.space = read_space(args.space)
        self.check_space()
        self.root.mkdir(parents=True, exist_ok=True)
        self.url = args.storage or f"sqlite:///{self.root.resolve() / 'study.db'}"
        self.retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3, inherit_intermediate_values=True)
        engine = {"connect_args": {"timeout": 120}} if self.url.startswith("sqlite") else None
        pruner = (optuna.pruners.MedianPruner(n_startup_trials=args.prune_startup, n_warmup_steps=args.prune_warmup)
                  if args.pruner == "median" else optuna.pruners.NopPruner())
        with self.lock():  # workers starting together: one creates the storage's tables, the others find them
            storage = optuna.storages.RDBStorage(self.url, engine_kwargs=engine, heartbeat_interval=30,
                                                 grace_period=args.grace_s, heartbeat_stale_trial_callback=self.retry)
            self.study = optuna.create_study(study_name=args.study, storage=storage, direction="maximize",
                                             pruner=pruner, load_if_exists=True)
            self.check_settings()
            # each worker, and each continuation of the study, draws its own numbers: a sampler seeded
            # alike would propose the points it proposed before
            seed = None if args.sampler_seed is None else args.sampler_seed + 1000 * worker + len(self.study.trials)
            sampler = (optuna.samplers.TPESampler(seed=seed) if args.sampler == "tpe"
                       else optuna.samplers.RandomSampler(seed=seed))
            self.study = optuna.load_study(study_name=args.study, storage=storage, sampler=sampler, pruner=pruner)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    # --- before anything runs ---------------------------------------------------------------

    def check_space(self) -> None:
        """Every key of the space loads with each of its extreme values (one at a time), and none is
        also a fixed override: a bad range stops the study before its first trial."""
        fixed = {item.partition("=")[0].strip() for item in self.overrides}
        for dim in self.space:
            if dim.key in fixed:
                raise UserError(f"{self.args.space}: key '{dim.key}' is searched and also given as an override")
        if len(grid_points(self.overrides, selected_method(self.configs))) > 1:
            raise UserError("adarand-tune: a grid override (a list of values) belongs in the search space")
        load_config(self.configs, self.overrides, seed=self.seed)  # the configs' own mistakes, named as they are
        base = [d.corners()[0] for d in self.space]
        for i, dim in enumerate(self.space):
            for value in dim.corners():
                point = [f"{d.key}={format_value(value if j == i else base[j])}" for j, d in enumerate(self.space)]
                try:
                    load_config(self.configs, [*self.overrides, *point], seed=self.seed)
                except ConfigError as e:  # the configs load without the space: its keys or values are wrong
                    key = next((d.key for d in self.space if e.key and (d.key == e.key or d.key.startswith(e.key + "."))),
                               e.key)
                    message = str(e).split(f"key '{e.key}': ", 1)[-1] if e.key else str(e)
                    raise ConfigError(str(self.args.space), key, message) from None

    def settings(self) -> dict:
        return {"configs": [str(c) for c in self.configs], "overrides": self.overrides, "seed": self.seed,
                "space": {d.key: {k: v for k, v in vars(d).items() if k != "key"} for d in self.space}}

    def check_settings(self) -> None:
        saved = self.study.user_attrs.get("settings")
        mine = json.loads(json.dumps(self.settings()))
        if saved is None:
            self.study.set_user_attr("settings", mine)
            return
        differ = changed_leaves(saved, mine)
        if differ:
            what = "; ".join(f"{k}: {display_value(a)} → {display_value(b)}" for k, a, b in differ)
            raise UserError(f"--study-name {self.args.study} in {self.url} was started with other settings: {what}; "
                            "choose another --study-name or --root")

    # --- the workers ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self):
        """The study's file lock in ROOT (released by the kernel if its holder dies)."""
        with open(self.root / ".tune.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            self._lock_file = f
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def release(self) -> None:
        fcntl.flock(self._lock_file, fcntl.LOCK_UN)

    def started(self) -> int:
        """Trials that count towards ``--trials``: complete, pruned, running, waiting, and failed on
        their own (a diverged or refused run); not those retried after their worker died."""
        s = self.optuna.trial.TrialState
        return sum(t.state in (s.COMPLETE, s.PRUNED, s.RUNNING, s.WAITING) or
                   (t.state == s.FAIL and "error" in t.user_attrs) for t in self.study.get_trials(deepcopy=False))

    def retry_dead_local_trials(self) -> None:
        """A running trial whose worker was a process of this machine that no longer exists: failed,
        and retried with its values in its folder."""
        host = socket.gethostname()
        for t in self.study.get_trials(deepcopy=False, states=(self.optuna.trial.TrialState.RUNNING,)):
            who = str(t.user_attrs.get("worker", ""))
            name, _, pid = who.rpartition(":")
            if name == host and pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
                self.study.tell(t.number, state=self.optuna.trial.TrialState.FAIL)
                self.retry(self.study, self.study.get_trials(deepcopy=False)[t.number])
                print(f"[tune] trial {t.number}: its worker {who} died; retried in {t.user_attrs.get('run_dir')}", flush=True)

    def work(self) -> None:
        """Run trials until the study has ``--trials`` of them."""
        while True:
            with self.lock():
                self.retry_dead_local_trials()
                if self.started() >= self.args.trials:
                    return
                # the objective releases the lock once its trial is created and claimed
                self.study.optimize(self.objective, n_trials=1, catch=(NonFiniteLoss, UserError))

    def objective(self, trial) -> float:
        run_dir = Path(trial.user_attrs.get("run_dir") or self.root / f"trial{trial.number:04d}")
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("worker", self.worker)
        self.release()
        values = [(d.key, d.suggest(trial)) for d in self.space]
        overrides = [*self.overrides, *(f"{k}={format_value(v)}" for k, v in values)]
        start = time.time()
        try:
            results = self.train_trial(trial, run_dir, overrides)
        except self.optuna.TrialPruned as e:
            print(f"[tune] trial {trial.number}: {str(e).rstrip('.').lower()} ({describe(values)}), "
                  f"{minutes(time.time() - start)}", flush=True)
            raise
        except (NonFiniteLoss, UserError) as e:
            trial.set_user_attr("error", str(e))
            print(f"[tune] trial {trial.number}: failed ({describe(values)}): {e}", flush=True)
            raise
        except Interrupted:
            self.retry(self.study, self.study.get_trials(deepcopy=False)[trial.number])
            raise
        metric = results.get("metric", "accuracy")  # the selecting metric: accuracy, or detection's bbox AP
        trial.set_user_attr("test_accuracy", results[f"test_{metric}"])  # the selecting metric's, by its old name
        trial.set_user_attr("metric", metric)
        trial.set_user_attr("task", results.get("task", "classification"))
        trial.set_user_attr("best_epoch", results["best_epoch"])
        print(f"[tune] trial {trial.number}: val {result_words(results, 'val')}, test "
              f"{result_words(results, 'test')} ({describe(values)}), {minutes(time.time() - start)}; "
              f"{self.started()} of {self.args.trials} trials started", flush=True)
        return float(results[f"val_{metric}"])

    def train_trial(self, trial, run_dir: Path, overrides: list[str]) -> dict:
        """The trial's run in its folder: trained (or continued), or read back when it had finished."""
        cfg = load_config(self.configs, overrides, seed=self.seed)
        if folder_state(run_dir, cfg, allowed=DISPLAY_KEYS, what=f"trial {trial.number}") == FINISHED:
            return json.loads((run_dir / "results.json").read_text())
        from optuna_integration import PyTorchIgnitePruningHandler

        def attach_pruning(trainer, val_evaluator) -> None:
            metric = get_task(cfg).primary  # what selects the epoch
            val_evaluator.add_event_handler(Events.COMPLETED, PyTorchIgnitePruningHandler(trial, metric, trainer))

        return train(self.configs, overrides, output=run_dir, seed=self.seed, quiet=True, on_engines=attach_pruning,
                     wording="command line")

    # --- the end ------------------------------------------------------------------------------

    def summary(self) -> str:
        s = self.optuna.trial.TrialState
        trials = self.study.get_trials(deepcopy=False)
        count = {state: sum(t.state == state for t in trials) for state in (s.COMPLETE, s.PRUNED, s.FAIL, s.RUNNING,
                                                                                 s.WAITING)}
        lines = [f"[tune] study {self.args.study!r} in {self.url}: {len(trials)} trials ({count[s.COMPLETE]} complete, "
                 f"{count[s.PRUNED]} pruned, {count[s.FAIL]} failed, {count[s.RUNNING]} running, "
                 f"{count[s.WAITING]} waiting)"]
        complete = [t for t in trials if t.state == s.COMPLETE]
        if not complete:
            return "\n".join(lines + ["[tune] no trial has completed yet"])
        best = max(complete, key=lambda t: (t.value, -t.number))
        chosen = [f"{d.key}={format_value(best.params[d.key])}" for d in self.space if d.key in best.params]
        final = Path(f"{self.root}_final")
        sweep = ["adarand-sweep", *map(str, self.configs), *self.overrides, *chosen, "--seeds",
                 *map(str, self.args.final_seeds), "--root", str(final)]
        metric = best.user_attrs.get("metric", "accuracy")
        unit = " %" if metric == "accuracy" else ""
        label = metric_label(best.user_attrs.get("task", "classification"), metric).removesuffix(" (%)")
        shown = describe([(d.key, best.params[d.key]) for d in self.space if d.key in best.params])
        lines += [f"[tune] best: trial {best.number}, val {label} {100 * best.value:.2f}{unit} (test "
                  f"{100 * best.user_attrs.get('test_accuracy', float('nan')):.2f}{unit}, {best.user_attrs.get('run_dir')}): "
                  f"{shown}",
                  f"[tune] its final table over seeds: {shlex.join(sweep)} && adarand-table {final}"]
        return "\n".join(lines)


def changed_leaves(before, after, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted key, before, after) for each leaf that differs between two nested dicts
    (``space.method.lambda.high``), a missing one shown as None."""
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for k in list(before) + [k for k in after if k not in before]:
            out += changed_leaves(before.get(k), after.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if before == after else [(prefix, before, after)]


def describe(values: list[tuple[str, object]]) -> str:
    """The trial's values as overrides, rounded for reading (``method.alpha=0.3``)."""
    return " ".join(f"{k}={display_value(v)}" for k, v in values)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TuneWorker(submitit.helpers.Checkpointable):
    """A worker of the study as a Slurm job (submitit): the loop of a local worker, over the same
    command line. A requeued job starts the loop again; the trial it was running is retried in its
    folder once its heartbeat is stale."""

    def __init__(self, argv: list[str], index: int):
        self.argv, self.index = argv, index

    def __call__(self) -> None:
        Study(parse_args(self.argv), require_optuna(), worker=self.index).work()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("ignite").setLevel(logging.CRITICAL)  # a pruned trial stops its engine by an exception
    logging.getLogger("ignite.distributed.launcher.Parallel").setLevel(logging.WARNING)
    try:
        optuna = require_optuna()
        study = Study(args, optuna, worker=args.worker_index or 0)
        if args.summary:
            print(study.summary())
            return 0
        if args.worker_index is not None:  # one of several local workers: trials only
            study.work()
            return 0
        if args.launcher != "local":
            return submit_workers(args, argv)
        others = [subprocess.Popen([sys.executable, "-m", "adarand.experiments.tune", *argv, "--worker-index", str(i)])
                  for i in range(1, args.workers)]
        study.work()
        codes = [p.wait() for p in others]
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Interrupted):
        print(f"\n[tune] interrupted; the same command continues the study (a stopped trial continues in its folder): "
              f"adarand-tune {shlex.join(argv)}", file=sys.stderr)
        return 130
    print(study.summary())
    if any(codes):
        print(f"[tune] {sum(c != 0 for c in codes)} worker(s) failed (exit codes {codes})", file=sys.stderr)
        return 1
    return 0


def submit_workers(args: argparse.Namespace, argv: list[str]) -> int:
    executor = cluster_executor(args, Path(args.root), name="adarand-tune")
    jobs = [executor.submit(TuneWorker(argv, i)) for i in range(args.workers)]
    print(f"[tune] {len(jobs)} workers submitted (jobs {', '.join(j.job_id for j in jobs)}); logs under "
          f"{Path(args.root) / 'submitit'}; the best trial so far: adarand-tune {shlex.join(argv)} --summary", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
