"""Time per training step: fine-tuning vs AdaRand, measured in one run (interleaved rounds).

    python benchmarks/step_time.py [--rounds 7] [--steps 20] [--device cpu] [--no-cars] [--no-detection] [--only vit]
                                   [--methods adarand core_tuning uot]

Both trainers are the project's Ignite trainer with the per-iteration diagnostics attached, as in
a real run; AdaRand adds its handlers (sampling, L_reg, EMA of class means, Adam step on mu).
Batches are synthetic tensors already in memory, so data loading does not blur the comparison.
Prints the median time per step of each, and the median over rounds of the ratio of the two runs
of one round (adjacent in time; the headline figure), then the ratio of the two fastest rounds (the
usual estimate of the cost without interference from the rest of the machine), for the demo model
(5x the rounds: its steps are short and noisy), a ResNet-18, a ViT-B/32, a ResNet-50 at Cars scale and Mask
R-CNN on a ResNet-50-FPN (task: detection; VOC's 20 classes, g(x) the pooled C5). Under
each: AdaRand's handlers timed alone on a fixed step, and the same handlers' time inside the
measured steps (more: between the network's large operations each small one costs more).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import statistics
import time
from types import SimpleNamespace

import torch
from ignite.engine import Engine

from adarand.core.config import DetectionConfig, ModelConfig
from adarand.core.step import StepState
from adarand.engine.trainer import create_trainer
from adarand.handlers.adarand import AdaRand, AdaRandParams
from adarand.handlers.context import RunContext
from adarand.handlers.core_tuning import CoreTuning, CoreTuningParams
from adarand.handlers.registry import Regularizer
from adarand.handlers.training_log import TrainingDiagnostics
from adarand.handlers.uot import UOT, UOTRunParams
from adarand.methods import uot
from adarand.methods.statistics import ClassStatistics
from adarand.models import create_model
from adarand.models.detection import build_detector
from adarand.tasks.classification import classification_forward
from adarand.tasks.detection import detection_forward

CASES = {
    # name: (arch, in_channels, image size, batch, classes, steps per round (None: --steps))
    "demo small_cnn (1x16x16, B=16, K=5)": ("small_cnn", 1, 16, 16, 5, None),
    "resnet18 (3x112x112, B=16, K=196)": ("resnet18", 3, 112, 16, 196, None),
    "vit_b_32 (3x128x128, B=16, K=196, d=768)": ("vit_b_32", 3, 128, 16, 196, 5),
}
DETECTION_GPU = ("maskrcnn resnet50-fpn VOC scale (800 px, B=4, K=20, d=2048)", ("resnet50", 3, 800, 4, 20, 10))
DETECTION_CPU = ("maskrcnn resnet50-fpn (320 px, B=2, K=20, d=2048)", ("resnet50", 3, 320, 2, 20, 2))
CARS_GPU = ("resnet50 Cars scale (3x224x224, B=64, K=196, d=2048)", ("resnet50", 3, 224, 64, 196, None))
CARS_CPU = ("resnet50 Cars scale (3x112x112, B=64, K=196, d=2048)", ("resnet50", 3, 112, 64, 196, 2))


def build(arch, channels, k, device, method, size=224, detection=False):
    torch.manual_seed(0)
    net, info = create_model(ModelConfig(arch=arch), num_classes=k, in_channels=channels, image_size=min(size, 224))
    if detection:  # BatchNorm statistics of random images, as pretrained ones would be, before they are frozen
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None
        mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
        with torch.no_grad():  # the images as the detector's transform hands them on: normalised
            net.train().backbone((torch.rand(4, 3, size, size) - mean) / std)
        net = build_detector(net, arch, k, DetectionConfig(min_size=size, max_size=size), [0.485, 0.456, 0.406],
                             [0.229, 0.224, 0.225])
    net = net.to(device)
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=1e-3, momentum=0.9, nesterov=True)
    trainer = create_trainer(net, opt, device, forward=detection_forward if detection else classification_forward)
    if method != "finetune":
        reg = method_regularizer(method, net, info, k, device, channels, size)
        for group in reg.parameter_groups():  # a method's own parameters (a projection head, a source head)
            opt.add_param_group(group)
        reg.attach(trainer)
    else:
        reg = None
    TrainingDiagnostics(None, k, log_every=10, max_samples=500, chunk=512, epoch_length=1000,
                        enabled=True).attach(trainer)
    return trainer, reg


def method_regularizer(method: str, net, info, k: int, device, channels: int, size: int):
    """The method's regularizer on a context of synthetic prior statistics (AdaRand) or synthetic
    source batches (UOT: mu = 1, so each step carries B source images more, 100 source classes
    selected of 1,000, a source head over all 1,000)."""
    d = net.feature_dim
    feats = torch.randn(4 * k, d, dtype=torch.float64, device=device).abs()
    labels = torch.arange(4 * k, device=device) % k
    stats = ClassStatistics(
        sums=torch.zeros(k, d, dtype=torch.float64, device=device).index_add_(0, labels, feats),
        sumsq=torch.zeros(k, d, dtype=torch.float64, device=device).index_add_(0, labels, feats ** 2),
        counts=torch.full((k,), 4, device=device))
    ctx = RunContext(cfg=None, model=net, net=net, device=device,
                     data=SimpleNamespace(num_classes=k, classes=[str(i) for i in range(k)]),
                     epoch_length=1000, pretrained=info, generator=torch.Generator(device=device),
                     _class_stats=stats)
    ctx.cfg = SimpleNamespace(train=SimpleNamespace(epochs=1), optim=SimpleNamespace(lr=1e-3, head_lr_mult=1.0), seed=0)
    if method == "adarand":
        reg = AdaRand(AdaRandParams(), ctx)
        reg.prepare()
        reg.in_step = time_handlers(reg, ("add_loss", "update_priors"))
    elif method == "core_tuning":
        reg = CoreTuning(CoreTuningParams(), ctx)
    else:  # uot, without its source files: ImageNet's 1,000 source classes, the selected ones' batches synthetic
        params = UOTRunParams(source_root="synthetic")
        reg = UOT.__new__(UOT)
        Regularizer.__init__(reg, params, ctx)
        reg.method = uot.UOT(d, SOURCE_CLASSES, selected=list(range(params.select_classes)), device=device,
                             params=params)
        reg.source_head = reg.method.source_head
        reg.position, reg._labels = 0, None
        g = torch.Generator().manual_seed(1)
        batches = [(torch.randn(STEP_BATCH[0], channels, size, size, generator=g),
                    torch.randint(0, params.select_classes, (STEP_BATCH[0],), generator=g)) for _ in range(4)]
        reg._stream = itertools.cycle(batches)
        reg.start_stream = lambda engine: None  # the synthetic stream stays
    return reg


DOUBLE, UOT_OVER_DOUBLE = "finetune_2b", "uot_over_finetune_2b"  # the rows that put UOT's cost in proportion
SOURCE_CLASSES = 1000  # ImageNet-1k's: the published source head's outputs
STEP_BATCH = [16]  # the case's batch size, which UOT's synthetic source batches match


def detection_batches(b: int, size: int, k: int, steps: int, device, g: torch.Generator) -> list:
    """Synthetic images of ``size`` pixels, each with three boxes and their masks (rectangles)."""
    out = []
    for _ in range(steps):
        images, targets = [], []
        for _ in range(b):
            corner = torch.randint(0, size // 2, (3, 2), generator=g).float()
            boxes = torch.cat([corner, corner + size // 4], 1)
            masks = torch.zeros(3, size, size, dtype=torch.uint8)
            for i, (x1, y1, x2, y2) in enumerate(boxes.long().tolist()):
                masks[i, y1:y2, x1:x2] = 1
            labels = torch.randint(1, k + 1, (3,), generator=g)
            images.append(torch.rand(3, size, size, generator=g).to(device))
            targets.append({"boxes": boxes.to(device), "labels": labels.to(device), "masks": masks.to(device),
                            "image_label": (labels[0] - 1).to(device)})
        out.append((images, targets))
    return out


def time_handlers(reg, names) -> dict[str, list]:
    """Wrap the regularizer's handlers (before it attaches them) to add up their time inside the
    step: {name: [seconds, calls]}. Host time: on a GPU it is the time to queue the work."""
    spent = {name: [0.0, 0] for name in names}
    for name in names:
        handler = getattr(reg, name)

        @functools.wraps(handler)  # keeps the handler's name (for Ignite's HandlersTimeProfiler)
        def timed(engine, handler=handler, tally=spent[name]):
            t0 = time.perf_counter()
            handler(engine)
            tally[0] += time.perf_counter() - t0
            tally[1] += 1

        setattr(reg, name, timed)
    return spent


def time_steps(trainer: Engine, batches, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    trainer.run(batches, max_epochs=1, epoch_length=len(batches))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / len(batches)


def handler_work(trainer: Engine, reg: AdaRand, batch, device, repeats: int = 200) -> float:
    """Seconds per step of AdaRand's own work, timed alone on a fixed step (no network)."""
    x, y = batch
    if isinstance(x, list):  # detection: the images and their targets
        y = torch.stack([t["image_label"] for t in y])
    feats = torch.randn(y.shape[0], reg.mu.shape[1], device=device)
    step = StepState(x=x, y=y, logits=None, features=feats)
    trainer.state.step = trainer.state.output = step

    def once():
        reg.add_loss(trainer)
        reg.update_priors(trainer)

    for _ in range(10):
        once()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        once()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-cars", action="store_true", help="skip the ResNet-50 case at Cars scale")
    p.add_argument("--no-detection", action="store_true", help="skip the Mask R-CNN case")
    p.add_argument("--only", help="run only the cases whose name contains this text (e.g. vit)")
    p.add_argument("--methods", nargs="+", default=["adarand"], choices=["adarand", "core_tuning", "uot"],
                   help="the methods timed against fine-tuning (core_tuning and uot on classification cases only)")
    args = p.parse_args()
    device = torch.device(args.device)
    cases = dict(CASES)
    if not args.no_cars:
        name, case = CARS_GPU if device.type == "cuda" else CARS_CPU
        cases[name] = case
    if not args.no_detection:
        name, case = DETECTION_GPU if device.type == "cuda" else DETECTION_CPU
        cases[name] = case
    if args.only:
        cases = {name: case for name, case in cases.items() if args.only in name}
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{args.rounds} interleaved rounds of {args.steps} steps; median ms per step")
    print(f"{'model / method':56s} {'fine-tuning':>12s} {'method':>12s} {'extra':>8s} {'ratio':>7s}")
    for name, (arch, ch, size, b, k, steps) in cases.items():
        g = torch.Generator().manual_seed(0)
        detection = name.startswith("maskrcnn")
        methods = [m for m in args.methods if m == "adarand" or not detection]
        STEP_BATCH[0] = b
        if detection:
            batches = detection_batches(b, size, k, steps or args.steps, device, g)
        else:
            batches = [(torch.randn(b, ch, size, size, generator=g).to(device),
                        torch.randint(0, k, (b,), generator=g).to(device)) for _ in range(steps or args.steps)]
        built = {m: build(arch, ch, k, device, m, size, detection) for m in ("finetune", *methods)}
        data = {m: batches for m in built}
        if "uot" in methods:  # fine-tuning on the (1 + mu) B images of UOT's step: the floor of its cost
            built[DOUBLE] = build(arch, ch, k, device, "finetune", size, detection)
            data[DOUBLE] = [(torch.cat([x, x]), torch.cat([y, y])) for x, y in batches]
        trainers = {m: t for m, (t, _) in built.items()}
        regs = {m: r for m, (_, r) in built.items()}
        for m, t in trainers.items():  # warm-up (and AdaRand's prior initialisation)
            time_steps(t, data[m][:3], device)
        if "adarand" in regs:
            for tally in regs["adarand"].in_step.values():
                tally[:] = [0.0, 0]
        times = {m: [] for m in trainers}
        # per round: runs adjacent in time, so slow drifts of the machine cancel
        ratios = {m: [] for m in (*methods, *([DOUBLE, UOT_OVER_DOUBLE] if DOUBLE in trainers else []))}
        rounds = 5 if steps is not None else args.rounds * (5 if arch == "small_cnn" else 1)
        for r in range(rounds):
            order = list(trainers) if r % 2 == 0 else list(reversed(trainers))
            for m in order:
                times[m].append(time_steps(trainers[m], data[m], device))
            for m in methods:
                ratios[m].append(times[m][-1] / times["finetune"][-1])
            if DOUBLE in trainers:
                ratios[DOUBLE].append(times[DOUBLE][-1] / times["finetune"][-1])
                ratios[UOT_OVER_DOUBLE].append(times["uot"][-1] / times[DOUBLE][-1])
        ft = statistics.median(times["finetune"])
        for m in methods:
            ad = statistics.median(times[m])
            q = statistics.quantiles(ratios[m], n=4) if len(ratios[m]) > 3 else [min(ratios[m]), 0, max(ratios[m])]
            fastest = min(times[m]) / min(times["finetune"])
            print(f"{name + ' ' + m:56s} {1e3 * ft:12.2f} {1e3 * ad:12.2f} {1e3 * (ad - ft):8.2f} "
                  f"{statistics.median(ratios[m]):7.3f}  (per-round ratios: quartiles {q[0]:.3f}-{q[2]:.3f}, "
                  f"{rounds} rounds; fastest rounds {fastest:.3f})", flush=True)
        if DOUBLE in trainers:
            for label, key in ((f"{name} fine-tuning on 2B images / on B", DOUBLE),
                               ("  uot / fine-tuning on 2B images (its cost beyond its images)", UOT_OVER_DOUBLE)):
                q = statistics.quantiles(ratios[key], n=4) if len(ratios[key]) > 3 else [min(ratios[key]), 0,
                                                                                         max(ratios[key])]
                print(f"{label:56s} {'':12s} {'':12s} {'':8s} {statistics.median(ratios[key]):7.3f}  (per-round "
                      f"ratios: quartiles {q[0]:.3f}-{q[2]:.3f})", flush=True)
        if "adarand" in regs:
            inside = {name: 1e3 * t / max(n, 1) for name, (t, n) in regs["adarand"].in_step.items()}
            alone = handler_work(trainers["adarand"], regs["adarand"], batches[0], device)
            print(f"{'  AdaRand handler work alone (forward of L_reg, EMA, prior step)':56s} {'':12s} {1e3 * alone:12.3f}"
                  f" {'':8s} {1 + alone / ft:7.3f}", flush=True)
            print(f"{'  the same handlers timed inside the steps':56s} {'':12s} {sum(inside.values()):12.3f}"
                  f"  ({', '.join(f'{k} {v:.3f}' for k, v in inside.items())})", flush=True)


if __name__ == "__main__":
    main()
