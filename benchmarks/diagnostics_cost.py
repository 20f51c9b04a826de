"""Cost of the epoch diagnostics (feature entropy + mutual information) on synthetic features.

    python benchmarks/diagnostics_cost.py [--n 8144] [--d 2048] [--classes 196] [--chunk 512]

Prints the time of one entropy + MI computation at N = 8,144, d = 2,048 (Stanford Cars' training
set, ResNet-50 features) and the peak extra memory for several N at a fixed chunk size: each N is
measured in a fresh process (CPU: the growth of the peak resident set over the features
themselves; GPU: torch.cuda.max_memory_allocated over the features). Bounded by the chunk size,
the extra memory stays flat as N grows.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch


def measure(n: int, d: int, k: int, chunk: int, device: str) -> dict:
    from adarand.handlers.diagnostics import entropy_and_mutual_info

    g = torch.Generator().manual_seed(0)
    feats = torch.randn(n, d, generator=g).abs().to(device)  # ReLU-like features
    labels = torch.randint(0, k, (n,), generator=g).to(device)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    h, mi = entropy_and_mutual_info(feats, labels, k, chunk)
    if device == "cuda":
        torch.cuda.synchronize()
        extra = torch.cuda.max_memory_allocated() - base
    else:
        extra = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"n": n, "seconds": time.perf_counter() - t0, "extra_mib": extra / 2**20,
            "features_mib": feats.numel() * 4 / 2**20, "entropy": h, "mutual_info": mi}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=8144)
    p.add_argument("--d", type=int, default=2048)
    p.add_argument("--classes", type=int, default=196)
    p.add_argument("--chunk", type=int, default=512)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one N, print JSON
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.d, args.classes, args.chunk, args.device)))
        return
    print(f"device {args.device}, d {args.d}, {args.classes} classes, chunk {args.chunk}, threads {torch.get_num_threads()}")
    print(f"{'N':>6s} {'seconds':>9s} {'features MiB':>13s} {'peak extra MiB':>15s}")
    for n in sorted({1024, 2048, 4096, args.n}):
        out = subprocess.run([sys.executable, __file__, "--one", str(n), "--d", str(args.d), "--classes",
                              str(args.classes), "--chunk", str(args.chunk), "--device", args.device],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['n']:6d} {r['seconds']:9.2f} {r['features_mib']:13.1f} {r['extra_mib']:15.1f}", flush=True)


if __name__ == "__main__":
    main()
