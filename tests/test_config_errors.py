"""Every config error gives one line naming the file and the key, a non-zero exit, no traceback,
and leaves no run folder behind."""

import pytest

from adarand.core.errors import ConfigError
from adarand.engine.config import load_config

from conftest import REPO, run_main

BASE = """data:
  root: /nonexistent
model:
  arch: small_cnn
"""


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


CASES = [
    # (file text, overrides, expected fragments of the message)
    ("data: [1, 2\nmodel: {}\n", [], ["bad.yaml", "malformed YAML at line"]),
    (BASE + "trian:\n  epochs: 3\n", [], ["bad.yaml", "key 'trian'", "unknown key"]),
    (BASE + "train:\n  epochs: three\n", [], ["bad.yaml", "key 'train.epochs'", "expected an integer", "'three'"]),
    (BASE + "optim:\n  lr: [1]\n", [], ["bad.yaml", "key 'optim.lr'", "expected a number"]),
    (BASE + "optim:\n  scheduler: linear\n", [], ["bad.yaml", "key 'optim.scheduler'", "one of"]),
    ("data:\n  batch_size: 4\nmodel:\n  arch: small_cnn\n", [], ["bad.yaml", "key 'data.root'", "required"]),
    ("data:\n  root: x\n", [], ["bad.yaml", "key 'model'", "required"]),
    (BASE + "method:\n  name: nosuch\n", [], ["bad.yaml", "key 'method.name'", "unknown method", "adarand", "finetune"]),
    (BASE + "method:\n  name: adarand\n  lamda: 1.0\n", [], ["bad.yaml", "key 'method.lamda'", "lambda"]),
    (BASE + "method:\n  name: adarand\n  alpha: 2.0\n", [], ["bad.yaml", "key 'method.alpha'", "[0, 1]"]),
    (BASE + "method:\n  name: adarand\n  intra: maybe\n", [], ["bad.yaml", "key 'method.intra'", "boolean"]),
    (BASE, ["train.epochs=x"], ["command line", "key 'train.epochs'", "expected an integer"]),
    (BASE, ["train.nosuch=1"], ["command line", "key 'train.nosuch'", "unknown key"]),
    (BASE, ["train.epochs"], ["command line", "expected key.path=value"]),
    ("- a\n- b\n", [], ["bad.yaml", "expected a mapping"]),
    (BASE + "model:\n  arch: resnet18\n", [], ["bad.yaml", "malformed YAML at line 5", "duplicate key 'model'"]),
    ("data: !!python/object:os.system {}\n", [], ["bad.yaml", "malformed YAML"]),
    # values checked when the config loads: finite numbers, ranges, positive sizes, sorted milestones
    (BASE + "optim:\n  lr: -0.1\n", [], ["bad.yaml", "key 'optim.lr'", "greater than 0", "-0.1"]),
    (BASE + "optim:\n  lr: 0\n", [], ["bad.yaml", "key 'optim.lr'", "greater than 0"]),
    (BASE + "optim:\n  lr: .nan\n", [], ["bad.yaml", "key 'optim.lr'", "finite number"]),
    (BASE + "optim:\n  weight_decay: .inf\n", [], ["bad.yaml", "key 'optim.weight_decay'", "finite number"]),
    (BASE + "optim:\n  milestones: [20, 10]\n", [], ["bad.yaml", "key 'optim.milestones'", "increasing"]),
    (BASE + "optim:\n  milestones: [-5, 10]\n", [], ["bad.yaml", "key 'optim.milestones'", "at least 1"]),
    (BASE + "optim:\n  momentum: 1.5\n", [], ["bad.yaml", "key 'optim.momentum'", "in [0, 1)"]),
    (BASE + "diagnostics:\n  chunk_size: 0\n", [], ["bad.yaml", "key 'diagnostics.chunk_size'", "at least 1"]),
    (BASE, ["data.eval_batch_size=0"], ["command line", "key 'data.eval_batch_size'", "at least 1"]),
    (BASE, ["data.num_workers=-1"], ["command line", "key 'data.num_workers'", "at least 0"]),
    (BASE, ["model.width=0"], ["command line", "key 'model.width'", "at least 1"]),
    (BASE, ["data.std=[0.2, 0, 0.2]"], ["command line", "key 'data.std'", "greater than 0"]),
    (BASE + "method:\n  name: adarand\n  prior_lr: -0.01\n", [], ["bad.yaml", "key 'method.prior_lr'", "at least 0"]),
    (BASE + "method:\n  name: l2sp\n  lambda_head: -1\n", [], ["bad.yaml", "key 'method.lambda_head'", "at least 0"]),
    (BASE, ["method.name=dr_tune", "method.bank_size=0"], ["command line", "key 'method.bank_size'", "at least 1"]),
    (BASE + "method:\n  name: delta\n  attention_temperature: 0\n", [],
     ["bad.yaml", "key 'method.attention_temperature'", "greater than 0"]),
    ("extends: missing_base.yaml\n", [], ["bad.yaml", "key 'extends'", "missing_base.yaml"]),
]


