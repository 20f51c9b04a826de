"""A resumed run refuses a config that differs from the one it was trained with, except in the
keys meant to change."""

from adarand.engine.state import config_differences

from conftest import run_cli, run_main, write_tiny_config


def test_config_differences_by_hand():
    run = {"seed": 0, "train": {"epochs": 3, "progress": True}, "method": {"name": "fnp", "lambda": 1.0}}
    now = {"seed": 1, "train": {"epochs": 9, "progress": False}, "method": {"name": "fnp", "lambda": 0.5}}
    assert config_differences(run, now) == ["method.lambda (run: 1.0, now: 0.5)", "seed (run: 0, now: 1)"]
    assert config_differences(run, run) == []


def test_resume_refuses_a_changed_config_and_accepts_the_keys_meant_to_change(tmp_path):
    cfg = write_tiny_config(tmp_path, "fnp")
    out = tmp_path / "run"
    r = run_cli(cfg, "train.epochs=3", "train.stop_after=1", "--output", out)
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_main(out / "config.yaml", "method.lambda=0.5", "data.batch_size=2", "--seed", "5", "--resume", out)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert "--resume: the config differs from the run's in" in line
    for key in ("data.batch_size (run: 4, now: 2)", "method.lambda (run: 1.0, now: 0.5)", "seed (run: 0, now: 5)"):
        assert key in line
    # a changed model width stops here too, not with a size-mismatch traceback
    r = run_main(out / "config.yaml", "model.width=8", "--resume", out)
    assert r.returncode == 2 and "model.width (run: 4, now: 8)" in r.stderr
    # what a resumed run may change
    r = run_main(out / "config.yaml", "train.stop_after=null", "train.epochs=4", "train.log_every=1", "--resume", out)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "results.json").exists()
