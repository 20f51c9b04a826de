"""kill -9 at any point of a run: the same command, run again, continues it and ends with the
numbers of a run that was never interrupted."""

import json
import os
import subprocess
import sys

import torch

from conftest import REPO, run_cli, run_main, write_tiny_config

# One run's life, killed again and again; each restart is the same command.
KILLS = [
    ("save:*/fresh-cache/priors/*", "inside the write of the prior statistics' cache: nothing saved yet"),
    ("save:*/best_model_1.pt", "inside torch.save of the first best model: no checkpoint yet"),
    ("save:*/last_checkpoint_*", "inside torch.save of the first last checkpoint (a best model on disk)"),
    ("renamed:*/last_checkpoint_*", "after the first last checkpoint's rename, before anything is removed"),
    ("save:*/last_checkpoint_*", "inside the next last checkpoint: the previous one must survive"),
    ("step:5", "in the middle of a resumed epoch"),
    ("renamed:*/last_checkpoint_*", "after a rename, two last checkpoints on disk"),
    ("save:*/results.json", "after training and the test, inside the write of results.json"),
]


def outcome(run_dir):
    results = json.loads((run_dir / "results.json").read_text())
    (best,) = list((run_dir / "checkpoints").glob("best_*.pt"))
    return results, torch.load(best, weights_only=True)


def test_a_run_killed_anywhere_continues_to_the_numbers_of_an_uninterrupted_run(tmp_path):
    one_thread = {"OMP_NUM_THREADS": "1"}  # the killed attempts are forked, which wants one thread
    cfg = write_tiny_config(tmp_path, "adarand")
    plain = tmp_path / "plain"
    r = run_cli(cfg, "train.epochs=3", "--output", plain, env_extra=one_thread)
    assert r.returncode == 0, r.stderr[-2000:]
    expected, expected_best = outcome(plain)

    run_dir = tmp_path / "killed"
    command = [str(cfg), "train.epochs=3", f"cache_dir={tmp_path / 'fresh-cache'}", "--output", str(run_dir)]
    r = subprocess.run([sys.executable, str(REPO / "tests" / "kill_at.py"), *(p for p, _ in KILLS), "--", *command],
                       capture_output=True, text=True, timeout=600, cwd=REPO, env={**os.environ, **one_thread})
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [line for line in r.stdout.splitlines() if ": killed;" in line or ": exited" in line]
    assert len(lines) == len(KILLS), r.stdout + r.stderr[-3000:]
    for line, (point, where) in zip(lines, KILLS, strict=True):
        assert line.startswith(f"{point}: killed;"), f"{where}: {line}"
    # what each kill left: the newest last checkpoint loads and so does the best model it names
    left = [line.split("; ", 1)[1] for line in lines]
    assert left[:3] == ["no last checkpoint"] * 3
    assert left[3:6] == ["last_checkpoint_4.pt loads, with best_model_1.pt"] * 3  # epoch 2's save was killed
    assert left[6].startswith("last_checkpoint_8.pt loads, with best_model_")
    assert left[7] == f"last_checkpoint_12.pt loads, with best_model_{expected['best_epoch']}.pt"
    assert not (run_dir / "results.json").exists()
    assert list(run_dir.rglob("*.tmp")), "the kills inside a write leave temporary files"
    r = run_cli(*command, env_extra=one_thread)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "continuing the run" in r.stderr  # the last kill came after training: only the test was left

    results, best = outcome(run_dir)
    for key in ("best_epoch", "val_accuracy", "val_loss", "test_accuracy", "test_loss"):
        assert results[key] == expected[key], key
    assert best.keys() == expected_best.keys()
    for k, v in best.items():
        assert torch.equal(v, expected_best[k]), k
    assert not list(run_dir.rglob("*.tmp"))
    assert len(list((run_dir / "checkpoints").glob("last_checkpoint_*.pt"))) == 1

    # finished: the same command again is refused
    r = run_main(*command)
    assert r.returncode == 2 and "the run has finished" in r.stderr
