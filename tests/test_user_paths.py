"""The paths a new user walks: continuing into a new folder, results that cannot be numbers, two
runs in one folder, configs that would exhaust memory, strict JSON."""

import json
import math
import os
import subprocess
import sys
import time

import pytest

from adarand.core.files import write_json_atomic

from conftest import REPO, run_main, write_tiny_config


def test_resume_into_a_new_folder_trains_and_tests_there(tmp_path):
    cfg = write_tiny_config(tmp_path, "finetune")
    first, second = tmp_path / "first", tmp_path / "second"
    assert run_main(cfg, "train.epochs=3", "train.stop_after=2", "--output", first).returncode == 0
    r = run_main(cfg, "train.epochs=4", "--resume", first, "--output", second)
    assert r.returncode == 0, r.stderr
    res = json.loads((second / "results.json").read_text())
    assert res["epochs"] == 4 and (second / "checkpoints" / f"best_model_{res['best_epoch']}.pt").exists()
    assert [row.split(",")[0] for row in (second / "epochs.csv").read_text().splitlines()[1:]] == ["1", "2", "3", "4"]
    assert not (first / "results.json").exists()  # the first folder is left as it was


def test_continuing_a_stopped_run_with_stop_after_still_set_trains_nothing_and_says_how_to_go_on(tmp_path):
    cfg = write_tiny_config(tmp_path, "finetune")
    out = tmp_path / "run"
    assert run_main(cfg, "train.epochs=4", "train.stop_after=2", "--output", out).returncode == 0
    r = run_main(cfg, "train.epochs=4", "train.stop_after=2", "--output", out)  # the same command again
    assert r.returncode == 0, r.stderr
    assert [row.split(",")[0] for row in (out / "epochs.csv").read_text().splitlines()[1:]] == ["1", "2"]
    assert "stopped after epoch 2 of 4; continue with:" in r.stdout and "train.stop_after=null" in r.stdout
    assert not (out / "results.json").exists()


def test_a_model_whose_evaluation_loss_is_not_finite_is_no_result(tmp_path, cache_dir):
    out = tmp_path / "run"
    r = run_main("demo_adarand", "train.epochs=3", "optim.lr=1e6", f"cache_dir={cache_dir}", "--output", out,
                 "--quiet")
    assert r.returncode == 3
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "the validation loss is not finite after epoch 1: nan" in errors[0]
    assert "ERROR ignite" not in r.stderr and not (out / "results.json").exists()


def test_results_are_strict_json(tmp_path):
    path = tmp_path / "r.json"
    write_json_atomic(path, {"a": math.nan, "b": [1.5, math.inf], "c": {"d": -math.inf}})

    def refuse(name):
        raise ValueError(name)

    assert json.loads(path.read_text(), parse_constant=refuse) == {"a": None, "b": [1.5, None], "c": {"d": None}}


def test_a_second_run_into_a_folder_in_use_is_refused_and_a_kill_leaves_no_lock(tmp_path):
    cfg = write_tiny_config(tmp_path, "finetune")
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, str(REPO / "run.py"), str(cfg), "train.epochs=400", "--output", str(out),
                              "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not list((out / "checkpoints").glob("last_*.pt")) and time.time() < deadline:
            time.sleep(0.1)
        r = run_main(cfg, "train.epochs=400", "--output", out)
        assert r.returncode == 2
        assert r.stderr.strip().splitlines()[-1] == (
            f"error: {out}: another run is writing to this folder (process {first.pid} on {os.uname().nodename}); "
            "wait for it to end, or choose another --output")
    finally:
        first.kill()
        first.wait()
    # the kernel released the dead process's lock: the same command continues the run
    r = run_main(cfg, "train.epochs=400", "train.stop_after=1", "--output", out)
    assert r.returncode == 0 and "continuing the run in" in r.stderr


@pytest.mark.parametrize("where", ["value", "extends", "override"])
def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path, where):
    levels = ["a: &a [" + ",".join(['"lol"'] * 9) + "]"]
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        levels.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    bomb = "\n".join(levels)
    cfg = write_tiny_config(tmp_path, "finetune")
    path = tmp_path / "bomb.yaml"
    if where == "value":
        path.write_text(f"extends: {cfg.name}\n{bomb}\ntrain: {{epochs: *i}}\n")
        args = [path]
    elif where == "extends":
        path.write_text(f"{bomb}\nextends: *i\n")
        args = [path]
    else:
        args = [cfg, f"train.epochs={{{', '.join(levels)}}}"]  # the aliases as one flow mapping
    start = time.time()
    r = run_main(*args)
    assert r.returncode == 2 and time.time() - start < 30
    line = r.stderr.strip()
    assert "\n" not in line and len(line) < 300 and "more than 10,000 values once its YAML aliases are expanded" in line


