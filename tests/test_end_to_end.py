"""The demo end to end (reduced budget) and --resume equivalence, through the command line."""

import json
import math

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from adarand.engine.config import load_config
from adarand.engine.logs.epoch_log import read_epoch_log

from conftest import REPO, run_cli, run_main

DEMO = REPO / "yaml" / "demo_adarand.yaml"


def scalars(run_dir):
    ea = EventAccumulator(str(run_dir))
    ea.Reload()
    return {tag: [(s.step, s.value) for s in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}


def test_demo_end_to_end(tmp_path, cache_dir):
    out = tmp_path / "run"
    r = run_cli(DEMO, "train.epochs=5", "train.log_every=2", "data.use_ratio=0.3", f"cache_dir={cache_dir}",
                "--output", out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "test accuracy:" in r.stdout and f"tensorboard --logdir {out}" in r.stdout
    res = json.loads((out / "results.json").read_text())
    for key in ("best_epoch", "val_accuracy", "test_accuracy", "seed", "versions", "wall_time_s", "time_per_epoch_s"):
        assert key in res
    assert 1 <= res["best_epoch"] <= 5 and 0.0 <= res["test_accuracy"] <= 1.0
    assert res["test_accuracy"] > 0.5  # five classes: chance is 0.2; the pretrained extractor transfers
    assert res["versions"]["torch"] == torch.__version__
    # the resolved config is a valid config
    assert load_config(out / "config.yaml").method.name == "adarand"
    # checkpoints: best by val accuracy and last, plain tensors (weights_only)
    best = list((out / "checkpoints").glob("best_model_*.pt"))
    last = list((out / "checkpoints").glob("last_checkpoint_*.pt"))
    assert len(best) == 1 and len(last) == 1
    state = torch.load(last[0], weights_only=True)
    assert {"trainer", "model", "optimizer", "lr_scheduler", "regularizer", "rng"} <= set(state)
    assert state["regularizer"]["mu"].shape == (5, 128) and best[0].name == f"best_model_{res['best_epoch']}.pt"
    # the prior statistics were cached
    assert len(list((cache_dir / "priors").glob("*.pt"))) >= 1
    tags = scalars(out)
    for tag in ("diagnostics/feature_norm", "diagnostics/grad_norm", "diagnostics/feature_entropy",
                "diagnostics/mutual_info", "loss/ce", "loss/reg", "loss/total", "prior/ada", "prior/intra",
                "loss_per_epoch/reg", "val/accuracy", "val/loss", "accuracy/test", "accuracy/best_val",
                "lr/backbone", "lr/head", "lr/prior"):
        assert tag in tags, (tag, sorted(tags))
    epochs = [1, 2, 3, 4, 5]  # per-epoch groups on an epoch axis, per-iteration ones on an iteration axis
    for tag in ("diagnostics/feature_entropy", "diagnostics/grad_norm", "loss_per_epoch/ce", "val/accuracy"):
        assert [s for s, _ in tags[tag]] == epochs, tag
    assert all(math.isfinite(v) for _, v in tags["diagnostics/mutual_info"])
    for tag in ("loss/ce", "prior/ada", "iteration/feature_norm", "lr/backbone"):
        assert [s for s, _ in tags[tag]][:2] == [2, 4], tag
    best_epoch = res["best_epoch"]  # the selected model's accuracies, at its epoch
    assert tags["accuracy/test"] == [(best_epoch, pytest_approx(res["test_accuracy"]))]
    assert tags["accuracy/best_val"] == [(best_epoch, pytest_approx(res["val_accuracy"]))]
    assert tags["val/accuracy"][best_epoch - 1][1] == pytest_approx(res["val_accuracy"])
    # the resolved config as text, the HParams row, and the last epoch's features as an embedding
    ea = EventAccumulator(str(out))
    ea.Reload()
    assert "config/text_summary" in ea.Tags()["tensors"]
    # every chart says its x axis (TensorBoard shows the description beside the chart's title)
    for tag, axis in (("diagnostics/feature_norm", "epoch"), ("diagnostics/mutual_info", "epoch"),
                      ("loss_per_epoch/ce", "epoch"), ("val/accuracy", "epoch"), ("accuracy/test", "epoch"),
                      ("loss/ce", "iteration"), ("prior/ada", "iteration"), ("lr/backbone", "iteration"),
                      ("iteration/feature_norm", "iteration")):
        assert ea.SummaryMetadata(tag).summary_description.startswith(f"x axis: {axis}. "), tag
    assert all(ea.SummaryMetadata(tag).summary_description.startswith(("x axis: epoch. ", "x axis: iteration. "))
               for tag in tags), {tag: ea.SummaryMetadata(tag).summary_description for tag in tags}
    hparams_tags = ea.PluginTagToContent("hparams")
    # a session (start and end), and no experiment summary, which would stand for every run in a sweep
    assert set(hparams_tags) == {"_hparams_/session_start_info", "_hparams_/session_end_info"}
    start = plugin_data_pb2.HParamsPluginData.FromString(
        hparams_tags["_hparams_/session_start_info"]).session_start_info.hparams
    assert start["method.name"].string_value == "adarand" and start["seed"].number_value == 0
    assert start["optim.lr"].number_value == pytest_approx(0.01) and "method.alpha" in start
    projector = (out / "projector_config.pbtxt").read_text()
    assert 'tensor_name: "train_features:' in projector
    folder = out / "00005" / "train_features"
    rows = (folder / "tensors.tsv").read_text().splitlines()
    labels = (folder / "metadata.tsv").read_text().splitlines()
    classes = [f"digit{c}" for c in range(5, 10)]  # the projector labels points by class name
    assert len(rows) == len(labels) > 0 and len(rows[0].split("\t")) == 128 and set(labels) <= set(classes)
    # the per-epoch record beside the events: the same numbers as the epoch charts
    log = read_epoch_log(out / "epochs.csv")
    assert [row["epoch"] for row in log] == epochs
    for column, tag in (("feature_norm", "diagnostics/feature_norm"), ("mutual_info", "diagnostics/mutual_info"),
                        ("loss_ce", "loss_per_epoch/ce"), ("val_accuracy", "val/accuracy")):
        assert [row[column] for row in log] == [pytest_approx(v) for _, v in tags[tag]], column
    # the selected model's test features for Figure 3: evenly spaced test images, float16, class names
    kept = torch.load(out / "test_features.pt", weights_only=True)
    n_test = len([p for p in (cache_dir / "digits" / "target" / "test").rglob("*") if p.is_file()])
    assert kept["classes"] == classes and kept["features"].dtype == torch.float16
    assert kept["features"].shape == (min(1024, n_test), 128) and kept["labels"].shape == (min(1024, n_test),)
    assert sorted(set(kept["labels"].tolist())) == [0, 1, 2, 3, 4]


def pytest_approx(x):
    import pytest
    return pytest.approx(x, rel=1e-6)


def test_resume_gives_the_same_numbers(tmp_path, cache_dir):
    common = [DEMO, "train.epochs=3", "optim.milestones=[2]", "train.log_every=1", f"cache_dir={cache_dir}",
              "train.progress=false"]
    full, part = tmp_path / "full", tmp_path / "part"
    r = run_main(*common, "--output", full)
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_main(*common, "train.stop_after=1", "--output", part)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "stopped after epoch 1" in r.stdout and not (part / "results.json").exists()
    # the command it prints: the run's resolved config, no stop, --resume
    assert f"adarand-run {part / 'config.yaml'} train.stop_after=null --resume {part}" in r.stdout
    r = run_main(part / "config.yaml", "train.stop_after=null", "--resume", part)
    assert r.returncode == 0, r.stderr[-3000:]
    a = json.loads((full / "results.json").read_text())
    b = json.loads((part / "results.json").read_text())
    for key in ("best_epoch", "val_accuracy", "test_accuracy", "test_loss"):
        assert a[key] == b[key], key
    assert len(list((part / "checkpoints").glob("last_*.pt"))) == 1  # the resumed-from one is replaced
    last_a = torch.load(next((full / "checkpoints").glob("last_*.pt")), weights_only=True)
    last_b = torch.load(next((part / "checkpoints").glob("last_*.pt")), weights_only=True)
    for k, v in last_a["model"].items():
        assert torch.equal(v, last_b["model"][k]), k
    for k in ("mu", "mu_bar", "sigma"):
        assert torch.equal(last_a["regularizer"][k], last_b["regularizer"][k]), k
    assert last_b["trainer"]["iteration"] == last_a["trainer"]["iteration"] > 0
    assert len(last_b["record"]["epoch_times"]) == 3
    # every curve of the resumed run continues where the first segment stopped: the same points
    ta, tb = scalars(full), scalars(part)
    assert set(ta) == set(tb)
    for tag in ta:
        assert [s for s, _ in ta[tag]] == [s for s, _ in tb[tag]], tag
    assert [v for _, v in ta["val/accuracy"]] == [v for _, v in tb["val/accuracy"]]
    # a finished run has nothing left to resume
    r = run_main(*common, "--resume", part)
    assert r.returncode == 2 and "nothing left to train" in r.stderr and "Traceback" not in r.stderr
