"""Table 5's columns on one GPU, in one prepared run: step time and peak memory of every method,
a ViT-B/16 row, torch.compile, the data pipeline on the machine's cores, and two end-to-end runs.

    python benchmarks/gpu_check.py OUT_DIR [--smoke] [--device cuda]

The device command (a machine with PyTorch, torchvision, timm and tensorboard, no network; the
project's own wheel and the pure-Python packages it lacks are carried):

    # here, once (gpu_wheels/ is git-ignored; run carries it):
    pip wheel --no-deps -w gpu_wheels . pytorch-ignite submitit
    # there (the device tool's run, carry ["gpu_wheels"], timeout_s 600):
    pip install -q --no-deps --target /tmp/site gpu_wheels/*.whl && \\
      PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 timeout 480 python benchmarks/gpu_check.py $OUT/gpu_check; \\
      ls $OUT/gpu_check

It writes ``OUT_DIR/report.md`` (the tables) and ``OUT_DIR/figures.json`` (every figure), and
keeps the end-to-end runs' ``results.json`` there. A section that fails is reported with its error
line and the others still run. ``--smoke`` runs every section at tiny sizes on the CPU (under two
minutes; a test runs it so).

Sections:

* methods: every Table 5 method on ResNet-50, 224 px, batch 64, K = 196 (d = 2,048), on synthetic
  batches already on the device, in fp32 and in bf16 autocast + channels_last: time per step and
  its ratio to fine-tuning within the same interleaved rounds, and the peak memory of the method
  built and stepped alone (``torch.cuda.max_memory_allocated`` over what was allocated before it);
  each method is built by the engine itself (``build_run`` on a synthetic image folder, its
  ``prepare()`` run), then stepped on the synthetic batches. DELTA's channel attention (one forward
  pass per channel and batch, 38,400 for ResNet-50) is replaced by uniform weights: it is set-up
  cost, not step cost;
* vit: fine-tuning and AdaRand on ViT-B/16 at 224 px;
* compile: ``train.compile: true`` for fine-tuning and AdaRand on ResNet-50 in bf16: the first
  step (compile) time and the compiled step against the eager one;
* pipeline: images per second of the default decoder and of the resized cache through a
  DataLoader with 4, 8 and 16 workers, on 800 x 600 JPEGs the script writes, and
  ``torchvision.io.decode_jpeg(device="cuda")`` on batches of them;
* end_to_end: the demo config, and two epochs of a ResNet-50 config on a synthetic image folder,
  each through ``adarand.train`` on the device the engine picks; then one process of the nccl
  backend (``idist.Parallel(backend="nccl", nproc_per_node=1)``, which ``--nproc 1`` does not
  start) runs the prior statistics' reduction.

Targets (printed, not asserted): AdaRand / FT <= 1.02 per step in bf16 on ResNet-50 (Table 5:
1.42 per epoch); AdaRand's extra memory <= 64 MiB (Table 5: +512 MiB); the loader >= 2,000 img/s
with 16 workers and the resized cache.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine
from PIL import Image
from torch.utils.data import DataLoader

import adarand
from adarand.core.config import DataConfig
from adarand.datasets.image_list import ImageList
from adarand.datasets.resized_cache import build_resized_cache
from adarand.datasets.transforms import train_transform
from adarand.engine.build import build_run
from adarand.engine.config import load_config
from adarand.handlers.training_log import TrainingDiagnostics
from adarand.methods.statistics import accumulate_statistics, feature_loader
from adarand.models.small_cnn import create_small_cnn

# Table 5's methods by config (yaml/methods/<name>.yaml), fine-tuning first
METHODS = ["finetune", "fnp", "l2sp", "delta", "bss", "dr_tune", "co_tuning", "randreg_uniform", "randreg_normal",
           "randreg_global", "randreg_cp", "adarand_no_intra", "adarand_no_inter", "adarand", "core_tuning", "uot"]
# Table 5 of the paper (Cars, ResNet-50, an A100 at batch 64): seconds per epoch and GPU MiB
TABLE5 = {"finetune": (9.737, 8073), "fnp": (9.916, 8073), "l2sp": (12.405, 8153), "delta": (14.733, 9211),
          "bss": (11.403, 8227), "dr_tune": (25.475, 8845), "co_tuning": (11.546, 8125),
          "randreg_uniform": (9.988, 8075), "randreg_normal": (9.971, 8075), "randreg_global": (9.963, 8075),
          "randreg_cp": (11.552, 8075), "adarand_no_intra": (12.410, 8585), "adarand_no_inter": (12.841, 8585),
          "adarand": (13.824, 8585), "core_tuning": (16.872, 24223), "uot": (12.405, 14293)}
EXTRA = {"delta": ["method.channel_weights=uniform"]}  # set-up cost only; see the module docstring


class Sizes:
    """The run's sizes: the device's, or --smoke's on the CPU."""

    def __init__(self, smoke: bool):
        self.smoke = smoke
        self.arch, self.image, self.batch, self.classes = ("small_cnn", 32, 8, 4) if smoke else ("resnet50", 224, 64, 196)
        self.steps, self.rounds = (2, 2) if smoke else (8, 4)
        self.vit = ("small_cnn", 32) if smoke else ("vit_b_16", 224)
        self.workers = (0, 2) if smoke else (4, 8, 16)
        self.jpegs = 24 if smoke else 512
        self.images_per_class = 6 if smoke else 3


