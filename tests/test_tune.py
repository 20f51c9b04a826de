"""adarand-tune: Optuna studies whose trials are ordinary run folders, that continue after a kill,
share a SQLite storage between workers without running a trial twice, and prune through Optuna's
Ignite handler."""

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

import yaml
from adarand.experiments import tune

from conftest import write_tiny_config

SPACE = """
method.lambda: {type: float, low: 0.01, high: 10.0, log: true}
method.alpha: {type: float, low: 0.1, high: 0.9}
"""


def load(root, name):
    """The study by its name: the config's, unless --study-name gives another."""
    return optuna.load_study(study_name=name, storage=f"sqlite:///{root / 'study.db'}")


def check_trials_are_their_folders(root, n, name):
    """n trials counted, each complete one an ordinary finished run folder of its own values."""
    study = load(root, name)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == n
    folders = [t.user_attrs["run_dir"] for t in done]
    assert len(set(folders)) == n and sorted(p.name for p in root.glob("trial*")) == sorted(
        os.path.basename(f) for f in folders)
    for t in done:
        folder = root / os.path.basename(t.user_attrs["run_dir"])
        res = json.loads((folder / "results.json").read_text())
        assert t.value == res["val_accuracy"] and t.user_attrs["test_accuracy"] == res["test_accuracy"]
        saved = yaml.safe_load((folder / "config.yaml").read_text())
        assert saved["method"]["lambda"] == t.params["method.lambda"] and saved["method"]["alpha"] == t.params["method.alpha"]
    assert len({(t.params["method.lambda"], t.params["method.alpha"]) for t in done}) == n
    return study


