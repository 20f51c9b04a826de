import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
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


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")
