"""Where AdaRand's extra time per training step goes, fine-tuning vs AdaRand on one model.

    python benchmarks/profile_step.py [--model demo|resnet18] [--rounds 20] [--steps 20] [--device cpu]

The trainers are step_time.py's (the project's Ignite trainer, the per-iteration diagnostics,
AdaRand's handlers; synthetic batches in memory). Three views, each comparing the two in one run:

1. Ignite's ``HandlersTimeProfiler`` on one run of each trainer: the median time per
   call of every handler (AdaRand's ``add_loss`` runs inside the step, at COMPUTE_LOSS), and of the
   step function itself ("processing": forward, loss, backward, optimizer step).
2. The PyTorch profiler over the same steps of each: the operators AdaRand adds per step, with
   their calls and self CPU time (the profiler's own cost per operator inflates these).
3. The cost of one small operation (an add on a K x d tensor, like AdaRand's) inside a training
   step, against the same operation in a loop of its own: what each of AdaRand's operations costs
   where it runs, between the network's large ones.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import torch
from ignite.engine import Engine, Events
from ignite.handlers import HandlersTimeProfiler
from step_time import build, time_steps
from torch.profiler import ProfilerActivity, profile

MODELS = {  # arch, in_channels, image size, batch, classes
    "demo": ("small_cnn", 1, 16, 16, 5),
    "resnet18": ("resnet18", 3, 112, 16, 196),
}


def handler_times(trainers: dict[str, Engine], batches, device, rounds: int) -> dict[str, dict[str, list[float]]]:
    """{trainer: {handler (event): [seconds per call, ...]}} from Ignite's HandlersTimeProfiler over
    one run of ``rounds`` passes over ``batches`` per trainer (the profiler keeps one run's times)."""
    times: dict[str, dict[str, list[float]]] = {}
    for m, trainer in trainers.items():
        prof = HandlersTimeProfiler()
        prof.attach(trainer)
        time_steps(trainer, batches * rounds, device)
        times[m] = {f"{name} ({getattr(event, 'name', event)})": values
                    for event, handlers in prof.event_handlers_times.items()
                    for name, values in handlers.items() if values}
        times[m]["processing (the step function)"] = prof.processing_times
    return times


def operator_table(trainer: Engine, batches, device, runs: int = 3) -> dict[str, tuple[float, float]]:
    """{operator: (calls, CPU microseconds) per step} of the outermost operators (called from Python,
    or a backward function run by the autograd engine; not those they call in turn), their time
    including what they call; over ``runs`` runs of ``batches``."""
    calls: dict[str, float] = defaultdict(float)
    spent: dict[str, float] = defaultdict(float)
    for _ in range(runs):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            time_steps(trainer, batches, device)
        for event in prof.events():
            if event.cpu_parent is None:
                calls[event.name] += 1
                spent[event.name] += event.cpu_time_total
    steps = runs * len(batches)
    return {name: (calls[name] / steps, spent[name] / steps) for name in calls}


def small_op_cost(trainer: Engine, batches, device, shape: tuple[int, int], repeats: int = 10) -> tuple[float, float, float]:
    """(first, each further, in a loop): microseconds of one add on a ``shape`` tensor, timed
    inside the step (a handler at the end of ITERATION_COMPLETED), ``repeats`` in a row, and in
    a loop of its own."""
    x = torch.rand(shape, device=device)
    out = torch.empty_like(x)
    seen: list[list[float]] = []

    def adds(engine: Engine) -> None:
        stamps = [time.perf_counter()]
        for _ in range(repeats):
            torch.add(x, 1.0, out=out)
            stamps.append(time.perf_counter())
        seen.append([b - a for a, b in zip(stamps, stamps[1:], strict=False)])

    trainer.add_event_handler(Events.ITERATION_COMPLETED, adds)
    for _ in range(5):
        time_steps(trainer, batches, device)
    trainer.remove_event_handler(adds, Events.ITERATION_COMPLETED)
    first = statistics.median(s[0] for s in seen)
    further = statistics.median(v for s in seen for v in s[1:])
    for _ in range(100):
        torch.add(x, 1.0, out=out)
    t0 = time.perf_counter()
    for _ in range(2000):
        torch.add(x, 1.0, out=out)
    loop = (time.perf_counter() - t0) / 2000
    return 1e6 * first, 1e6 * further, 1e6 * loop


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=sorted(MODELS), default="demo")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    arch, ch, size, b, k = MODELS[args.model]
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(b, ch, size, size, generator=g).to(device), torch.randint(0, k, (b,), generator=g).to(device))
               for _ in range(args.steps)]
    built = {m: build(arch, ch, k, device, m) for m in ("finetune", "adarand")}
    trainers = {m: t for m, (t, _) in built.items()}
    for t in trainers.values():  # warm-up (and AdaRand's prior initialisation)
        time_steps(t, batches[:3], device)
    print(f"{args.model}: {arch}, {ch}x{size}x{size}, B={b}, K={k}; device {device}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")

    print(f"\n1. Ignite HandlersTimeProfiler, one run of {args.rounds} x {args.steps} steps each: "
          "median microseconds per call (calls recorded;\n   the profiler drops the calls under 100 us of a "
          "handler attached with an event filter, such as the interval log)")
    times = handler_times(trainers, batches, device, args.rounds)
    names = sorted(set(times["finetune"]) | set(times["adarand"]), key=lambda n: n.startswith("processing"))
    print(f"   {'handler (event)':60s} {'fine-tuning':>18s} {'AdaRand':>18s}")
    for name in names:
        cells = [f"{1e6 * statistics.median(times[m][name]):10.1f} ({len(times[m][name]):5d})" if times[m].get(name)
                 else f"{'-':>18s}" for m in ("finetune", "adarand")]
        print(f"   {name[:60]:60s} {cells[0]} {cells[1]}")

    print("\n2. PyTorch profiler, 3 runs of each: what AdaRand adds per step (the outermost operators: called\n"
          "   from Python, or backward functions; CPU time including what they call, and the profiler's own)")
    ft, ad = (operator_table(trainers[m], batches, device) for m in ("finetune", "adarand"))
    rows = []
    for op in set(ft) | set(ad):
        (c0, t0), (c1, t1) = ft.get(op, (0.0, 0.0)), ad.get(op, (0.0, 0.0))
        if c1 - c0 > 0.01:
            rows.append((op, c1 - c0, t1 - t0))
    print(f"   {'operator':52s} {'calls/step':>10s} {'CPU us/step':>12s}")
    for op, calls, us in sorted(rows, key=lambda r: -r[2]):
        print(f"   {op[:52]:52s} {calls:10.2f} {us:12.1f}")
    print(f"   {'total':52s} {sum(c for _, c, _ in rows):10.2f} {sum(u for _, _, u in rows):12.1f}")

    if device.type == "cpu":
        d = trainers["adarand"].state.output.features.shape[1]
        first, further, loop = small_op_cost(trainers["finetune"], batches, device, (k, d))
        print(f"\n3. one add on a {k} x {d} tensor (microseconds): the first after the step {first:.1f}, "
              f"each further one {further:.1f}; in a loop of its own {loop:.1f}")


if __name__ == "__main__":
    main()
