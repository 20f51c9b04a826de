"""The code passes the project's lint rules (``[tool.ruff]`` in pyproject.toml; ruff is pinned in
the ``test`` extra, so a newer ruff's new rules cannot turn CI red)."""

import subprocess
import sys

from conftest import REPO


def test_ruff_finds_nothing():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(REPO)], cwd=REPO,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
