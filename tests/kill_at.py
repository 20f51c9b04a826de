"""Run the command line again and again, killing it with SIGKILL at chosen points, as a kill -9, an
out-of-memory killer or a preempted cluster job would::

    OMP_NUM_THREADS=1 python tests/kill_at.py POINT [POINT ...] -- CONFIG.yaml [key=value ...] --output DIR

Each POINT is one attempt of the same command, in a process forked from this one (the libraries
are imported once; single-threaded, so that a fork is safe), killed at

    step:N              just after the N-th optimizer step of the attempt (any optimizer)
    save:GLOB[:N]       inside the N-th atomic write of a file whose path matches GLOB, with half
                        of its bytes written (for a checkpoint: inside torch.save)
    renamed:GLOB[:N]    just after that write's rename, before anything it replaces is removed

The points are reached through hooks on the real code: torch's global optimizer step hook, and the
one function every file of a run is written through (``adarand.core.files.write_atomic``).

After each attempt one line is printed: ``POINT: killed; <what the run folder holds>``, where the
newest last checkpoint, if any, has been loaded, and so have the best models it names; or
``POINT: exited <code>`` if the point was never reached.
"""

from __future__ import annotations

import fnmatch
import io
import os
import signal
import sys
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from adarand import run
from adarand.core import files


def kill() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def kill_after_steps(n: int) -> None:
    count = 0

    def hook(optimizer, args, kwargs):
        nonlocal count
        count += 1
        if count == n:
            kill()

    register_optimizer_step_post_hook(hook)


def kill_in_writes(kind: str, pattern: str, n: int) -> None:
    write_atomic, count = files.write_atomic, 0

    def half_then_kill(write):
        def partial(f):
            buffer = io.BytesIO()
            write(buffer)
            data = buffer.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            kill()
        return partial

    def hooked(path, write):
        nonlocal count
        if not fnmatch.fnmatch(str(path), pattern):
            return write_atomic(path, write)
        count += 1
        if count != n:
            return write_atomic(path, write)
        if kind == "save":
            return write_atomic(path, half_then_kill(write))
        write_atomic(path, write)
        kill()

    files.write_atomic = hooked


def arm(point: str) -> None:
    kind, _, rest = point.partition(":")
    if kind == "step":
        kill_after_steps(int(rest))
    elif kind in ("save", "renamed"):
        pattern, _, nth = rest.partition(":")
        kill_in_writes(kind, pattern, int(nth or 1))
    else:
        raise SystemExit(f"kill_at.py: unknown point {point!r} (expected step:N, save:GLOB[:N] or renamed:GLOB[:N])")


def folder_state(run_dir: Path) -> str:
    """What a restart finds: the newest last checkpoint and the best models it names, each loaded."""
    folder = run_dir / "checkpoints"
    lasts = sorted(folder.glob("last_checkpoint_*.pt"), key=lambda p: int(p.stem.rsplit("_", 1)[1])) \
        if folder.is_dir() else []
    if not lasts:
        return "no last checkpoint"
    state = torch.load(lasts[-1], weights_only=True)
    best = [name for _, name in state["best_checkpoint"]["_saved"]]
    for name in best:
        torch.load(folder / name, weights_only=True)
    return f"{lasts[-1].name} loads, with {', '.join(best)}"


def main() -> int:
    split = sys.argv.index("--")
    points, args = sys.argv[1:split], sys.argv[split + 1:]
    run_dir = Path(args[args.index("--output") + 1])
    for point in points:
        pid = os.fork()
        if pid == 0:
            arm(point)
            os._exit(run.main(args))
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            print(f"{point}: killed; {folder_state(run_dir)}", flush=True)
        else:
            print(f"{point}: exited {os.waitstatus_to_exitcode(status)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
