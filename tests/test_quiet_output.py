"""What a run prints beside its own lines: nothing at --quiet (a sweep's runs), and its TensorBoard
events read back without warnings."""

import logging

from conftest import run_cli, write_tiny_config


def test_a_quiet_run_prints_no_info_and_its_events_read_without_warnings(tmp_path, caplog):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = write_tiny_config(tmp_path, "adarand")
    out = tmp_path / "run"
    r = run_cli(cfg, "train.epochs=2", "--quiet", "--output", out)  # a process of its own, as a sweep starts it
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith("done:") and "INFO" not in r.stderr  # the prior cache's line too
    with caplog.at_level(logging.WARNING):
        events = EventAccumulator(str(out))
        events.Reload()
    assert "loss/total" in events.Tags()["scalars"]
    assert [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.WARNING] == []
