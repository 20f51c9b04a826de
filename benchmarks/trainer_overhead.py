"""Epoch time of our Ignite trainer (fine-tuning, with its per-iteration handlers) over a plain
PyTorch loop doing the same work: same model, data loader, optimizer, no handlers; and of the
trainer with the logging and diagnostics handlers of a run (which do extra work).

    python benchmarks/trainer_overhead.py [--rounds 7]

All run on in-memory data through the same DataLoader; epochs alternate, and the medians are
compared. "trainer" is the Ignite engine with the learning-rate scheduler; "+diagnostics" adds
what a run attaches per iteration: feature norm, closed-form head gradient norm, loss sums on the
device, the NaN check and TensorBoard logging every 10 iterations, and the epoch's entropy and
mutual information.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from ignite.engine import Events
from ignite.handlers import TerminateOnNan
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.tensorboard import SummaryWriter

from adarand.core.config import ModelConfig, OptimConfig
from adarand.engine.optim import create_lr_scheduler, create_optimizer
from adarand.engine.trainer import create_trainer
from adarand.handlers.training_log import TrainingDiagnostics
from adarand.models import create_model

CASES = {
    "demo small_cnn (1x16x16, B=16, 64 iterations)": ("small_cnn", 1, 16, 16, 5, 64),
    "resnet18 (3x64x64, B=32, 12 iterations)": ("resnet18", 3, 64, 32, 10, 12),
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device {device}, threads {torch.get_num_threads()}, {args.rounds} alternating epochs each; median s per epoch")
    print(f"{'model':48s} {'plain loop':>11s} {'trainer':>9s} {'ratio':>7s} {'+diagnost.':>11s} {'ratio':>7s}")
    for name, (arch, ch, size, b, k, iters) in CASES.items():
        g = torch.Generator().manual_seed(0)
        data = TensorDataset(torch.randn(b * iters, ch, size, size, generator=g), torch.randint(0, k, (b * iters,), generator=g))
        loader = DataLoader(data, batch_size=b, shuffle=True, drop_last=True, generator=g)
        torch.manual_seed(0)
        net, _ = create_model(ModelConfig(arch=arch), num_classes=k, in_channels=ch)
        net = net.to(device)
        cfg = OptimConfig(milestones=[1000])
        opt = create_optimizer(cfg, net)

        plain_sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[1000 * len(loader)])

        def plain_epoch() -> None:
            net.train()
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                opt.zero_grad(set_to_none=True)
                logits, _ = net(x)
                F.cross_entropy(logits, y).backward()
                opt.step()
                plain_sched.step()

        bare = create_trainer(net, opt, device)  # the engine and its step only
        bare.add_event_handler(Events.ITERATION_STARTED, create_lr_scheduler(cfg, opt, len(loader), 1000))
        full = create_trainer(net, opt, device)  # plus the logging and diagnostics of a run
        full.add_event_handler(Events.ITERATION_STARTED, create_lr_scheduler(cfg, opt, len(loader), 1000))
        writer = SummaryWriter(tempfile.mkdtemp())
        TrainingDiagnostics(writer, k, log_every=10, max_samples=500, chunk=512, epoch_length=len(loader),
                            enabled=True).attach(full)
        full.add_event_handler(Events.ITERATION_COMPLETED(every=10), TerminateOnNan(lambda s: s.loss))

        def bare_epoch() -> None:
            bare.run(loader, max_epochs=bare.state.epoch + 1)

        def full_epoch() -> None:
            full.run(loader, max_epochs=full.state.epoch + 1)

        def timed(fn) -> float:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - t0

        runs = [("plain", plain_epoch), ("trainer", bare_epoch), ("trainer+diagnostics", full_epoch)]
        for _, fn in runs:  # warm-up
            timed(fn)
        times = {key: [] for key, _ in runs}
        for r in range(args.rounds):
            for key, fn in (runs if r % 2 == 0 else runs[::-1]):
                times[key].append(timed(fn))
        a, t, f = (statistics.median(times[key]) for key, _ in runs)
        print(f"{name:48s} {a:11.3f} {t:9.3f} {t / a:7.3f} {f:11.3f} {f / a:7.3f}", flush=True)


if __name__ == "__main__":
    main()
