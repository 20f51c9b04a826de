"""The prior-initialisation pass against one evaluation pass over the same data, and with the cache.

    python benchmarks/prior_pass.py [--rounds 5]

Same images (in memory), same batch size, same model: the evaluator computes logits, accuracy and
loss; the prior pass computes features and per-class float64 sums, sums of squares and counts.
"cached" reads the statistics back from the on-disk cache instead.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from adarand.core.cache import load_or_compute_tensors
from adarand.core.config import ModelConfig
from adarand.methods.statistics import accumulate_statistics
from adarand.models import create_model
from adarand.tasks.evaluator import create_evaluator

CASES = {
    "demo small_cnn (1x16x16, 2048 images, K=5)": ("small_cnn", 1, 16, 2048, 5, 128),
    "resnet18 (3x112x112, 256 images, K=196)": ("resnet18", 3, 112, 256, 196, 64),
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device {device}, threads {torch.get_num_threads()}, median of {args.rounds} alternating passes (s)")
    print(f"{'data':44s} {'eval pass':>10s} {'prior pass':>11s} {'ratio':>7s} {'cached':>8s} {'ratio':>7s}")
    for name, (arch, ch, size, n, k, b) in CASES.items():
        g = torch.Generator().manual_seed(0)
        data = TensorDataset(torch.randn(n, ch, size, size, generator=g), torch.randint(0, k, (n,), generator=g))
        loader = DataLoader(data, batch_size=b, shuffle=False)
        net, _ = create_model(ModelConfig(arch=arch), num_classes=k, in_channels=ch)
        net = net.to(device).eval()
        evaluator = create_evaluator(net, device)
        cache = Path(tempfile.mkdtemp()) / "stats.pt"
        load_or_compute_tensors(cache, lambda: accumulate_statistics(net.backbone, loader, k, device).state_dict(), device,
                                "prior statistics")

        def sync():
            if device.type == "cuda":
                torch.cuda.synchronize()

        def timed(fn) -> float:
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            return time.perf_counter() - t0

        runs = [("eval", lambda: evaluator.run(loader)),
                ("prior", lambda: accumulate_statistics(net.backbone, loader, k, device)),
                ("cached", lambda: load_or_compute_tensors(cache, None, device, "prior statistics"))]
        for _, fn in runs:
            timed(fn)
        times = {key: [] for key, _ in runs}
        for r in range(args.rounds):
            for key, fn in (runs if r % 2 == 0 else runs[::-1]):
                times[key].append(timed(fn))
        e, pr, c = (statistics.median(times[key]) for key, _ in runs)
        print(f"{name:44s} {e:10.3f} {pr:11.3f} {pr / e:7.3f} {c:8.4f} {c / e:7.4f}", flush=True)


if __name__ == "__main__":
    main()
