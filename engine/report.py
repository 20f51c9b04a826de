"""Tables from finished run folders: test accuracy mean ± std per method and dataset, time per
epoch, peak memory (the shape of the paper's Tables 3, 4 and 5).

    adarand-table runs/demo [more folders ...] [--markdown table.md] [--csv table.csv]

Every ``results.json`` under the given folders counts, wherever it was made; its run's
``config.yaml`` says the dataset and the method. Runs of the same method with other parameters
(e.g. a lambda sweep) are separate rows: the row names the parameters that differ from the
method's defaults. std is the sample standard deviation (n - 1); with one seed it is left blank.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import sys
from pathlib import Path

import yaml

from ..core.schema import to_plain
from ..handlers.registry import get_regularizer_class


@dataclasses.dataclass
class Row:
    dataset: str
    method: str
    accuracies: list[float]
    epoch_times: list[float]
    memories: list[float]
    memory_kind: str

    @property
    def n(self) -> int:
        return len(self.accuracies)


def mean_std(values: list[float]) -> tuple[float, float | None]:
    n = len(values)
    m = sum(values) / n
    if n < 2:
        return m, None
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))


def method_label(method: dict) -> str:
    name = method.get("name", "finetune")
    try:
        defaults = to_plain(get_regularizer_class(name).Params())
    except KeyError:
        defaults = {}
    changed = [f"{k}={v}" for k, v in method.items() if k != "name" and defaults.get(k, v) != v]
    return f"{name} ({', '.join(changed)})" if changed else name


def dataset_label(data: dict, model: dict) -> str:
    name = data.get("name", "folder")
    if name == "folder":
        name = Path(str(data.get("root", "folder"))).name
    ratio = data.get("use_ratio", 1.0)
    label = f"{name} {100 * ratio:g}%" if ratio < 1.0 else name
    return f"{label} [{model.get('arch')}]" if model.get("arch") not in (None, "resnet50") else label


def collect(roots: list[Path]) -> list[Row]:
    groups: dict[tuple[str, str], Row] = {}
    for root in roots:
        for res_file in sorted(root.rglob("results.json")):
            cfg_file = res_file.parent / "config.yaml"
            if not cfg_file.is_file():
                raise SystemExit(f"error: {cfg_file}: missing (every run folder holds its resolved config)")
            res = json.loads(res_file.read_text())
            cfg = yaml.safe_load(cfg_file.read_text())
            key = (dataset_label(cfg.get("data", {}), cfg.get("model", {})), method_label(cfg.get("method", {})))
            kind = "gpu" if "peak_gpu_mib" in res else "rss"
            row = groups.setdefault(key, Row(key[0], key[1], [], [], [], kind))
            row.accuracies.append(100.0 * float(res["test_accuracy"]))
            row.epoch_times.append(float(res["time_per_epoch_s"]))
            row.memories.append(float(res.get("peak_gpu_mib", res.get("peak_rss_mib", float("nan")))))
            for name, extra in res.get("extra_test", {}).items():  # further test sets: a dataset column each
                extra_key = (f"{key[0]} → {name}", key[1])
                extra_row = groups.setdefault(extra_key, Row(extra_key[0], key[1], [], [], [], kind))
                extra_row.accuracies.append(100.0 * float(extra["accuracy"]))
                extra_row.epoch_times.append(float(res["time_per_epoch_s"]))
                extra_row.memories.append(row.memories[-1])
    return list(groups.values())


def fmt_acc(values: list[float]) -> str:
    m, s = mean_std(values)
    return f"{m:.2f} ± {s:.2f}" if s is not None else f"{m:.2f}"


def markdown(rows: list[Row]) -> str:
    datasets = sorted({r.dataset for r in rows})
    methods = list(dict.fromkeys(r.method for r in sorted(rows, key=lambda r: r.method)))
    cell = {(r.dataset, r.method): r for r in rows}
    lines = ["Test accuracy (%), mean ± std over seeds (n runs)", "",
             "| method | " + " | ".join(datasets) + " |", "|---|" + "---|" * len(datasets)]
    for m in methods:
        cells = [f"{fmt_acc(cell[d, m].accuracies)} ({cell[d, m].n})" if (d, m) in cell else "" for d in datasets]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "| dataset | method | n | test acc (%) | s / epoch | peak memory (MiB) |", "|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r.dataset, r.method)):
        mem = f"{max(r.memories):,.0f} ({r.memory_kind})"
        lines.append(f"| {r.dataset} | {r.method} | {r.n} | {fmt_acc(r.accuracies)} | "
                     f"{mean_std(r.epoch_times)[0]:.3f} | {mem} |")
    return "\n".join(lines) + "\n"


def write_csv(rows: list[Row], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "method", "n", "acc_mean", "acc_std", "s_per_epoch", "peak_mib", "memory_kind"])
        for r in sorted(rows, key=lambda r: (r.dataset, r.method)):
            m, s = mean_std(r.accuracies)
            w.writerow([r.dataset, r.method, r.n, f"{m:.4f}", "" if s is None else f"{s:.4f}",
                        f"{mean_std(r.epoch_times)[0]:.4f}", f"{max(r.memories):.1f}", r.memory_kind])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="adarand-table", description=__doc__.split("\n\n")[0])
    p.add_argument("roots", nargs="+", help="folders holding run folders (searched recursively)")
    p.add_argument("--markdown", help="also write the Markdown tables to this file")
    p.add_argument("--csv", help="write the long-form table as CSV to this file")
    args = p.parse_args(argv)
    rows = collect([Path(r) for r in args.roots])
    if not rows:
        print(f"error: no results.json under {', '.join(args.roots)}", file=sys.stderr)
        return 2
    text = markdown(rows)
    print(text, end="")
    if args.markdown:
        Path(args.markdown).write_text(text)
    if args.csv:
        write_csv(rows, Path(args.csv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
