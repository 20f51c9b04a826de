"""Writing a file so that a reader never sees half of it."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch


def write_atomic(path: Path, write: Callable[[str], None]) -> None:
    """``write(tmp)`` to a temporary file beside ``path``, then rename it to ``path`` (readable by
    all, as an ordinary file); on an error the temporary file is removed and the error re-raised."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def save_atomic(obj, path: Path) -> None:
    """``torch.save(obj, path)`` through a temporary file."""
    write_atomic(path, lambda tmp: torch.save(obj, tmp))


def write_json_atomic(path: Path, obj: dict) -> None:
    write_atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2)))