class Report:
    def __init__(self, out: Path):
        self.out = out
        self.figures: dict = {}
        self.lines: list[str] = []

    def section(self, name: str, fn, *args) -> None:
        start = time.time()
        print(f"[gpu_check] {name} ...", flush=True)
        try:
            fn(self, *args)
        except Exception as e:  # a failing section is reported, the others still run
            line = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            self.figures[name] = {"error": line, "traceback": traceback.format_exc()}
            self.lines += [f"## {name}", "", f"**failed**: {line}", ""]
            print(f"[gpu_check] {name} failed: {line}", flush=True)
        print(f"[gpu_check] {name}: {time.time() - start:.0f} s", flush=True)

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "figures.json").write_text(json.dumps(self.figures, indent=1, default=float))
        (self.out / "report.md").write_text("\n".join(self.lines) + "\n")


# ---------------------------------------------------------------------------------------------
# Data the script makes


def write_folder(root: Path, classes: int, per_class: int, size: int, seed: int = 0) -> Path:
    """root/{train,test}/c<k>/<i>.png: class-tinted noise."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("test", 1)):
        for k in range(classes):
            d = root / split / f"c{k:03d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                tint = np.array([(37 * k) % 256, (91 * k) % 256, (53 * k) % 256])
                img = np.clip(tint * 0.5 + rng.normal(100, 40, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i}.png")
    return root


def write_jpegs(folder: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` 800 x 600 JPEGs (Stanford Cars' size): smooth random colour fields with noise."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        img = np.asarray(Image.fromarray(small).resize((800, 600), Image.BICUBIC), dtype=np.float32)
        img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
        path = folder / f"{i:04d}.jpg"
        Image.fromarray(img).save(path, quality=90)
        paths.append(str(path))
    return paths


def source_weights(sizes: Sizes, folder: Path) -> str:
    """A weights file of the backbone with its own classifier (Co-Tuning reads it as the source
    head): random weights, as no pretrained ones can be fetched."""
    torch.manual_seed(0)
    if sizes.arch == "small_cnn":
        state = create_small_cnn(10, in_channels=3, width=4).state_dict()
    else:
        import torchvision

        state = torchvision.models.get_model(sizes.arch, weights=None).state_dict()
    path = folder / "source_weights.pt"
    torch.save(state, path)
    return str(path)


# ---------------------------------------------------------------------------------------------
# Timing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(trainer: Engine, batches, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    trainer.run(batches, max_epochs=1, epoch_length=len(batches))
    sync(device)
    return (time.perf_counter() - t0) / len(batches)


def build_method(method: str, base: list[str], sizes: Sizes, device: torch.device, batches):
    """The engine's run for ``method`` (its regularizer prepared and attached, the training log's
    diagnostics attached), its trainer ready to step on ``batches``."""
    cfg = load_config(["yaml/methods/finetune.yaml" if method == "finetune" else f"yaml/methods/{method}.yaml"],
                      base + EXTRA.get(method, []))
    run = build_run(cfg)
    run.regularizer.prepare()
    if method == "uot":  # the selected classes' images as synthetic batches on the device
        g = torch.Generator().manual_seed(1)
        source = [(torch.randn(sizes.batch, 3, sizes.image, sizes.image, generator=g).to(device),
                   torch.randint(0, 2, (sizes.batch,), generator=g)) for _ in range(2)]
        run.regularizer._stream = (source[i % 2] for i in range(10**9))
        run.regularizer.start_stream = lambda engine: None  # the synthetic stream stays
    run.regularizer.attach(run.trainer)
    TrainingDiagnostics(None, sizes.classes, log_every=10, max_samples=500, chunk=512, epoch_length=len(batches),
                        enabled=True).attach(run.trainer)
    time_steps(run.trainer, batches[:2], device)  # warm-up
    return run


def memory_mib(device: torch.device) -> float:
    return torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")


def methods_section(report: Report, sizes: Sizes, device: torch.device, work: Path, base: list[str],
                    methods: list[str], precision: str, key: str) -> None:
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(sizes.batch, 3, sizes.image, sizes.image, generator=g).to(device),
                torch.randint(0, sizes.classes, (sizes.batch,), generator=g).to(device)) for _ in range(sizes.steps)]
    runs, peaks = {}, {}
    for m in methods:
        before = memory_mib(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        runs[m] = build_method(m, base, sizes, device, batches)
        time_steps(runs[m].trainer, batches[:2], device)
        peaks[m] = (torch.cuda.max_memory_allocated(device) / 2**20 - before) if device.type == "cuda" else float("nan")
    times = {m: [] for m in methods}
    for r in range(sizes.rounds):
        for m in (methods if r % 2 == 0 else list(reversed(methods))):
            times[m].append(time_steps(runs[m].trainer, batches, device))
    ft = times["finetune"]
    rows = {}
    for m in methods:
        ratios = [t / f for t, f in zip(times[m], ft, strict=True)]
        rows[m] = {"ms_per_step": 1e3 * statistics.median(times[m]), "ratio_to_ft": statistics.median(ratios),
                   "ratios": ratios, "peak_mib": peaks[m], "extra_mib": peaks[m] - peaks["finetune"]}
    report.figures[key] = {"precision": precision, "arch": sizes.arch, "image": sizes.image, "batch": sizes.batch,
                           "classes": sizes.classes, "rows": rows}
    report.lines += [f"## {key}: {sizes.arch}, {sizes.image} px, B = {sizes.batch}, K = {sizes.classes}, {precision}", "",
                     "| method | ms / step | / fine-tuning | peak MiB | − fine-tuning's MiB | Table 5: s / epoch / FT's | "
                     "Table 5: MiB |", "|---|---|---|---|---|---|---|"]
    for m, row in rows.items():
        paper_s, paper_mib = TABLE5.get(m, (float("nan"), float("nan")))
        report.lines.append(f"| {m} | {row['ms_per_step']:.1f} | {row['ratio_to_ft']:.3f} | {row['peak_mib']:,.0f} | "
                            f"{row['extra_mib']:+,.0f} | {paper_s / TABLE5['finetune'][0]:.2f} | {paper_mib:,.0f} |")
    if "adarand" in rows:
        report.lines += ["", f"Targets: AdaRand / FT {rows['adarand']['ratio_to_ft']:.3f} (≤ 1.02 in bf16; Table 5: 1.42 "
                         f"per epoch); AdaRand's extra memory {rows['adarand']['extra_mib']:+.0f} MiB (≤ 64; Table 5: "
                         "+512 MiB)."]
    report.lines.append("")
    del runs
    if device.type == "cuda":
        torch.cuda.empty_cache()


def compile_section(report: Report, sizes: Sizes, device: torch.device, base: list[str]) -> None:
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(sizes.batch, 3, sizes.image, sizes.image, generator=g).to(device),
                torch.randint(0, sizes.classes, (sizes.batch,), generator=g).to(device)) for _ in range(sizes.steps)]
    rows = {}
    for m in ("finetune", "adarand"):
        eager = build_method(m, base, sizes, device, batches)
        t0 = time.perf_counter()
        compiled = build_method(m, base + ["train.compile=true"], sizes, device, batches)  # its warm-up compiles
        compile_s = time.perf_counter() - t0
        times = {"eager": [], "compiled": []}
        for r in range(sizes.rounds):
            for name, run in ((("eager", eager), ("compiled", compiled)) if r % 2 == 0 else
                              (("compiled", compiled), ("eager", eager))):
                times[name].append(time_steps(run.trainer, batches, device))
        rows[m] = {"compile_s": compile_s, "eager_ms": 1e3 * statistics.median(times["eager"]),
                   "compiled_ms": 1e3 * statistics.median(times["compiled"]),
                   "compiled_over_eager": statistics.median([c / e for c, e in zip(times["compiled"], times["eager"],
                                                                                   strict=True)])}
    report.figures["compile"] = rows
    report.lines += ["## compile (train.compile: true)", "", "| method | build + compile s | eager ms | compiled ms | "
                     "compiled / eager |", "|---|---|---|---|---|"]
    for m, row in rows.items():
        report.lines.append(f"| {m} | {row['compile_s']:.0f} | {row['eager_ms']:.1f} | {row['compiled_ms']:.1f} | "
                            f"{row['compiled_over_eager']:.3f} |")
    report.lines.append("")


def pipeline_section(report: Report, sizes: Sizes, device: torch.device, work: Path) -> None:
    paths = write_jpegs(work / "jpegs", sizes.jpegs)
    cfg = DataConfig(root=str(work), image_size=224, resize_size=256, mean=[0.485, 0.456, 0.406],
                     std=[0.229, 0.224, 0.225], interpolation="bilinear")
    samples = [(p, 0) for p in paths]
    cache = build_resized_cache(paths, work / "cache", 294, "torchvision", "bilinear", False, max(sizes.workers), False)
    rows = {}
    for kind in ("default", "resized_cache"):
        for workers in sizes.workers:
            ds = ImageList(samples, train_transform(cfg), cache=cache if kind == "resized_cache" else None)
            loader = DataLoader(ds, batch_size=64, num_workers=workers, shuffle=False)
            for _ in loader:  # warm-up: workers started, files in the page cache
                break
            t0 = time.perf_counter()
            n = sum(len(y) for _, y in loader)
            rows[f"{kind}, {workers} workers"] = n / (time.perf_counter() - t0)
    if device.type == "cuda":
        from torchvision.io import decode_jpeg, read_file

        data = [read_file(p) for p in paths]
        decode_jpeg(data[:8], device=device)
        sync(device)
        t0 = time.perf_counter()
        for i in range(0, len(data), 64):
            decode_jpeg(data[i:i + 64], device=device)
        sync(device)
        rows["decode_jpeg on the GPU, batches of 64"] = len(data) / (time.perf_counter() - t0)
    report.figures["pipeline"] = {"images": len(paths), "img_per_s": rows, "cpus": os.cpu_count()}
    report.lines += [f"## data pipeline ({len(paths)} JPEGs of 800 x 600, {os.cpu_count()} cores)", "",
                     "| path | img/s |", "|---|---|"] + [f"| {k} | {v:,.0f} |" for k, v in rows.items()]
    best = rows.get(f"resized_cache, {max(sizes.workers)} workers", float("nan"))
    report.lines += ["", f"Target: ≥ 2,000 img/s with 16 workers and the resized cache (here {best:,.0f}).", ""]


def nccl_reduction(local_rank: int, folder: str, out: str) -> None:
    """One process of the nccl (gloo on the CPU) backend: the prior statistics' all-reduce."""
    device = idist.device()
    data = ImageList([(str(p), i % 2) for i, p in enumerate(sorted(Path(folder).rglob("*.png")))],
                     train_transform(DataConfig(root=folder, image_size=16, resize_size=16, mean=[0.5] * 3, std=[0.25] * 3,
                                                interpolation="bilinear")))
    net = create_small_cnn(2, in_channels=3, width=4).to(device)
    stats = accumulate_statistics(net.backbone, feature_loader(data, 8, 0), 2, device)
    Path(out).write_text(json.dumps({"backend": idist.backend(), "world": idist.get_world_size(),
                                     "counts": stats.counts.tolist()}))