def test_numbers_written_like_1e6_are_numbers(tmp_path):
    cfg = load_config(write(tmp_path, "c.yaml", BASE + "optim:\n  lr: 1e-3\ndiagnostics:\n  max_samples: 1e4\n"))
    assert cfg.optim.lr == 0.001 and cfg.diagnostics.max_samples == 10000 and isinstance(cfg.diagnostics.max_samples, int)
    with pytest.raises(ConfigError, match="key 'diagnostics.max_samples'.*expected an integer"):
        load_config(write(tmp_path, "d.yaml", BASE + "diagnostics:\n  max_samples: 1e-1\n"))


def test_a_config_that_is_not_utf8_is_one_line(tmp_path):
    p = tmp_path / "latin1.yaml"
    p.write_bytes(BASE.encode() + "# r\xe9sum\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.yaml: not UTF-8 text \(byte \d+"):
        load_config(p)


@pytest.mark.parametrize("text,overrides,fragments", CASES)
def test_load_config_errors(tmp_path, text, overrides, fragments):
    p = write(tmp_path, "bad.yaml", text)
    with pytest.raises(ConfigError) as e:
        load_config(p, overrides)
    message = str(e.value)
    assert "\n" not in message
    for frag in fragments:
        assert frag in message, message


def test_error_names_the_base_file_that_set_the_key(tmp_path):
    write(tmp_path, "base.yaml", BASE + "train:\n  epochs: -1\n")
    p = write(tmp_path, "child.yaml", "extends: base.yaml\noptim:\n  lr: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "base.yaml: key 'train.epochs'" in str(e.value)


def test_extends_merges_and_overrides_apply(tmp_path):
    write(tmp_path, "base.yaml", BASE + "optim:\n  lr: 0.5\n  milestones: [1, 2]\n")
    p = write(tmp_path, "child.yaml", "extends: base.yaml\noptim:\n  lr: 0.1\nmethod:\n  name: adarand\n  lambda: 2\n")
    cfg = load_config(p, ["optim.milestones=[3]", "method.prior_loss=official"], seed=7)
    assert cfg.optim.lr == 0.1 and cfg.optim.milestones == [3] and cfg.seed == 7
    assert cfg.data.root == "/nonexistent" and cfg.model.arch == "small_cnn"
    assert cfg.method.name == "adarand" and cfg.method.params.lam == 2.0
    assert cfg.method.params.prior_loss == "official"
    assert cfg.to_dict()["method"]["lambda"] == 2.0


def test_circular_extends(tmp_path):
    write(tmp_path, "a.yaml", "extends: b.yaml\n")
    write(tmp_path, "b.yaml", "extends: a.yaml\n")
    with pytest.raises(ConfigError, match="circular extends"):
        load_config(tmp_path / "a.yaml")


def test_every_shipped_config_validates():
    for p in sorted((REPO / "yaml").glob("*.yaml")):
        load_config(p)
    methods = sorted((REPO / "yaml" / "methods").glob("*.yaml"))
    bases = [b for b in sorted((REPO / "yaml" / "base").glob("*.yaml")) if b.stem != "resnet50_imagenet"]
    assert len(methods) >= 9 and len(bases) >= 10
    detection = {"finetune", "adarand", "adarand_no_intra", "adarand_no_inter", "fnp", "randreg_uniform",
                 "randreg_normal", "randreg_global", "randreg_cp", "l2sp", "bss"}
    for b in bases:
        for m in methods:
            if load_config(b).task == "detection" and m.stem not in detection:
                with pytest.raises(ConfigError, match=f"{m.stem} does not run on task: detection"):
                    load_config([b, m])
                continue
            if m.stem == "uot":  # its source_root is a placeholder: the line a user sees until it is set
                with pytest.raises(ConfigError, match=r"uot.yaml: key 'method.source_root': ~/data/imagenet/train does "
                                                      r"not exist; set it to the pre-training data's class folders"):
                    load_config([b, m])
                cfg = load_config([b, m], ["method.source_root=sklearn_digits:source"])
                assert cfg.method.params.select_classes == 100
                continue
            cfg = load_config([b, m])
            assert cfg.method.name == m.stem and cfg.name == f"{b.stem}-{m.stem}"


def test_composed_configs_keep_their_layers(tmp_path):
    cfg = load_config([REPO / "yaml/base/cars25_resnet50.yaml", REPO / "yaml/methods/adarand_no_inter.yaml"],
                      ["method.alpha=0.9"])
    assert cfg.data.use_ratio == 0.25 and cfg.data.name == "stanford_cars" and cfg.model.arch == "resnet50"
    assert cfg.optim.milestones == [60, 120, 160] and cfg.train.epochs == 200 and cfg.data.batch_size == 64
    assert cfg.method.params.inter is False and cfg.method.params.alpha == 0.9
    # a later method file replaces an earlier method section whole (no parameters leak across methods)
    cfg = load_config([REPO / "yaml/cars_adarand.yaml", REPO / "yaml/methods/fnp.yaml"])
    assert cfg.method.name == "fnp" and not hasattr(cfg.method.params, "alpha")


@pytest.mark.parametrize("text,overrides,fragments", [CASES[1], CASES[7], CASES[11]])
def test_cli_prints_one_line_and_exits_nonzero(tmp_path, text, overrides, fragments):
    p = write(tmp_path, "bad.yaml", text)
    out = tmp_path / "run"
    r = run_main(p, *overrides, "--output", out)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    for frag in fragments:
        assert frag in lines[0]
    assert not out.exists()


def test_cli_missing_dataset_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    r = run_main(REPO / "yaml/cars_adarand.yaml", f"data.root={tmp_path / 'nocars'}", "--output", out)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Stanford Cars not found" in lines[0] and "cars_train" in lines[0], r.stderr
    assert "data.root" in lines[0]
    assert not out.exists()


def test_cli_missing_config_file(tmp_path):
    r = run_main(tmp_path / "nope.yaml")
    assert r.returncode == 2 and "nope.yaml: no such config file" in r.stderr


def test_launch_settings(monkeypatch):
    import socket

    from adarand.core.errors import UserError
    from adarand.engine.launch import launch_settings

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    assert launch_settings(1, gpus=0) == {"backend": None}
    two = launch_settings(2, gpus=0)
    assert {k: two[k] for k in ("backend", "nproc_per_node", "master_addr")} == {
        "backend": "gloo", "nproc_per_node": 2, "master_addr": "127.0.0.1"}
    assert launch_settings(2, gpus=4)["backend"] == "nccl"
    # a free port each time (another run of several processes may hold the last one)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert launch_settings(2, gpus=0)["master_port"] != port
        monkeypatch.setenv("MASTER_PORT", str(port))  # given and taken: one line naming the setting
        with pytest.raises(UserError, match=f"MASTER_PORT={port}: that port is taken"):
            launch_settings(2, gpus=0)
    assert launch_settings(2, gpus=0)["master_port"] == port  # given and free
    monkeypatch.delenv("MASTER_PORT")
    with pytest.raises(UserError, match="--nproc: 3 processes but this machine has 2 GPU"):
        launch_settings(3, gpus=2)
    with pytest.raises(UserError, match="--nproc: expected a positive number"):
        launch_settings(0, gpus=0)
    monkeypatch.setenv("WORLD_SIZE", "4")  # torchrun decides the processes
    assert launch_settings(1, gpus=0) == {"backend": "gloo"}


def test_cli_bad_nproc_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    r = run_main(REPO / "yaml/demo_adarand.yaml", "--nproc", "0", "--output", out)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --nproc:"), r.stderr
    assert not out.exists()
