import contextlib
import io
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def make_image_folder(root: Path, n_train: dict[int, int], n_test: int = 2, size: int = 12, seed: int = 0) -> Path:
    """root/{train,test}/class<k>/<i>.png with class-dependent mean brightness plus noise."""
    rng = np.random.default_rng(seed)
    for split, counts in (("train", n_train), ("test", {k: n_test for k in n_train})):
        for k, n in counts.items():
            d = root / split / f"class{k}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = 40 + 50 * k
                arr = np.clip(base + rng.normal(0, 25, size=(size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(d / f"{i:03d}.png")
    return root


def run_cli(*args, cwd=REPO, env_extra=None, timeout=600):
    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, str(REPO / "run.py"), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def run_main(*args) -> subprocess.CompletedProcess:
    """The command line's ``main`` in this process, its output captured: for runs that stop before
    training, where a new interpreter would cost more than the test."""
    from adarand import run

    return run_entry(run.main, *args)


def run_entry(main, *args) -> subprocess.CompletedProcess:
    """A command's ``main(argv)`` (adarand-run, adarand-eval, adarand-table, ...) in this process,
    its output captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


@pytest.fixture(autouse=True)
def seeded_global_rng():
    """Every test starts from the same global random state (torch, numpy, random), whichever tests
    ran before it: inputs drawn without a generator are the same on every run of the suite."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def write_tiny_config(tmp_path: Path, method: str = "finetune", counts=None, extra: str = "") -> Path:
    """A config for a tiny 3-class image folder and a small CNN (feature dim 16), CPU-quick."""
    root = make_image_folder(tmp_path / "data", counts or {0: 10, 1: 8, 2: 6})
    cfg = tmp_path / f"{method}.yaml"
    cfg.write_text(f"""
data: {{root: "{root}", image_size: 12, resize_size: 12, batch_size: 4, num_workers: 0, val_ratio: 0.2,
        mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}}
model: {{arch: small_cnn, width: 4}}
optim: {{lr: 0.05, milestones: [100]}}
train: {{progress: false, epochs: 2, log_every: 2}}
cache_dir: "{tmp_path / 'cache'}"
method: {{name: {method}}}
{extra}""")
    return cfg