def end_to_end_section(report: Report, sizes: Sizes, device: torch.device, work: Path, base: list[str]) -> None:
    quiet = ["train.progress=false", f"cache_dir={work / 'cache'}"]
    demo = adarand.train("demo", quiet + (["train.epochs=3"] if sizes.smoke else []), output=work / "e2e_demo",
                         quiet=True)
    big = adarand.train("yaml/methods/adarand.yaml", base + ["train.epochs=2", "diagnostics.test_features=16"],
                        output=work / "e2e_resnet", quiet=True, nproc=1)
    for name, results in (("demo", demo), ("resnet", big)):
        (report.out / f"results_{name}.json").write_text(json.dumps(results, indent=1, default=float))
    backend = "nccl" if device.type == "cuda" else "gloo"
    with idist.Parallel(backend=backend, nproc_per_node=1) as parallel:
        parallel.run(nccl_reduction, str(work / "images" / "train"), str(work / "nccl.json"))
    nccl = json.loads((work / "nccl.json").read_text())
    report.figures["end_to_end"] = {
        name: {k: r.get(k) for k in ("test_accuracy", "val_accuracy", "time_per_epoch_s", "wall_time_s", "device",
                                     "peak_gpu_mib", "peak_rss_mib")} for name, r in (("demo", demo), ("resnet", big))}
    report.figures["end_to_end"]["process_group"] = nccl
    report.lines += ["## end to end", "", "| run | device | test acc | s / epoch | peak GPU MiB |", "|---|---|---|---|---|"]
    for name, r in (("demo", demo), ("resnet (synthetic folder, 2 epochs)", big)):
        report.lines.append(f"| {name} | {r['device']} | {100 * r['test_accuracy']:.2f} % | {r['time_per_epoch_s']:.2f} | "
                            f"{r.get('peak_gpu_mib', float('nan')):,.0f} |")
    report.lines += ["", f"One process of the {nccl['backend']} backend reduced the prior statistics "
                     f"(world {nccl['world']}, counts {nccl['counts']}).", ""]


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="the folder for report.md, figures.json and the end-to-end results")
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: every section, in under two minutes")
    p.add_argument("--device", default=None, help="default: cuda (cpu with --smoke)")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.chdir(Path(__file__).resolve().parent.parent)  # the configs are read from the repository's yaml/
    device = torch.device(args.device or ("cpu" if args.smoke else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no GPU visible to torch (use --smoke on a CPU)", file=sys.stderr)
        return 2
    sizes = Sizes(args.smoke)
    report = Report(out)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    report.figures["machine"] = {"device": name, "torch": torch.__version__, "python": platform.python_version(),
                                 "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"), "smoke": args.smoke}
    report.lines += [f"# GPU check: {name}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}"
                     + (" (smoke: tiny sizes on the CPU)" if args.smoke else ""), ""]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = write_folder(work / "images", sizes.classes, sizes.images_per_class, sizes.image)
        source = write_folder(work / "source", 4, 2, sizes.image, seed=1) / "train"
        base = [f"data.root={folder}", "data.val_ratio=0.34", f"data.batch_size={sizes.batch}", "data.num_workers=0",
                f"data.image_size={sizes.image}", f"data.resize_size={sizes.image}", f"model.arch={sizes.arch}",
                f"model.pretrained={source_weights(sizes, work)}", "model.pretrained_strict=false",
                f"train.device={device.type}", "train.progress=false", "train.epoch_lines=false",
                f"cache_dir={work / 'cache'}", f"output_root={work / 'runs'}", "data.mean=[0.485,0.456,0.406]",
                "data.std=[0.229,0.224,0.225]"] + (["model.width=4"] if args.smoke else [])
        methods = list(METHODS)
        overrides = {"uot": [f"method.source_root={source}", "method.select_classes=2"],
                     "dr_tune": [f"method.bank_size={2 * sizes.batch}"]}
        for m, extra in overrides.items():
            EXTRA[m] = EXTRA.get(m, []) + extra
        report.section("methods_fp32", methods_section, sizes, device, work, base, methods, "fp32", "methods_fp32")
        report.section("methods_bf16", methods_section, sizes, device, work,
                       base + ["train.amp=bf16", "train.channels_last=true"], methods, "bf16 + channels_last",
                       "methods_bf16")
        vit_sizes = Sizes(args.smoke)
        vit_sizes.arch, vit_sizes.image = sizes.vit
        vit_base = [b for b in base if not b.startswith(("model.arch", "model.pretrained="))] + \
            [f"model.arch={vit_sizes.arch}", "model.pretrained=null"]
        report.section("vit", methods_section, vit_sizes, device, work, vit_base, ["finetune", "adarand"], "fp32", "vit")
        report.section("compile", compile_section, sizes, device,
                       base + ["train.amp=bf16", "train.channels_last=true"] +
                       (["train.compile_backend=aot_eager"] if args.smoke else []))
        report.section("pipeline", pipeline_section, sizes, device, work)
        # end to end on the device the engine picks by itself (train.device: auto)
        report.section("end_to_end", end_to_end_section, sizes, device, work,
                       [b for b in base if not b.startswith("train.device")])
        report.write()
    print((out / "report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
