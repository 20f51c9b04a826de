"""One run at a time in a run folder: an OS file lock on ``RUN/.lock``, held by the run's first
process from the moment it writes to the folder until it ends. The kernel releases it when that
process dies, so a kill -9 leaves none behind; the file holds the holder's process id and host,
which the refusal names."""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from .errors import UserError

LOCK_FILE = ".lock"


class FolderLock:
    def __init__(self, folder: Path, busy: str = "another run is writing to this folder",
                 instead: str = "wait for it to end, or choose another --output"):
        self.folder = Path(folder)
        self.fd: int | None = None
        self.busy, self.instead = busy, instead

    def acquire(self) -> None:
        """Take the lock, or raise UserError naming the folder and the process that holds it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            pid, _, host = holder.partition(" ")
            raise UserError(f"{self.folder}: {self.busy} (process {pid} on {host or 'this host'}); "
                            f"{self.instead}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        self.fd = fd

    @property
    def held(self) -> bool:
        return self.fd is not None

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
