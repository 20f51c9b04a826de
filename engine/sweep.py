"""Several seeds of several configs, one run folder each: ``ROOT/<config name>/seed<k>``.

    adarand-sweep yaml/demo_ft.yaml yaml/demo_adarand.yaml --seeds 0 1 2 --root runs/demo
    adarand-sweep --bases yaml/base/digits_small_cnn.yaml --methods yaml/methods/fnp.yaml \
                  yaml/methods/adarand.yaml --seeds 0 1 2 --root runs/demo train.epochs=10

A positional config may join files with ``+`` (``base.yaml+method.yaml``); ``--bases`` x
``--methods`` adds every combination. ``key=value`` overrides apply to every run. A run whose
folder already holds results.json is skipped and any other continues from its last checkpoint
(``run.py --output`` does that), so an interrupted sweep continues where it stopped. Runs go one
after another, each in a process of its own (so each reports its own peak memory);
``tensorboard --logdir ROOT`` then shows all of them side by side.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from ..core.config import config_name


def plan(configs: list[str], bases: list[str], methods: list[str]) -> list[list[str]]:
    runs = [c.split("+") for c in configs]
    runs += [[b, m] for b in bases for m in methods]
    return runs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="adarand-sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("items", nargs="*", metavar="CONFIG[+CONFIG] | key=value")
    p.add_argument("--bases", nargs="*", default=[], help="dataset/backbone files, combined with every --methods file")
    p.add_argument("--methods", nargs="*", default=[], help="method files")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--root", required=True, help="common folder of the run folders")
    args = p.parse_intermixed_args(argv)
    overrides = [i for i in args.items if "=" in i]
    runs = plan([i for i in args.items if "=" not in i], args.bases, args.methods)
    if not runs:
        p.error("no config given")
    if bool(args.bases) != bool(args.methods):
        p.error("--bases and --methods go together")

    root = Path(args.root)
    failed, start = [], time.time()
    for files in runs:
        for seed in args.seeds:
            out = root / config_name(files) / f"seed{seed}"
            label = f"{config_name(files)} seed {seed}"
            if (out / "results.json").exists():
                print(f"[sweep] {label}: done already, skipped", flush=True)
                continue
            print(f"[sweep] {label} -> {out}", flush=True)
            command = [sys.executable, "-m", "adarand.run", *files, *overrides, "--seed", str(seed),
                       "--output", str(out)]
            code = subprocess.run(command).returncode
            if code != 0:
                failed.append(label)
    print(f"[sweep] {len(runs) * len(args.seeds) - len(failed)} runs ok, {len(failed)} failed, "
          f"{time.time() - start:.0f} s; tables: adarand-table {root}")
    for label in failed:
        print(f"[sweep] failed: {label}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