def test_an_empty_class_is_refused_and_a_class_without_test_images_is_named(tmp_path):
    cfg = write_tiny_config(tmp_path, "finetune")
    (tmp_path / "data" / "train" / "class9").mkdir()
    (tmp_path / "data" / "test" / "class9").mkdir()
    r = run_main(cfg, "--output", tmp_path / "run")
    assert r.returncode == 2 and not (tmp_path / "run").exists()
    assert r.stderr.strip().splitlines()[-1] == (f"error: data.root: {(tmp_path / 'data').resolve()}: class(es) class9 "
                                                 "have no training images (an empty class folder?); add images or "
                                                 "remove the class")
    (tmp_path / "data" / "train" / "class9").rmdir()
    (tmp_path / "data" / "test" / "class9").rmdir()
    for p in (tmp_path / "data" / "test" / "class2").iterdir():
        p.unlink()
    with pytest.warns(UserWarning, match=r"class\(es\) class2 have no test images; the test accuracy is over 2 of 3"):
        r = run_main(cfg, "train.epochs=1", "--output", tmp_path / "run")
    assert r.returncode == 0


def test_errors_name_where_a_value_was_set_and_which_method_a_key_belongs_to():
    r = run_main("demo", "optim.milestones=[a,b]")
    assert r.returncode == 2 and r.stderr.strip() == ("error: command line: key 'optim.milestones[0]': expected an "
                                                      "integer, got 'a'")
    r = run_main("demo", "model.arch=nosuch")
    assert r.stderr.strip() == ("error: command line: key 'model.arch': 'nosuch' is neither a torchvision "
                                "classification model, timm/<name>, nor small_cnn")
    r = run_main("demo_adarand", "method.name=finetune")
    line = r.stderr.strip()
    assert r.returncode == 2 and line.startswith(f"error: {REPO / 'yaml/methods/adarand.yaml'}: key 'method.lambda': not "
                                                 "a parameter of finetune; it belongs to adarand, ")
    assert "known keys here: )" not in line


def test_extends_finds_a_packaged_config_by_name(tmp_path):
    from adarand.engine.config import load_config

    mine = tmp_path / "mine.yaml"
    mine.write_text("extends: [base/digits_small_cnn, methods/fnp]\ntrain: {epochs: 7}\n")
    cfg = load_config(mine)
    assert cfg.method.name == "fnp" and cfg.train.epochs == 7 and cfg.model.arch == "small_cnn"
    (tmp_path / "base").mkdir()  # a file beside the referring one wins
    (tmp_path / "base" / "digits_small_cnn.yaml").write_text("data: {root: here}\nmodel: {arch: resnet18}\n")
    assert load_config(mine).model.arch == "resnet18"
    mine.write_text("extends: base/nosuch\n")
    r = run_main(mine)
    assert r.returncode == 2 and "no such config file" in r.stderr and "nor a packaged config 'base/nosuch'" in r.stderr


def test_grey_images_train_an_rgb_backbone_and_a_too_small_input_is_one_line(tmp_path, cache_dir):
    import torch

    from adarand.engine.build import build_run
    from adarand.engine.config import load_config

    # the demo's grey digits through an RGB ResNet: the grey channel is repeated for every pass
    run = build_run(load_config("demo", [f"cache_dir={cache_dir}", "model.arch=resnet18", "model.pretrained=null"]))
    x, _ = next(iter(run.loaders.train))
    assert x.shape[1] == 1
    with torch.no_grad():
        run.net.eval()
        logits, features = run.net(x)
        rgb = run.net(x.expand(-1, 3, -1, -1))[1]
    assert features.shape == (x.shape[0], 512) and torch.equal(features, rgb)
    r = run_main("demo", f"cache_dir={cache_dir}", "model.arch=vgg11", "model.pretrained=null", "--output",
                 tmp_path / "vgg")
    assert r.returncode == 2 and not (tmp_path / "vgg").exists()
    assert r.stderr.strip().startswith("error: data.image_size: a 16 x 16 image does not pass through model.arch vgg11 (")


