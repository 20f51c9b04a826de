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
