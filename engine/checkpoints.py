"""The run folder's checkpoints: written so that a kill -9 at any instant leaves a run that
continues, found again on restart, and read with one-line errors.

Two Ignite ``Checkpoint`` handlers share one ``DurableSaver``: ``best_model_<epoch>.pt`` (the
selected model) and ``last_checkpoint_<iteration>.pt`` (everything a resume needs, including the
name of the best model file). A file is replaced only once its successor is durable, and the
files a last checkpoint refers to are kept until the next last checkpoint is durable; so the
newest last checkpoint on disk, and the best model it names, are always whole.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

import ignite.distributed as idist
import torch
from ignite.handlers.checkpoint import BaseSaveHandler

from ..core.errors import UserError, error_summary
from ..core.files import remove_temp_files, save_atomic, write_atomic

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
LAST_PREFIX = "last"
BEST_PREFIX = "best"
LAST_PATTERN = re.compile(rf"^{LAST_PREFIX}_checkpoint_(\d+)\.pt$")


class DurableSaver(BaseSaveHandler):
    """Ignite's save handler for the run folder (rank 0 writes, the others do nothing).

    Ignite's ``Checkpoint`` asks to remove the file it replaces *before* it saves the new one.
    Here a removal waits: every file is written through ``adarand.core.files.save_atomic``
    (temporary file, flushed, renamed), and the removals asked for are carried out only after the
    next *last* checkpoint is durable, since that is the state a restart goes back to."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.pending: set[str] = set()

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        if idist.get_rank() != 0:
            return
        save_atomic(checkpoint, self.folder / filename)
        self.pending.discard(filename)
        if filename.startswith(f"{LAST_PREFIX}_"):
            for name in sorted(self.pending):
                (self.folder / name).unlink(missing_ok=True)
            self.pending.clear()

    def remove(self, filename: str) -> None:
        self.pending.add(filename)

    def remove_after_next_save(self, filenames: Iterable[str]) -> None:
        """Files of an earlier attempt of the run, removed once the next last checkpoint is durable."""
        self.pending.update(filenames)


def checkpoint_step(path: Path) -> int:
    """The iteration of a ``last_checkpoint_<iteration>.pt`` file."""
    m = LAST_PATTERN.match(Path(path).name)
    if m is None:
        raise ValueError(f"{path} is not named like a last checkpoint")
    return int(m.group(1))


def checkpoints_in(folder: Path) -> list[Path]:
    """The ``last_checkpoint_*.pt`` files of ``folder``, oldest first (by the iteration in their names)."""
    folder = Path(folder)
    found = [p for p in folder.glob(f"{LAST_PREFIX}_checkpoint_*.pt") if LAST_PATTERN.match(p.name)] \
        if folder.is_dir() else []
    return sorted(found, key=checkpoint_step)


def last_checkpoints(run_dir: Path) -> list[Path]:
    """The run folder's last checkpoints, oldest first."""
    return checkpoints_in(Path(run_dir) / CHECKPOINTS)


def earlier_checkpoint(path: Path) -> Path | None:
    """The newest last checkpoint beside ``path`` and older than it, if any."""
    if not LAST_PATTERN.match(Path(path).name):
        return None
    earlier = [p for p in checkpoints_in(Path(path).parent) if checkpoint_step(p) < checkpoint_step(path)]
    return earlier[-1] if earlier else None


def find_last_checkpoint(path: Path) -> Path:
    """``path`` itself when it is a file, else the newest last checkpoint of the run folder ``path``."""
    if path.is_file():
        return path
    found = last_checkpoints(path)
    if not found:
        raise UserError(f"--resume: no checkpoint at {path} (expected a file or a run folder with "
                        f"{CHECKPOINTS}/{LAST_PREFIX}_checkpoint_*.pt)")
    return found[-1]


def prepare_folder(run_dir: Path) -> None:
    """Remove what a killed attempt of the run left half-written in its folder (rank 0)."""
    if idist.get_rank() == 0:
        for p in remove_temp_files(run_dir) + remove_temp_files(Path(run_dir) / CHECKPOINTS):
            log.info("removed %s, left half-written by an interrupted save", p)


def stale_files(run_dir: Path, keep: Iterable[str]) -> list[str]:
    """Checkpoint files of the folder other than ``keep``: what an earlier attempt left."""
    folder = Path(run_dir) / CHECKPOINTS
    keep = set(keep)
    return sorted(p.name for p in folder.glob("*.pt") if p.name not in keep) if folder.is_dir() else []


def read_checkpoint(path: Path, required: Iterable[str] = (), earlier: Path | None = None) -> dict:
    """A checkpoint file's contents (on the CPU), or a one-line error naming it, and the earlier
    checkpoint to continue from if there is one."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # every unreadable file gets the same one line, with torch's reason
        reason = error_summary(e, "unreadable")
    else:
        missing = [k for k in required if not isinstance(state, dict) or k not in state]
        if not missing:
            return state
        reason = f"it holds no {', '.join(missing)}"
    advice = (f"; the earlier checkpoint {earlier} exists: continue from it with --resume {earlier}"
              if earlier is not None else "")
    raise UserError(f"{path}: not a readable checkpoint ({reason}){advice}")


def checkpoint_epoch(checkpoint: dict) -> int:
    """The epoch a training checkpoint ends (Ignite's engine state keeps the iteration and the
    epoch length)."""
    trainer = checkpoint["trainer"]
    return int(trainer["iteration"]) // int(trainer["epoch_length"])


def copy_best_models(checkpoint_file: Path, run_dir: Path) -> list[Path]:
    """A run continued into another folder (``--resume RUN --output NEW``) takes the selected
    models of the checkpoint's folder with it: the restored state names them, the test loads one.
    Copied durably; returns the copies."""
    source = Path(checkpoint_file).parent
    target = Path(run_dir) / CHECKPOINTS
    if target.exists() and source.resolve() == target.resolve():  # the run's own folder
        return []
    copies = []
    for best in sorted(source.glob(f"{BEST_PREFIX}_model_*.pt")):
        copy = target / best.name
        with open(best, "rb") as f:
            write_atomic(copy, lambda out, f=f: shutil.copyfileobj(f, out))
        copies.append(copy)
    return copies
