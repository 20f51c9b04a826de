"""MLflow and W&B receive what TensorBoard receives (``logging.trackers``), read back from their
offline stores: MLflow's SQLite database and W&B's offline run file."""

import json
import struct
import sys
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import yaml
from adarand import train
from adarand.core.errors import ConfigError
from adarand.engine.config import load_config
from adarand.engine.logs.tb_summary import hparams

from conftest import write_tiny_config

mlflow = pytest.importorskip("mlflow")


def tensorboard_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    ea = EventAccumulator(str(run_dir))
    ea.Reload()
    return {tag: [(s.step, s.value) for s in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}


def wandb_records(run_file: Path):
    """The protobuf records of a W&B offline run file: a 7-byte header, then LevelDB's log format
    (32 KiB blocks of chunks, each with a 7-byte header: CRC, length, type; type 1 a whole record,
    2/3/4 its first, middle and last parts)."""
    from wandb.proto import wandb_internal_pb2

    raw, pos, part, block = run_file.read_bytes(), 7, b"", 32768
    assert raw[:4] == b":W&B"
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        pos += 7
        if kind == 0:  # zero padding up to the block's end
            pos += (block - pos % block) % block
            continue
        part += raw[pos:pos + length]
        pos += length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(part)
            part = b""
            yield record


def wandb_scalars(run_dir: Path) -> tuple[dict[str, list[tuple[int, float]]], dict, set[str]]:
    """Each tag's (axis value, value) points, the run's config and its run ids, from the offline
    files of the run folder (one per attempt, in the order they were written)."""
    points, config, ids = {}, {}, set()
    files = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    for record in (r for f in files for r in wandb_records(f)):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            ids.add(record.run.run_id)
            config.update({i.key: json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "config":
            config.update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            axis = "epoch" if "epoch" in row else "iteration"
            for tag, value in row.items():
                if "/" in tag:
                    points.setdefault(tag, []).append((row[axis], value))
    config.pop("_wandb", None)
    return points, config, ids


def test_mlflow_and_wandb_get_every_scalar_the_hyperparameters_and_continue_one_run_on_resume(tmp_path):
    pytest.importorskip("wandb")
    cfg = write_tiny_config(tmp_path, "adarand")
    run_dir, store = tmp_path / "runs" / "adarand-lambda0.5" / "seed0", f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ["method.lambda=0.5", "train.epochs=2", "logging.trackers=[tensorboard, mlflow, wandb]",
              f"logging.mlflow_uri={store}", "logging.experiment=tiny"]
    assert train(cfg, common + ["train.stop_after=1"], output=run_dir, quiet=True) is None  # stopped after epoch 1
    results = train(cfg, common, output=run_dir, quiet=True)  # continued to epoch 2

    tb = tensorboard_scalars(run_dir)
    assert {"loss/total", "prior/intra", "diagnostics/feature_entropy", "val/accuracy", "lr/backbone",
            "accuracy/test"} <= set(tb)
    assert [step for step, _ in tb["val/accuracy"]] == [1, 2]
    settings = hparams(load_config([cfg], common))
    assert settings["method.lambda"] == 0.5

    client = mlflow.tracking.MlflowClient(store)
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if "adarand.sweep" in r.data.tags]  # the sweep's (ROOT/<cell>/seed<k>)
    (run,) = [r for r in runs if r is not parent]  # the continued run logged into the first one's
    assert parent.data.tags["adarand.sweep"] == str((tmp_path / "runs").resolve())
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id  # nested in its sweep
    assert {k: run.data.tags[k] for k in ("method", "dataset", "arch", "cell", "seed")} == {
        "method": "adarand", "dataset": "folder", "arch": "small_cnn", "cell": "adarand-lambda0.5", "seed": "0"}
    assert run.info.run_name == "adarand-lambda0.5/seed0" and run.info.status == "FINISHED"
    assert run.data.params == {k: str(v) for k, v in settings.items()}
    assert set(run.data.metrics) == set(tb)
    for tag, points in tb.items():
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, tag))
        assert [s for s, _ in history] == [s for s, _ in points], tag
        assert [v for _, v in history] == pytest.approx([v for _, v in points], rel=1e-6), tag
    artifacts = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "artifacts")))
    assert json.loads((artifacts / "results.json").read_text())["test_accuracy"] == results["test_accuracy"]
    assert yaml.safe_load((artifacts / "config.yaml").read_text()) == yaml.safe_load((run_dir / "config.yaml").read_text())

    wandb_points, wandb_config, ids = wandb_scalars(run_dir)
    runs = [r for f in run_dir.glob("wandb/offline-run-*/run-*.wandb") for r in wandb_records(f)
            if r.WhichOneof("record_type") == "run"]
    assert {(r.run.run_group, r.run.job_type) for r in runs} == {("adarand-lambda0.5", "adarand")}
    assert len(list(run_dir.glob("wandb/offline-run-*"))) == 2  # an offline folder per attempt ...
    assert len(ids) == 1  # ... of one W&B run: the continued attempt resumed it
    assert wandb_config == settings
    assert set(wandb_points) == set(tb)
    for tag, points in tb.items():
        assert [s for s, _ in wandb_points[tag]] == [s for s, _ in points], tag
        assert [v for _, v in wandb_points[tag]] == pytest.approx([v for _, v in points], rel=1e-6), tag


