"""Writing a file so that a reader never sees half of it, and a crash never loses the old one.

A file is written to ``<name>.<random>.tmp`` beside its destination, flushed to the disk, renamed
over the destination, and the folder's entry flushed too: after a power cut or a kill -9 the
destination holds either the old file or the whole new one. What a kill leaves behind is a
``*.tmp`` file, removed by ``remove_temp_files``: a run folder's on the run's next start, a
cache file's when that cache is next written.

An OS error (a full disk, a read-only folder) is re-raised as the ``OSError`` it is, carrying the
destination's path, even where ``torch.save`` would hide it in a ``RuntimeError``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

TEMP_SUFFIX = ".tmp"


class _RecordingFile:
    """A binary file that remembers the OS error of a failed write (torch.save reports only its own
    RuntimeError when the stream it writes to fails)."""

    def __init__(self, f: IO[bytes]):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def sync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename in it) to the disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """``write(f)`` to a temporary file beside ``path``, flushed to the disk and renamed to ``path``
    (readable by all, as an ordinary file). On an error the temporary file is removed and the error
    re-raised; an ``OSError`` names ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.", suffix=TEMP_SUFFIX)
    except OSError as e:
        raise OSError(e.errno, e.strerror, e.filename or str(path.parent)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            recording = _RecordingFile(f)
            try:
                write(recording)
            except RuntimeError:
                if recording.error is not None:
                    raise recording.error from None
                raise
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        sync_folder(path.parent)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise


def save_atomic(obj, path: Path) -> None:
    """``torch.save(obj, path)`` through ``write_atomic``."""
    import torch  # here, not at the top: the commands that read configs only (--list) load no torch

    write_atomic(path, lambda f: torch.save(obj, f))


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def finite_or_null(obj):
    """``obj`` with every NaN or infinite float replaced by None: strict JSON has no NaN."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_null(v) for v in obj]
    return obj


def write_json_atomic(path: Path, obj) -> None:
    """Strict JSON (a non-finite number is written as null)."""
    write_text_atomic(path, json.dumps(finite_or_null(obj), indent=2, allow_nan=False))


def remove_temp_files(folder: Path, name: str = "", min_age_s: float = 0.0) -> list[Path]:
    """Remove the temporary files an interrupted ``write_atomic`` left in ``folder`` (those of
    the destination ``name`` only, if given; only those unmodified for ``min_age_s`` seconds, in a
    folder that other runs may be writing to at the same time)."""
    folder = Path(folder)
    pattern = f"{name}.*{TEMP_SUFFIX}" if name else f"*{TEMP_SUFFIX}"
    now = time.time()
    found = [p for p in sorted(folder.glob(pattern)) if now - p.stat().st_mtime >= min_age_s] \
        if folder.is_dir() else []
    for p in found:
        p.unlink(missing_ok=True)
    return found


def build_folder_once(out: Path, write: Callable[[Path], None]) -> Path:
    """``out``, written by ``write(folder)`` into a temporary sibling folder and renamed into place
    unless it already exists: a process that stops half-way leaves nothing at ``out``, and of two
    processes writing at once the first complete copy is kept."""
    if out.is_dir():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        write(tmp)
        try:
            tmp.rename(out)
        except OSError:  # another process finished first: keep its complete copy
            if not out.is_dir():
                raise
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
