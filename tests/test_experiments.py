"""Experiments that never mix settings: sweep folders named by their overrides and checked against
the run asked for, grids planned and validated before anything runs, and run folders that refuse
another experiment."""

import json

import pytest

import yaml
from adarand.experiments.grid import folder_label, grid_points
from adarand.experiments.sweep import main as sweep_main

from conftest import run_main, write_tiny_config


def test_a_sweep_with_other_overrides_trains_its_own_runs_and_refuses_a_changed_config(tmp_path, capsys):
    cfg = write_tiny_config(tmp_path, "adarand")
    root = tmp_path / "sweep"
    common = [str(cfg), "train.epochs=1", "--seeds", "0", "--root", str(root)]
    assert sweep_main([*common, "method.lambda=0.1"]) == 0
    first = capsys.readouterr().out
    assert "1 to start" in first and "1/1 adarand-epochs1-lambda0.1 seed 0: test " in first
    # the same command with lambda = 1.0 and the same root trains a run of its own
    assert sweep_main([*common, "method.lambda=1.0"]) == 0
    second = capsys.readouterr().out
    assert "0 done, 0 to continue, 1 to start" in second and "1 run ok, 0 failed" in second
    saved = yaml.safe_load((root / "adarand-epochs1-lambda1.0" / "seed0" / "config.yaml").read_text())
    assert saved["method"]["lambda"] == 1.0
    assert json.loads((root / "adarand-epochs1-lambda1.0" / "seed0" / "results.json").read_text())["seed"] == 0
    # the first again: skipped as done, since its folder holds exactly that run
    assert sweep_main([*common, "method.lambda=0.1"]) == 0
    assert "1 done, 0 to continue, 0 to start" in capsys.readouterr().out

    # the config file changed under the same name: its folders hold another experiment, nothing runs
    text = cfg.read_text().replace("lr: 0.05", "lr: 0.02")
    cfg.write_text(text)
    before = sorted(p.name for p in (root / "adarand-epochs1-lambda0.1" / "seed0").iterdir())
    assert sweep_main([*common, "method.lambda=0.1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds a run of another config, which differs in optim.lr (run: 0.05, now: 0.02)" in err[0]
    assert sorted(p.name for p in (root / "adarand-epochs1-lambda0.1" / "seed0").iterdir()) == before


def test_a_grid_is_planned_and_validated_before_any_run_starts(tmp_path, capsys):
    cfg = write_tiny_config(tmp_path, "adarand")
    root = tmp_path / "grid"
    args = [str(cfg), "method.lambda=[0,0.1,0.3]", "method.alpha=[0.5,0.7]", "optim.milestones=[2,4]",
            "--seeds", "0", "1", "--root", str(root)]
    assert sweep_main([*args, "--plan"]) == 0
    out = capsys.readouterr().out
    assert "plan: 12 runs (6 configs x 2 seeds)" in out and "0 done, 0 to continue, 12 to start" in out
    for lam in ("0", "0.1", "0.3"):
        for alpha in ("0.5", "0.7"):
            assert f"{root}/adarand-lambda{lam}-alpha{alpha}-milestones2_4: seeds 0 1 (new 2)" in out
    assert not root.exists()
    # one bad point of the product: nothing starts, the error names the key and the value
    assert sweep_main([str(cfg), "method.lambda=[0.1,-1]", "--seeds", "0", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert "key 'method.lambda'" in err and "-1" in err and "Traceback" not in err
    assert not root.exists()
    # a misspelt base, and a '+' inside --bases: checked up front
    assert sweep_main(["--bases", str(tmp_path / "nosuch.yaml"), "--methods", str(cfg), "--root", str(root)]) == 2
    assert "nosuch.yaml: no such config file" in capsys.readouterr().err
    assert sweep_main(["--bases", f"{cfg}+{cfg}", "--methods", str(cfg), "--root", str(root), "--plan"]) == 0
    assert "adarand-adarand-adarand: seeds" in capsys.readouterr().out


def test_a_method_without_the_swept_parameter_is_the_grids_baseline(tmp_path, capsys):
    ft, ada = write_tiny_config(tmp_path, "finetune"), write_tiny_config(tmp_path, "adarand")
    root = tmp_path / "grid"
    assert sweep_main([str(ft), str(ada), "method.lambda=[0.1,1]", "--seeds", "0", "--root", str(root), "--plan"]) == 0
    out = capsys.readouterr().out
    assert "method.lambda is not a parameter of finetune: those run once per seed" in out
    assert "plan: 3 runs (3 configs x 1 seed)" in out and f"{root}/finetune: seeds 0 (new 1)" in out
    # a plain override of a key the method lacks, or an axis no config has, stays an error
    assert sweep_main([str(ft), str(ada), "method.lambda=0.1", "--root", str(root), "--plan"]) == 2
    assert "key 'method.lambda': not a parameter of finetune" in capsys.readouterr().err
    assert sweep_main([str(ft), "method.lambda=[0.1,1]", "--root", str(root), "--plan"]) == 2
    assert "not a parameter of the method of any config (finetune)" in capsys.readouterr().err


def test_grid_points_and_labels():
    # a list for a key that holds no list is an axis; for a list key a list of lists is
    points = grid_points(["method.lambda=[0,0.5]", "optim.milestones=[2,4]", "train.epochs=3"], "adarand")
    assert points == [["method.lambda=0", "optim.milestones=[2,4]", "train.epochs=3"],
                      ["method.lambda=0.5", "optim.milestones=[2,4]", "train.epochs=3"]]
    assert grid_points(["optim.milestones=[[2,4],[3,6]]"], "finetune") == [["optim.milestones=[2, 4]"],
                                                                         ["optim.milestones=[3, 6]"]]
    assert len(grid_points(["method.name=[fnp,adarand]", "method.lambda=[0.1,1]"], "finetune")) == 4
    assert folder_label(["method.lambda=0.1", "data.num_workers=2"], ("data.num_workers",)) == "lambda0.1"
    assert folder_label(["method.name=fnp", "optim.lr=0.1", "method.lr=2"]) == "fnp-optim_lr0.1-method_lr2"
    # characters that cannot be spelt in a folder name, or a long label: a hash of the overrides beside it
    a, b = folder_label(["data.root=/a/b"]), folder_label(["data.root=/a_b"])
    assert a != b and a.startswith("roota_b-") and len(a.split("-")[-1]) == 8
    long = folder_label([f"method.k{i}={i}" * 1 for i in range(30)])
    assert len(long) <= 60 and long != folder_label([f"method.k{i}={i}" for i in range(31)])


def test_packaged_names_and_patterns_plan_the_demo_table_from_any_folder(tmp_path, monkeypatch, capsys):
    """The README's demo-table command works where no yaml/ folder is (an installed wheel)."""
    monkeypatch.chdir(tmp_path)
    assert sweep_main(["--bases", "base/digits_small_cnn", "--methods", "methods/*",
                       "method.source_root=[sklearn_digits:source]", "method.select_classes=[3]", "--seeds", "0",
                       "--root", str(tmp_path / "table"), "--plan"]) == 0
    out = capsys.readouterr().out
    assert "plan: 18 runs (18 configs x 1 seed)" in out and "digits_small_cnn-uot" in out
    with pytest.raises(SystemExit) as stopped:  # as argparse stops on a bad argument
        sweep_main(["--bases", "base/digits_small_cnn", "--methods", "methods/nothing*", "--seeds", "0",
                    "--root", str(tmp_path / "t"), "--plan"])
    assert stopped.value.code == 2
    assert "methods/nothing*: matches no packaged config" in capsys.readouterr().err


def test_a_second_sweep_into_a_busy_root_is_refused_in_one_line(tmp_path, capsys):
    from adarand.core.folder_lock import FolderLock

    cfg = write_tiny_config(tmp_path, "finetune")
    root = tmp_path / "root"
    first = FolderLock(root)  # what a running sweep holds
    first.acquire()
    try:
        assert sweep_main([str(cfg), "train.epochs=1", "--seeds", "0", "--root", str(root)]) == 2
    finally:
        first.release()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {root}: another adarand-sweep is running in this root")
    assert not list(root.glob("*/seed0"))  # nothing started
    again = FolderLock(root)  # the refused sweep left the root as it found it
    again.acquire()
    again.release()


def test_a_repeated_grid_value_is_named(capsys):
    assert sweep_main(["demo_adarand", "method.lambda=[0.1,0.3,0.1]", "--seeds", "0", "--root", "unused", "--plan"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("error: command line: key 'method.lambda': the grid gives the value 0.1 twice "
                           "(method.lambda=[0.1,0.3,0.1]); give each value once")


def test_output_with_another_experiment_or_a_finished_run_is_refused_up_front(tmp_path):
    cfg = write_tiny_config(tmp_path, "finetune")
    out = tmp_path / "run"
    assert run_main(cfg, "train.epochs=1", "--output", out).returncode == 0
    saved = (out / "config.yaml").read_text()
    r = run_main(cfg, "train.epochs=1", "optim.lr=0.1", "--output", out)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"error: --output: {out} holds a run of another config, which differs in optim.lr (run: 0.05, now: 0.1); "
        "choose another folder"]
    assert (out / "config.yaml").read_text() == saved
    r = run_main(cfg, "train.epochs=1", "--output", out)  # the same run, finished: refused, nothing claims to continue
    assert r.returncode == 2 and "continuing" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(f"error: {out}: the run has finished, nothing left to train")


def test_ctrl_c_in_a_sweep_says_what_finished_and_the_command_that_continues_it(tmp_path, capsys):
    """Ctrl-C (SIGINT to the terminal's process group: the sweep and its run) once the first of two
    runs has written its results: one line, no traceback, and the command that continues."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO

    cfg = write_tiny_config(tmp_path)
    root = tmp_path / "sweep"
    args = [str(cfg), "train.epochs=1", "--seeds", "0", "1", "--root", str(root)]
    sweep = subprocess.Popen([sys.executable, "-c", "import sys; from adarand.experiments.sweep import main; "
                              "sys.exit(main(sys.argv[1:]))", *args], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    first = root / "finetune-epochs1" / "seed0" / "results.json"
    deadline = time.monotonic() + 300
    while not first.exists() and sweep.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.exists(), sweep.communicate()[1][-2000:]
    os.killpg(sweep.pid, signal.SIGINT)
    out, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "[sweep] interrupted: 1 of 2 runs finished; the same command continues the sweep (finished runs are "
        f"skipped, a stopped one continues): adarand-sweep {' '.join(args)}")
    assert not (root / "finetune-epochs1" / "seed1" / "results.json").exists()
    assert sweep_main([*args, "--plan"]) == 0  # the command it names finds the finished run done
    assert "1 done, " in capsys.readouterr().out
