"""How long the command line takes to answer what needs no training: ``--help``, ``--list`` and
``--print-config``, beside ``import torch`` (each the median of several fresh interpreters on
this machine, and its ratio to ``import torch`` measured in the same rounds)::

    python benchmarks/startup.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {
    "import torch": [sys.executable, "-c", "import torch"],
    "adarand-run --help": [sys.executable, str(REPO / "run.py"), "--help"],
    "adarand-run --list": [sys.executable, str(REPO / "run.py"), "--list"],
    "adarand-run demo --print-config": [sys.executable, str(REPO / "run.py"), "demo", "--print-config"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.rounds):  # interleaved: each round runs every command once
        for name, command in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["import torch"])
    print(f"{'command':<34} {'median s':>9} {'x import torch':>15}")
    for name, values in times.items():
        print(f"{name:<34} {statistics.median(values):9.2f} {statistics.median(values) / base:15.2f}")


if __name__ == "__main__":
    main()