def test_on_a_terminal_the_epoch_lines_never_land_inside_a_progress_bar(tmp_path):
    import fcntl
    import pty
    import re
    import struct
    import termios

    cfg = write_tiny_config(tmp_path, "finetune")
    cfg.write_text(cfg.read_text().replace("progress: false", "progress: true"))
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))  # a terminal of 100 columns
    proc = subprocess.Popen([sys.executable, str(REPO / "run.py"), str(cfg), "train.epochs=3", "--output",
                             str(tmp_path / "run")], stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert proc.wait(timeout=120) == 0
    text = b"".join(chunks).decode(errors="replace")
    starts = [m.start() for m in re.finditer(r"epoch \d+/3:", text)]
    assert len(starts) == 3 and "100%|" in text  # bars were drawn
    for i in starts:  # each line begins a line: after a newline or after the bars were cleared (\r)
        assert text[i - 1] in "\n\r", repr(text[max(0, i - 40):i + 10])


def test_list_prints_whole_first_sentences_and_cites_only_what_ships():
    r = run_main("--list")
    assert r.returncode == 0 and "SPEC" not in r.stdout
    line = next(x for x in r.stdout.splitlines() if x.strip().startswith("base/cars10_resnet50 "))
    assert line.endswith("10 % of the training data, drawn with data.split_seed (stratified, before the 9:1 "
                         "train/val split).")
    assert next(x for x in r.stdout.splitlines() if x.strip().startswith("demo_adarand ")).endswith(
        "with the small CNN pretrained on digits 0-4.")


def test_train_device_and_threads(tmp_path):
    import torch

    cfg = write_tiny_config(tmp_path, "finetune")
    before = torch.get_num_threads()
    try:
        r = run_main(cfg, "train.epochs=1", "train.device=cpu", "train.threads=1", "--output", tmp_path / "run")
        assert r.returncode == 0, r.stderr
        res = json.loads((tmp_path / "run" / "results.json").read_text())
        assert res["device"] == "cpu" and res["threads"] == 1
    finally:
        torch.set_num_threads(before)
    r = run_main(cfg, "train.device=gpu")
    assert r.returncode == 2 and "key 'train.device': expected auto, cpu, cuda or cuda:N, got 'gpu'" in r.stderr
    if not torch.cuda.is_available():
        r = run_main(cfg, "train.device=cuda:0", "--output", tmp_path / "gpu")
        assert r.returncode == 2 and r.stderr.strip().startswith("error: train.device: cuda:0, but torch sees no GPU")
        assert not (tmp_path / "gpu").exists()


def test_a_killed_process_of_a_two_process_run_is_named_with_the_command_that_continues(tmp_path):
    import signal

    cfg = write_tiny_config(tmp_path, "finetune")
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(REPO / "run.py"), str(cfg), "train.epochs=300", "data.batch_size=2",
                             "--nproc", "2", "--output", str(out), "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)

    def children(pid):
        found = []
        for stat in os.listdir("/proc"):
            if stat.isdigit():
                try:
                    fields = open(f"/proc/{stat}/stat").read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == pid:
                    found.append(int(stat))
        return found

    deadline = time.time() + 180
    while not list((out / "checkpoints").glob("last_*.pt")) and time.time() < deadline:
        time.sleep(0.2)
    workers = [c for c in children(proc.pid) if "spawn_main" in open(f"/proc/{c}/cmdline").read()]
    assert len(workers) == 2, workers
    os.kill(max(workers), signal.SIGKILL)  # as the out-of-memory killer would
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGKILL and "Traceback" not in stderr
    (line,) = [x for x in stderr.splitlines() if x.startswith("error:")]  # (multiprocessing's tracker may warn after)
    assert "was killed by SIGKILL (as the out-of-memory killer does); the other processes were stopped" in line
    command = line.split("continue the run with: ")[1].split()
    assert command[:1] == ["adarand-run"] and command[-2:] == ["--nproc", "2"] and f"--resume {out}" in " ".join(command)


def test_the_python_api_speaks_of_its_own_arguments(tmp_path, capsys):
    import logging

    import adarand
    from adarand.core.errors import UserError

    assert "train" in dir(adarand)
    cfg = write_tiny_config(tmp_path, "finetune")
    with pytest.raises(UserError) as e:
        adarand.train(cfg, {"train.epochs": "many"})
    assert str(e.value).startswith("overrides: key 'train.epochs': expected an integer")
    out = tmp_path / "run"
    adarand.train(cfg, {"train.epochs": 1}, output=out, quiet=True)
    with pytest.raises(UserError) as e:
        adarand.train(cfg, {"train.epochs": 1, "optim.lr": 0.1}, output=out)
    assert str(e.value).startswith(f"output=: {out} holds a run of another config") and "--output" not in str(e.value)
    captured = capsys.readouterr()
    assert "Parallel" not in captured.out + captured.err
    assert logging.getLogger("ignite.distributed.launcher.Parallel").getEffectiveLevel() >= logging.WARNING
