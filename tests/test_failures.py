"""Runs that cannot produce a meaningful result stop with one line and their own exit code."""

from conftest import run_cli, write_tiny_config


def test_a_non_finite_loss_stops_with_one_line_and_exit_code_3(tmp_path):
    out = tmp_path / "run"
    r = run_cli(write_tiny_config(tmp_path, "finetune"), "optim.lr=1e30", "train.epochs=3", "--output", out)
    assert r.returncode == 3, r.stderr[-2000:]
    lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert "the loss is not finite at iteration" in lines[0] and "loss_ce" in lines[0]
    assert not (out / "results.json").exists()
    assert "--resume" not in r.stdout + r.stderr  # resuming would meet the same numbers


def test_a_dataset_with_one_class_is_refused_before_training(tmp_path):
    out = tmp_path / "run"
    r = run_cli(write_tiny_config(tmp_path, "finetune", counts={0: 12}), "--output", out)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "has 1 class (class0); classification needs at least two" in r.stderr.strip().splitlines()[-1]
    assert not out.exists()


def test_ctrl_c_gives_one_line_exit_130_and_a_run_that_continues(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    import torch

    from conftest import REPO

    out = tmp_path / "run"
    cfg = write_tiny_config(tmp_path, "adarand")
    proc = subprocess.Popen([sys.executable, str(REPO / "run.py"), str(cfg), "train.epochs=60", "--output", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list((out / "checkpoints").glob("last_*.pt")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("interrupted at epoch")
    if "nothing was saved" in line:  # Ctrl-C inside Checkpoint's rotation (it removes before it writes; issue 14)
        assert not list((out / "checkpoints").glob("last_*.pt"))
        return
    assert f"--resume {out}" in line
    (last,) = list((out / "checkpoints").glob("last_*.pt"))
    assert "trainer" in torch.load(last, weights_only=True)  # the last checkpoint is intact
    command = line.split("continue from the end of epoch ")[1].split(" with: ")[1].split()
    r = subprocess.run([sys.executable, str(REPO / "run.py"), *command[2:]], capture_output=True, text=True,
                       timeout=600, env=dict(os.environ))
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "results.json").exists()