def test_tensorboard_can_be_left_out_and_a_missing_tracker_package_is_one_line(tmp_path, monkeypatch):
    cfg = write_tiny_config(tmp_path)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    results = train(cfg, ["train.epochs=1", "logging.trackers=[mlflow]", f"logging.mlflow_uri={store}"],
                    output=tmp_path / "run", quiet=True)
    assert not list((tmp_path / "run").glob("events.out.tfevents.*"))
    client = mlflow.tracking.MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("adarand").experiment_id])
    assert run.data.metrics["accuracy/test"] == pytest.approx(results["test_accuracy"])

    with pytest.raises(ConfigError, match=r"key 'logging\.trackers': a tracker is named twice"):
        load_config([cfg], ["logging.trackers=[mlflow, mlflow]"])
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if the extra were not installed
    with pytest.raises(ConfigError) as e:
        load_config([cfg], ["logging.trackers=[tensorboard, wandb]"])
    assert str(e.value) == ("command line: key 'logging.trackers': wandb needs the package wandb, which is not installed: "
                            "pip install 'adarand[wandb]'")


def test_mlflows_default_store_is_the_sweeps_root(tmp_path, monkeypatch):
    """A run of a sweep (ROOT/<cell>/seed<k>) keeps its MLflow store in ROOT, wherever the command
    was started; a run on its own, in output_root."""
    from adarand.engine.logs.trackers import mlflow_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = load_config([write_tiny_config(tmp_path, "adarand")], ["output_root=elsewhere"])
    root = tmp_path / "sweeps" / "lambda"
    assert mlflow_uri(cfg, root / "adarand-lambda0.1" / "seed2") == f"sqlite:///{root.resolve() / 'mlflow.db'}"
    assert mlflow_uri(cfg, tmp_path / "one_run") == f"sqlite:///{(tmp_path / 'elsewhere').resolve() / 'mlflow.db'}"


def test_an_unreachable_or_unwritable_store_is_one_line_before_the_run_folder(tmp_path):
    from conftest import run_main

    cfg = write_tiny_config(tmp_path, "finetune")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for uri, words in ((f"http://127.0.0.1:{free_port()}", "no MLflow server answers there within 3 s"),
                       (f"file://{tmp_path / 'store'}", "a file store, which MLflow 3 no longer writes"),
                       (f"sqlite:///{blocker / 'sub' / 'mlflow.db'}", "cannot be written")):
        out = tmp_path / f"run{len(words)}"
        start = time.time()
        r = run_main(cfg, "train.epochs=1", "logging.trackers=[mlflow]", f"logging.mlflow_uri={uri}", "--output", out)
        assert r.returncode == 2 and time.time() - start < 60
        errors = [line for line in r.stderr.splitlines() if line.strip()]
        assert len(errors) == 1 and errors[0].startswith(f"error: logging.mlflow_uri: {uri}: ") and words in errors[0]
        assert not out.exists()  # nothing half-made


def test_a_tracker_that_fails_after_training_costs_nothing_of_the_run(tmp_path):
    """An MLflow experiment whose artifact folder cannot be made: the run trains, writes its results
    and selected model, and says in one line that MLflow failed; exit 0."""
    from conftest import run_main

    cfg = write_tiny_config(tmp_path, "finetune")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    mlflow.set_tracking_uri(store)
    mlflow.create_experiment("broken", artifact_location=(blocker / "artifacts").as_uri())
    out = tmp_path / "run"
    r = run_main(cfg, "train.epochs=1", "logging.trackers=[tensorboard, mlflow]", f"logging.mlflow_uri={store}",
                 "logging.experiment=broken", "--output", out)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((out / "results.json").read_text())["epochs"] == 1
    assert list((out / "checkpoints").glob("best_model_*.pt"))
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning: MLflow failed")]
    assert len(warnings) == 1 and "results.json" in warnings[0]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there
