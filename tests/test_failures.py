"""Runs that cannot produce a meaningful result stop with one line and their own exit code."""

from conftest import run_cli, run_main, write_tiny_config


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
    r = run_main(write_tiny_config(tmp_path, "finetune", counts={0: 12}), "--output", out)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "has 1 class (class0); classification needs at least two" in r.stderr.strip().splitlines()[-1]
    assert not out.exists()


def test_ctrl_c_gives_one_line_exit_130_and_a_run_that_continues(tmp_path):
    import signal
    import subprocess
    import sys

    import torch


    out = tmp_path / "run"
    cfg = write_tiny_config(tmp_path, "adarand")
    # Ctrl-C at a fixed point, not on a timer: the process sends itself SIGINT after its 12th optimizer
    # step (AdaRand steps two optimizers an iteration; 4 iterations an epoch: in epoch 2, after epoch 1's
    # checkpoint), whatever the machine's load
    driver = ("import os, signal, sys\n"
              "from torch.optim.optimizer import register_optimizer_step_post_hook\n"
              "steps = []\n"
              "def hook(optimizer, args, kwargs):\n"
              "    steps.append(1)\n"
              "    if len(steps) == 12:\n"
              "        os.kill(os.getpid(), signal.SIGINT)\n"
              "register_optimizer_step_post_hook(hook)\n"
              "from adarand import run\n"
              "sys.exit(run.main(sys.argv[1:]))\n")
    proc = subprocess.Popen([sys.executable, "-c", driver, str(cfg), "train.epochs=3", "--output", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "ERROR ignite" not in stderr  # one line, not the engine's empty ones first
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("interrupted at epoch 2, iteration 6;")
    assert f"--resume {out}" in line  # an epoch had ended, and its checkpoint survives even a Ctrl-C mid-save
    (last,) = list((out / "checkpoints").glob("last_*.pt"))
    assert "trainer" in torch.load(last, weights_only=True)  # the last checkpoint is intact
    command = line.split("continue from the end of epoch ")[1].split(" with: ")[1].split()
    r = run_main(*command[1:])
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "results.json").exists()


def limit_file_size(nbytes: int):
    """For a child process: writes past ``nbytes`` fail with EFBIG, the way a full disk fails them."""
    import resource
    import signal

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    return limit


def test_a_full_disk_and_corrupt_checkpoints_give_one_line_and_the_run_continues(tmp_path):
    import subprocess
    import sys

    import torch

    from conftest import REPO

    cfg = write_tiny_config(tmp_path, "finetune")
    out = tmp_path / "run"
    common = [str(cfg), "train.epochs=3", "--output", str(out)]
    assert run_main(*common, "train.stop_after=1").returncode == 0
    (first,) = list((out / "checkpoints").glob("last_*.pt"))
    saved = first.read_bytes()

    # the disk fills up while the next epoch's checkpoints are written (config and logs still fit)
    r = subprocess.run([sys.executable, str(REPO / "run.py"), *common], capture_output=True, text=True,
                       preexec_fn=limit_file_size(8192), timeout=600)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {out / 'checkpoints'}/") and line.endswith(".pt: File too large"), line
    assert first.read_bytes() == saved  # the previous checkpoint is intact
    assert not list(out.rglob("*.tmp"))

    # the same command continues; then the newest of two last checkpoints is corrupt
    assert run_main(*common, "train.stop_after=2").returncode == 0
    (second,) = list((out / "checkpoints").glob("last_*.pt"))
    first.write_bytes(saved)
    for corrupt in (second.read_bytes()[: second.stat().st_size // 2], b"not a checkpoint"):
        second.write_bytes(corrupt)
        r = run_main(*common)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
        line = r.stderr.strip().splitlines()[-1]
        assert line.startswith(f"error: {second}: not a readable checkpoint (")
        assert line.endswith(f"the earlier checkpoint {first} exists: continue from it with --resume {first}")
    r = run_main(str(cfg), "train.epochs=3", "--resume", first)
    assert r.returncode == 0, r.stderr[-2000:]
    (final,) = list((out / "checkpoints").glob("last_*.pt"))  # the corrupt one is gone too
    assert final.name == "last_checkpoint_12.pt" and "model" in torch.load(final, weights_only=True)
    assert (out / "results.json").exists()


def test_an_unwritable_output_or_cache_folder_gives_one_line_and_exit_code_2(tmp_path):
    import os

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cfg = write_tiny_config(tmp_path, "finetune")
    cases = [(["--output", blocker / "run"], f"error: {blocker / 'run'}: "),
             ([f"cache_dir={blocker / 'cache'}", "--output", tmp_path / "run"], f"error: {blocker / 'cache'}")]
    if os.geteuid() != 0:  # root writes into a read-only folder anyway
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        cases.append((["--output", locked / "run"], f"error: {locked / 'run'}: Permission denied"))
    for args, start in cases:
        r = run_main(cfg, *args)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert r.stderr.strip().splitlines()[-1].startswith(start), r.stderr[-500:]
    assert not (tmp_path / "run").exists()  # nothing half-written
