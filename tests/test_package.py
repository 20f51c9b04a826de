"""The installed package: configs shipped and found by name, --list and --print-config, regularizers
from other packages by entry point, the Python API, and what a run prints."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from test_readme_example import readme_block

import adarand
import yaml
from adarand.core.config import CONFIG_DIR, resolve_config
from adarand.core.errors import ConfigError
from adarand.engine.config import load_config

from conftest import REPO, run_cli, run_main, write_tiny_config


def build_wheel(tmp_path):
    """The package's wheel, built from a copy of the repository (the build leaves nothing behind)."""
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "runs", "*.egg-info",
                                                            "__pycache__", ".pytest_cache"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(tmp_path / "wheel"), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = list((tmp_path / "wheel").glob("adarand-*.whl"))
    return wheel


def pip_install_target(what, target):
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q",
                        "--target", str(target), str(what)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


def test_a_config_is_a_file_or_a_packaged_name(tmp_path):
    assert resolve_config("demo") == CONFIG_DIR / "demo.yaml"
    assert resolve_config("methods/fnp.yaml") == CONFIG_DIR / "methods" / "fnp.yaml"
    local = tmp_path / "demo"  # a file of that name wins over the packaged one
    local.write_text("extends: [" + str(CONFIG_DIR / "demo_ft.yaml") + "]\n")
    assert resolve_config(str(local)) == local
    with pytest.raises(ConfigError, match="nosuch: no such config file, nor a packaged config of that name"):
        resolve_config("nosuch")
    cfg = load_config(["base/digits_small_cnn", "methods/fnp"])
    assert cfg.method.name == "fnp" and cfg.name == "digits_small_cnn-fnp"


def test_list_and_print_config():
    r = run_main("--list")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    configs = lines[1:lines.index("")]
    methods = lines[lines.index("methods (method.name=NAME):") + 1:]
    shipped = sorted(p.relative_to(CONFIG_DIR).with_suffix("").as_posix() for p in CONFIG_DIR.rglob("*.yaml"))
    assert [line.split()[0] for line in configs] == shipped
    assert all(len(line.split()) > 1 for line in configs + methods)  # every one has its line of description
    assert {line.split()[0] for line in methods} >= {"adarand", "finetune", "fnp", "delta", "lp_ft", "dr_tune"}

    r = run_main("demo", "train.epochs=3", "method.lambda=0.5", "--print-config")
    assert r.returncode == 0 and r.stderr == ""
    printed = yaml.safe_load(r.stdout)
    assert printed["train"]["epochs"] == 3 and printed["method"] == {**printed["method"], "name": "adarand",
                                                                       "lambda": 0.5}
    assert printed["data"]["name"] == "sklearn_digits"
    r = run_main("demo", "train.epochs=-1", "--print-config")
    assert r.returncode == 2 and "train.epochs" in r.stderr


def test_the_python_api_writes_the_command_lines_run_folder(tmp_path):
    cfg = write_tiny_config(tmp_path, "fnp")
    out = tmp_path / "run"
    results = adarand.train(cfg, {"train.epochs": 2, "method.lambda": 0.5}, output=out, quiet=True)
    assert results == {**json.loads((out / "results.json").read_text()), "run_dir": str(out)}
    assert results["method"] == "fnp" and results["epochs"] == 2
    saved = load_config(out / "config.yaml")
    assert saved.method.name == "fnp" and saved.method.params.lam == 0.5
    with pytest.raises(ConfigError) as err:  # the command line's error, raised, naming the call's argument
        adarand.train(cfg, ["optim.lr=-1"], output=tmp_path / "bad")
    cli = run_main(cfg, "optim.lr=-1", "--output", tmp_path / "bad").stderr.strip()[len("error: "):]
    assert cli.startswith("command line: key 'optim.lr'")
    assert str(err.value) == cli.replace("command line: key", "overrides: key")
    assert not (tmp_path / "bad").exists()
    assert adarand.train(cfg, ["train.epochs=3", "train.stop_after=1"], output=tmp_path / "part", quiet=True) is None


def test_a_log_file_gets_one_line_per_epoch_and_a_summary(tmp_path):
    cfg = write_tiny_config(tmp_path, "finetune")
    r = run_main(cfg, "train.epochs=3", "train.progress=true", "--output", tmp_path / "run")  # not a terminal
    assert r.returncode == 0, r.stderr[-2000:]
    assert "\r" not in r.stdout + r.stderr and "\x1b" not in r.stdout + r.stderr  # no bars, no cursor codes
    epochs = [line for line in r.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert f"val acc {100 * results['val_accuracy']:.2f} %" in epochs[results["best_epoch"] - 1]
    assert f"best {100 * results['val_accuracy']:.2f} % (epoch {results['best_epoch']})" in epochs[-1]
    assert "loss " in epochs[0] and "(ce " in epochs[0]
    summary = r.stdout.strip().splitlines()[-1]
    assert summary.startswith("done: finetune, test accuracy: ") and f"run folder {tmp_path / 'run'}" in summary
    assert "wall time" in summary
    r = run_main(cfg, "train.epochs=2", "--quiet", "--output", tmp_path / "quiet")
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1].startswith("done: finetune")
    assert not [line for line in r.stdout.splitlines() if line.startswith("epoch ")]


def test_the_wheel_ships_its_configs_and_runs_a_plugin_by_name(tmp_path):
    """From a wheel installed elsewhere: ``adarand-run demo`` from any folder, and a regularizer from
    another pip-installed package, selected by its entry-point name."""
    site = tmp_path / "site"
    pip_install_target(build_wheel(tmp_path), site)
    plugin = tmp_path / "my-regularizers"  # the README's plugin, as printed there
    plugin.mkdir()
    (plugin / "feature_mean.py").write_text(readme_block("example-regularizer", "python"))
    (plugin / "pyproject.toml").write_text(readme_block("example-plugin", "toml"))
    pip_install_target(plugin, site)
    env = {**os.environ, "PYTHONPATH": str(site)}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    r = subprocess.run([sys.executable, "-c", "import adarand; print(adarand.__file__)"], capture_output=True,
                       text=True, env=env, cwd=elsewhere)
    assert r.stdout.strip() == str(site / "adarand" / "__init__.py")  # the wheel's copy, not the repository
    r = subprocess.run([str(site / "bin" / "adarand-run"), "demo", "train.epochs=2", f"cache_dir={tmp_path / 'c'}",
                        "--output", "out"], capture_output=True, text=True, env=env, cwd=elsewhere, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((elsewhere / "out" / "results.json").read_text())["method"] == "adarand"

    cfg = write_tiny_config(tmp_path, "feature_mean")
    r = run_cli(cfg, "method.lambda=0.5", "--output", tmp_path / "p", env_extra={"PYTHONPATH": str(site)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "p" / "results.json").read_text())["method"] == "feature_mean"
    assert "feature_mean " in r.stdout.splitlines()[0]  # its loss term is trained and logged
    assert yaml.safe_load((tmp_path / "p" / "config.yaml").read_text())["method"] == {"name": "feature_mean",
                                                                                 "lambda": 0.5}
    listed = subprocess.run([sys.executable, str(REPO / "run.py"), "--list"], capture_output=True, text=True, env=env)
    assert "feature_mean" in listed.stdout and "Pulls the batch's mean feature towards zero" in listed.stdout
