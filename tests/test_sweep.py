"""adarand-sweep through submitit: one job per run, and a requeued job continues its run."""

import json

import submitit

import adarand
from adarand.experiments.cluster import RunJob
from adarand.experiments.sweep import main as sweep_main

from conftest import write_tiny_config


def test_jobs_through_submitit_and_a_requeued_job_continues(tmp_path, capsys):
    cfg = write_tiny_config(tmp_path, "finetune")
    root = tmp_path / "sweep"
    assert sweep_main([str(cfg), "train.epochs=2", "--seeds", "1", "--root", str(root),
                       "--launcher", "submitit-local", "--wait"]) == 0
    assert json.loads((root / "finetune-epochs2" / "seed1" / "results.json").read_text())["seed"] == 1
    out = capsys.readouterr().out
    assert "1 run ok, 0 failed" in out and "1/1 finetune-epochs2 seed 1: test " in out
    # done runs are skipped
    assert sweep_main([str(cfg), "train.epochs=2", "--seeds", "1", "--root", str(root), "--launcher", "local"]) == 0
    assert "1 done, 0 to continue, 0 to start" in capsys.readouterr().out

    # a requeued job: submitit resubmits what the job's checkpoint() returns, the same call, and
    # that call continues the run its first attempt left (here stopped after epoch 1)
    out = tmp_path / "preempted"
    adarand.train(cfg, ["train.epochs=3", "train.stop_after=1"], output=out, quiet=True)
    first = RunJob([str(cfg)], ["train.epochs=3"], 0, str(out))
    requeued = first.checkpoint()
    assert isinstance(requeued, submitit.helpers.DelayedSubmission) and requeued.function is first
    executor = submitit.AutoExecutor(folder=tmp_path / "jobs", cluster="local")
    executor.update_parameters(timeout_min=10)
    job = executor.submit(requeued.function, *requeued.args, **requeued.kwargs)
    results = job.result()
    assert results["epochs"] == 3 and json.loads((out / "results.json").read_text()) == {
        k: v for k, v in results.items() if k != "run_dir"}
    assert f"continuing the run in {out} from last_checkpoint_" in job.stderr()
