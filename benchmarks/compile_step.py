"""``train.compile``: a training step of ResNet-18 compiled with ``torch.compile`` against the eager
step, and the time the compilation takes, measured within one run.

    python benchmarks/compile_step.py [--batch 16] [--size 160] [--steps 10]

The step is the engine's: forward to (logits, features), cross-entropy plus AdaRand's L_reg on the
features, backward, SGD with momentum. Times are medians over ``--steps`` steps after warm-up;
the compile time is the first compiled step's (forward and backward graphs) minus an eager step.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from adarand.models.classifier import Classifier
from adarand.models.torchvision_models import create_torchvision


def step_fn(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
            z: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    logits, features = model(x)
    loss = F.cross_entropy(logits, y) + (features - z).pow(2).sum(1).mean()
    loss.backward()
    optimizer.step()


def time_steps(model, optimizer, batch, steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step_fn(model, optimizer, *batch)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()
    torch.manual_seed(0)
    net, _ = create_torchvision("resnet18", 196, args.size)
    assert isinstance(net, Classifier)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = torch.randint(0, 196, (args.batch,))
    z = torch.randn(args.batch, net.feature_dim)
    batch = (x, y, z)

    time_steps(net, optimizer, batch, 2)  # warm-up
    eager = statistics.median(time_steps(net, optimizer, batch, args.steps))
    compiled = torch.compile(net)
    start = time.perf_counter()
    step_fn(compiled, optimizer, *batch)
    compile_s = time.perf_counter() - start - eager
    time_steps(compiled, optimizer, batch, 2)
    fast = statistics.median(time_steps(compiled, optimizer, batch, args.steps))
    print(f"ResNet-18, batch {args.batch} at {args.size} px, CPU ({torch.get_num_threads()} threads), "
          f"median of {args.steps} steps")
    print(f"eager step    {1000 * eager:8.1f} ms")
    print(f"compiled step {1000 * fast:8.1f} ms   compiled / eager = {fast / eager:.3f}")
    print(f"compile time  {compile_s:8.1f} s (first compiled step, forward and backward)")


if __name__ == "__main__":
    main()