def test_a_study_of_four_trials_continues_after_a_kill(tmp_path, cache_dir, capsys):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    root = tmp_path / "study"
    argv = ["demo_adarand", "train.epochs=1", "data.use_ratio=0.3", f"cache_dir={cache_dir}", "--space", str(space),
            "--trials", "4", "--root", str(root), "--pruner", "none", "--sampler-seed", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "adarand.experiments.tune", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 180
    while not list(root.glob("trial*/results.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 1 <= len(list(root.glob("trial*/results.json"))) < 4
    assert tune.main(argv) == 0  # the same command
    out = capsys.readouterr().out
    study = check_trials_are_their_folders(root, 4, "demo_adarand")
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    # a trial the kill stopped is retried in its own folder (where it continues), never beside it
    for t in failed:
        retried = [r for r in study.trials if r.system_attrs.get("failed_trial") == t.number]
        assert len(retried) == 1 and retried[0].user_attrs["run_dir"] == t.user_attrs["run_dir"]
        assert f"trial {t.number}: its worker" in out
    assert len(study.trials) == 4 + len(failed)
    best = max((t for t in study.trials if t.value is not None), key=lambda t: (t.value, -t.number))
    assert f"[tune] best: trial {best.number}, val accuracy {100 * best.value:.2f} %" in out
    command = out.split("its final table over seeds: ")[1].split(" && ")[0]
    assert f"method.lambda={best.params['method.lambda']!r}" in command and "--seeds 0 1 2" in command
    assert command.startswith("adarand-sweep demo_adarand train.epochs=1 data.use_ratio=0.3")
    # the study refuses to go on with other settings
    assert tune.main([*argv[:1], "train.epochs=3", *argv[2:]]) == 2
    assert "was started with other settings: overrides" in capsys.readouterr().err


def test_two_workers_share_one_sqlite_study_without_running_a_trial_twice(tmp_path):
    import submitit

    cfg = write_tiny_config(tmp_path, "adarand")
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    root = tmp_path / "study"
    argv = [str(cfg), "train.epochs=1", "--space", str(space), "--trials", "4", "--root", str(root), "--pruner", "none"]
    # one worker a local process (--workers starts those), the other a submitit job (what --launcher slurm submits)
    local = subprocess.Popen([sys.executable, "-m", "adarand.experiments.tune", *argv, "--worker-index", "1"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    executor = submitit.AutoExecutor(folder=tmp_path / "jobs", cluster="local")
    executor.update_parameters(timeout_min=10)
    job = executor.submit(tune.TuneWorker(argv, 0))
    logs = [local.communicate(timeout=300)[0]]
    job.result()
    logs.append(job.stdout())
    assert local.returncode == 0, logs
    study = check_trials_are_their_folders(root, 4, "adarand")
    assert len(study.trials) == 4  # no worker started a fifth
    lines = [line for log in logs for line in log.splitlines() if line.startswith("[tune] trial ")]
    assert sorted(int(line.split()[2].rstrip(":")) for line in lines) == [0, 1, 2, 3]  # each trial ran once


def test_an_unpromising_trial_is_pruned_by_the_ignite_handler(tmp_path, capsys):
    cfg = write_tiny_config(tmp_path, "adarand")
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    root = tmp_path / "study"
    args = tune.parse_args([str(cfg), "train.epochs=3", "--space", str(space), "--trials", "2", "--root", str(root),
                            "--prune-startup", "1", "--prune-warmup", "0"])
    study = tune.Study(args, tune.require_optuna())
    earlier = study.study.ask()  # a trial that scored 100 % at every epoch
    for epoch in (1, 2, 3):
        earlier.report(1.0, epoch)
    study.study.tell(earlier, 1.0)
    study.work()
    trial = study.study.trials[1]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert list(trial.intermediate_values) == [1] and trial.intermediate_values[1] < 1.0  # stopped after epoch 1
    folder = root / "trial0001"
    assert (folder / "config.yaml").exists() and not (folder / "results.json").exists()
    assert "trial 1: trial was pruned at 1 epoch" in capsys.readouterr().out


def test_a_bad_search_space_or_a_missing_extra_stops_before_any_trial(tmp_path, monkeypatch, capsys):
    cfg = write_tiny_config(tmp_path, "adarand")
    root = tmp_path / "study"
    space = tmp_path / "space.yaml"
    cases = {
        "method.lambda: {type: float, low: 0, high: 1, log: true}": "key 'method.lambda.low': log: true needs low > 0",
        "method.alpha: {type: float, low: 0.1, high: 1.5}": "key 'method.alpha': expected a value in [0, 1], got 1.5",
        "method.alpha: {type: uniform, low: 0.1, high: 0.5}": "key 'method.alpha.type': expected one of float, int, categorical",
        "optim.name: {type: categorical, choices: []}": "key 'optim.name.choices': expected a non-empty list",
        "method.nosuch: {type: int, low: 1, high: 2}": "key 'method.nosuch': unknown key",
    }
    for text, message in cases.items():
        space.write_text(text)
        assert tune.main([str(cfg), "--space", str(space), "--trials", "2", "--root", str(root)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (text, err)
        assert not (root / "study.db").exists()
    monkeypatch.setitem(sys.modules, "optuna_integration", None)  # as if the extra were not installed
    space.write_text(SPACE)
    assert tune.main([str(cfg), "--space", str(space), "--trials", "2", "--root", str(root)]) == 2
    assert capsys.readouterr().err.strip() == ("error: adarand-tune needs Optuna and optuna-integration "
                                               "(optuna_integration is missing): pip install 'adarand[tune]'")


@pytest.fixture(autouse=True)
def _quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.WARNING)



def test_ctrl_c_is_one_line_and_the_trial_is_retried_in_its_folder(tmp_path, cache_dir):
    space = tmp_path / "space.yaml"
    space.write_text("method.lambda: {type: float, low: 0.01, high: 10.0, log: true}\n")
    root = tmp_path / "study"
    argv = ["demo_adarand", "train.epochs=300", f"cache_dir={cache_dir}", "--space", str(space), "--trials", "1",
            "--root", str(root), "--pruner", "none", "--study-name", "lambda_search"]
    proc = subprocess.Popen([sys.executable, "-m", "adarand.experiments.tune", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (root / "trial0000" / "epochs.csv").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("[tune] interrupted; the same command continues the study"), err
    study = load(root, "lambda_search")
    (stopped, retry) = study.trials
    assert stopped.state == optuna.trial.TrialState.FAIL and retry.state == optuna.trial.TrialState.WAITING
    assert retry.system_attrs["failed_trial"] == 0 and retry.user_attrs["run_dir"] == stopped.user_attrs["run_dir"]
    assert retry.params == stopped.params


def test_printed_values_are_rounded_the_trained_ones_exact():
    from adarand.experiments.grid import format_value

    alpha = 0.1 * 3  # 0.30000000000000004, as a stepped float suggestion comes out
    assert tune.describe([("method.alpha", alpha), ("optim.name", "sgd"), ("data.batch_size", 16)]) == \
        "method.alpha=0.3 optim.name=sgd data.batch_size=16"
    assert float(format_value(alpha)) == alpha  # the override a trial trains with is the exact value


def test_errors_name_the_space_file_and_a_changed_space_shows_what_changed(tmp_path, capsys):
    cfg = write_tiny_config(tmp_path, "adarand")
    bad = tmp_path / "bad.yaml"
    bad.write_text("method.lamda: {type: float, low: 0.01, high: 10.0, log: true}\n")
    assert tune.main([str(cfg), "--space", str(bad), "--trials", "1", "--root", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {bad}: key 'method.lamda': unknown key (did you mean method.lambda?")
    bad.write_text("optm.lr: {type: float, low: 0.01, high: 0.1}\n")  # a typo in the space, not the config
    assert tune.main([str(cfg), "--space", str(bad), "--trials", "1", "--root", str(tmp_path / "s")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {bad}: key 'optm.lr': unknown key (did you mean optim?")
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    args = [str(cfg), "--space", str(space), "--trials", "1", "--root", str(tmp_path / "study")]
    tune.Study(tune.parse_args(args), tune.require_optuna())
    space.write_text(SPACE.replace("high: 10.0", "high: 5.0"))
    with pytest.raises(tune.UserError) as e:
        tune.Study(tune.parse_args(args), tune.require_optuna())
    assert "other settings: space.method.lambda.high: 10 → 5;" in str(e.value)
    assert "alpha" not in str(e.value)  # only what changed
