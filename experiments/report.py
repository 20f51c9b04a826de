"""Tables from finished run folders: test accuracy mean ± std per method and dataset, time per
epoch, peak memory (the shape of the paper's Tables 3, 4 and 5), and paired comparisons.
Detection runs (``task: detection``) are scored by their test bbox AP (in points) in the same
places, with mask AP beside it, in tables of their own.

    adarand-table runs/demo [more folders ...] [--paired finetune] [--markdown table.md] [--csv table.csv]

Every ``results.json`` under the given folders counts, wherever it was made; its run's
``config.yaml`` defines the experiment. Runs are pooled only when their configs agree in every
key but the seed and where files go (``IGNORED``): a 3-epoch and a 50-epoch run, or a method at
two lambdas, are separate rows, labelled by the keys in which they differ. Each cell says how
many runs (seeds) it holds; std is the sample standard deviation (n - 1), blank for one run.

``--paired BASELINE`` adds, for every other method of the same experiment (the same config but
for ``method.*``), its differences to BASELINE seed by seed: mean ± sd, wins / losses / ties and
the p-value of a paired t-test. At one seed every method sees the same data, so these
differences are what a method changes; a paper's mean ± std hides gains smaller than the spread
between seeds.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import sys
from pathlib import Path

from scipy import stats

import yaml

from ..core.errors import UserError
from ..engine.state import flatten
from ..tasks import task_named

# keys that say nothing about the experiment: the seed, where files go, how the run is displayed
IGNORED = ("seed", "output_root", "cache_dir", "train.progress", "train.epoch_lines", "train.log_every",
           "train.stop_after", "train.device", "train.threads", "data.num_workers")


@dataclasses.dataclass
class Row:
    dataset: str
    method: str
    experiment: dict  # the flattened config, without IGNORED
    # the selecting metric (results.json's ``metric``): accuracy (%), or detection's bbox AP (points)
    metric: str = "accuracy"
    task: str = "classification"
    accuracies: list[float] = dataclasses.field(default_factory=list)  # test accuracy (%) / bbox AP, a run each
    val_accuracies: list[float] = dataclasses.field(default_factory=list)  # the selected epoch's (%)
    val_losses: list[float] = dataclasses.field(default_factory=list)
    # the selection's second figure, higher is better: -validation loss, or the validation mask AP
    val_tiebreaks: list[float] = dataclasses.field(default_factory=list)
    mask_aps: list[float] = dataclasses.field(default_factory=list)  # detection: test mask AP (points)
    seeds: list[int] = dataclasses.field(default_factory=list)
    run_dirs: list[str] = dataclasses.field(default_factory=list)
    epoch_times: list[float] = dataclasses.field(default_factory=list)
    memories: list[float] = dataclasses.field(default_factory=list)
    memory_kind: str = "rss"
    varied: dict = dataclasses.field(default_factory=dict)  # the keys that differ between its dataset's rows

    @property
    def n(self) -> int:
        return len(self.accuracies)

    @property
    def metric_label(self) -> str:
        """The selecting metric's name, as its task words it (``accuracy (%)``, ``bbox AP``)."""
        return metric_label(self.task, self.metric)

    @property
    def context(self) -> tuple:
        """The experiment without the method: what a paired comparison holds fixed."""
        return key_of({k: v for k, v in self.experiment.items() if not k.startswith("method.")})


def metric_label(task: str, metric: str) -> str:
    return task_named(task).label(metric)


def key_of(flat: dict) -> tuple:
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in flat.items()))


def mean_std(values: list[float]) -> tuple[float, float | None]:
    n = len(values)
    m = sum(values) / n
    if n < 2:
        return m, None
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))


def dataset_label(data: dict, model: dict) -> str:
    name = data.get("name", "folder")
    if name == "folder":
        name = Path(str(data.get("root", "folder"))).name
    ratio = data.get("use_ratio", 1.0)
    label = f"{name} {100 * ratio:g}%" if ratio < 1.0 else name
    return f"{label} [{model.get('arch')}]" if model.get("arch") not in (None, "resnet50") else label


def collect(roots: list[Path]) -> list[Row]:
    groups: dict[tuple, Row] = {}

    def add(key: tuple, dataset: str, method: str, experiment: dict, accuracy: float, res: dict, seed: int,
            run_dir: Path) -> None:
        kind = "gpu" if "peak_gpu_mib" in res else "rss"
        metric = res.get("metric", "accuracy")
        row = groups.setdefault(key, Row(dataset, method, experiment, metric=metric, memory_kind=kind,
                                         task=res.get("task", "classification")))
        row.accuracies.append(100.0 * accuracy)
        row.val_accuracies.append(100.0 * float(res.get(f"val_{metric}", math.nan)))
        row.val_losses.append(float(res.get("val_loss", math.nan)))
        if metric == "accuracy":
            row.val_tiebreaks.append(-row.val_losses[-1] if math.isfinite(row.val_losses[-1]) else -math.inf)
        else:
            row.val_tiebreaks.append(100.0 * float(res.get("val_mask_ap", math.nan)))
            row.mask_aps.append(100.0 * float(res.get("test_mask_ap", math.nan)))
        row.seeds.append(seed)
        row.run_dirs.append(str(run_dir))
        row.epoch_times.append(float(res["time_per_epoch_s"]))
        row.memories.append(float(res.get("peak_gpu_mib", res.get("peak_rss_mib", float("nan")))))

    for root in roots:
        for res_file in sorted(root.rglob("results.json")):
            cfg_file = res_file.parent / "config.yaml"
            if not cfg_file.is_file():
                raise SystemExit(f"error: {cfg_file}: missing (every run folder holds its resolved config)")
            res = json.loads(res_file.read_text())
            cfg = yaml.safe_load(cfg_file.read_text())
            flat = flatten(cfg)
            experiment = {k: v for k, v in flat.items() if k not in IGNORED}
            dataset = dataset_label(cfg.get("data", {}), cfg.get("model", {}))
            method = str(cfg.get("method", {}).get("name", "finetune"))  # labelled by label_differences
            seed = int(flat.get("seed", res.get("seed", 0)))
            metric = res.get("metric", "accuracy")
            add(key_of(experiment), dataset, method, experiment, float(res[f"test_{metric}"]), res, seed,
                res_file.parent)
            for name, extra in res.get("extra_test", {}).items():  # further test sets: a dataset column each
                tagged = {**experiment, "extra_test": name}
                add(key_of(tagged), f"{dataset} → {name}", method, tagged, float(extra["accuracy"]), res, seed,
                    res_file.parent)
    rows = list(groups.values())
    for row in rows:
        refuse_repeated_seeds(row)
    label_differences(rows)
    return sorted(rows, key=row_order)


def refuse_repeated_seeds(row: Row) -> None:
    """One run per seed in an experiment: a seed found twice (a copied folder, or the same sweep
    under two roots) would count twice in the mean and pair with one of its runs only. Raises
    UserError naming the seed and both folders."""
    first: dict[int, str] = {}
    for seed, run_dir in zip(row.seeds, row.run_dirs, strict=True):
        if seed in first:
            raise UserError(f"seed {seed} of {row.dataset} {row.method} is in two run folders of the same "
                            f"experiment: {first[seed]} and {run_dir}; a table counts each seed once, so remove "
                            "one of them or pass the roots apart")
        first.setdefault(seed, run_dir)


def format_value(value) -> str:
    """A config value as a table shows it: numbers to 6 significant digits (0.3, not 0.30000000000000004)."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return "" if value is None else str(value)


def differing_keys(rows: list[Row]) -> list[str]:
    """The keys that take two or more values among the rows that have them (the method's name aside)."""
    keys = sorted({k for r in rows for k in r.experiment} - {"method.name", "extra_test"})
    return [k for k in keys if len({json.dumps(r.experiment[k], sort_keys=True) for r in rows if k in r.experiment}) > 1]


def label_differences(rows: list[Row]) -> None:
    """Every key whose value differs between the rows of one dataset is a column of its own
    (``Row.varied``); those that differ between the rows of one method make its rows' labels: its
    parameters in parentheses, shown at every row even where one is the default
    (``adarand (alpha=0.5, lambda=1)``), any other key in brackets (``[train.epochs=3]``)."""
    by_dataset: dict[str, list[Row]] = {}
    for r in rows:
        by_dataset.setdefault(r.dataset, []).append(r)
    for same in by_dataset.values():
        columns = differing_keys(same)
        by_method: dict[str, list[Row]] = {}
        for r in same:
            r.varied = {k: r.experiment[k] for k in columns if k in r.experiment}
            by_method.setdefault(str(r.experiment.get("method.name", "finetune")), []).append(r)
        for name, mine in by_method.items():
            labelled = differing_keys(mine)
            for r in mine:
                params = [f"{k.removeprefix('method.')}={format_value(r.experiment[k])}" for k in labelled
                          if k.startswith("method.") and k in r.experiment]
                others = [f"{k}={format_value(r.experiment[k])}" for k in labelled
                          if not k.startswith("method.") and k in r.experiment]
                r.method = name + (f" ({', '.join(params)})" if params else "") + \
                    (f" [{', '.join(others)}]" if others else "")


def sortable(value) -> tuple:
    """Numbers before text, numbers by value (0.1, 0.3, 3.0, 10.0), None first."""
    if value is None:
        return (0, 0.0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, float(value), "")
    return (2, 0.0, json.dumps(value, sort_keys=True))


def row_order(r: Row) -> tuple:
    """Rows by dataset, method name, then the varied keys' values in numeric order."""
    return (r.dataset, str(r.experiment.get("method.name", "finetune")),
            tuple(sortable(v) for _, v in sorted(r.varied.items())), r.method)


@dataclasses.dataclass
class Paired:
    dataset: str
    method: str
    baseline: str
    differences: list[float]  # method - baseline, percentage points, seed by seed
    metric: str = "accuracy"  # what the differences are of (detection: bbox AP)
    task: str = "classification"

    def summary(self) -> tuple[float, float | None, int, int, int, float | None]:
        """(mean, sd, wins, losses, ties, p of the paired t-test; None with fewer than two pairs or
        no spread)."""
        m, sd = mean_std(self.differences)
        wins = sum(d > 0 for d in self.differences)
        losses = sum(d < 0 for d in self.differences)
        ties = len(self.differences) - wins - losses
        p = None
        if sd is not None and sd > 0:
            t = m / (sd / math.sqrt(len(self.differences)))
            p = float(2 * stats.t.sf(abs(t), df=len(self.differences) - 1))
        return m, sd, wins, losses, ties, p


def paired(rows: list[Row], baseline: str, context=None) -> list[Paired]:
    """Each method's per-seed differences to ``baseline`` (a method's name or row label) in the same
    experiment. ``context(row)``: what a pair shares (default: the experiment but ``method.*``)."""
    context = context or (lambda r: r.context)
    bases = {context(r): r for r in rows if baseline in (r.method, r.experiment.get("method.name"))}
    out = []
    for r in rows:
        base = bases.get(context(r))
        if base is None or r is base:
            continue
        base_acc = dict(zip(base.seeds, base.accuracies, strict=True))
        diffs = [a - base_acc[s] for s, a in zip(r.seeds, r.accuracies, strict=True) if s in base_acc]
        if diffs:
            out.append(Paired(r.dataset, r.method, baseline, diffs, r.metric, r.task))
    return out


# the keys ``--select val`` searches over by default: the method's parameters and the optimizer's rates
SEARCHED_OPTIM = ("optim.lr", "optim.weight_decay", "optim.head_lr_mult", "optim.layer_decay")


def searched(key: str, over: list[str] | None) -> bool:
    if over:
        return key in over
    return (key.startswith("method.") and key != "method.name") or key in SEARCHED_OPTIM


@dataclasses.dataclass
class Selected:
    row: Row  # the grid point chosen on validation
    chosen: dict  # the searched keys that vary among the candidates, at the chosen point
    candidates: list[Row]

    @property
    def method(self) -> str:
        return str(self.row.experiment.get("method.name", "finetune"))


def selection_context(row: Row, over: list[str] | None) -> tuple:
    """What the candidates of one selection share: the experiment but the searched keys."""
    return key_of({k: v for k, v in row.experiment.items() if not searched(k, over)})


def select_on_validation(rows: list[Row], over: list[str] | None = None) -> list[Selected]:
    """Per dataset and method (every key but the searched ones fixed), the grid point with the best
    mean validation accuracy over its seeds; a tie goes to the lower mean validation loss, then to
    the first point in label order. The test accuracy plays no part in the choice. (Detection: the
    best mean validation bbox AP, a tie going to the higher mean validation mask AP.)"""
    groups: dict[tuple, list[Row]] = {}
    for r in sorted(rows, key=row_order):
        groups.setdefault(selection_context(r, over), []).append(r)
    out = []
    for candidates in groups.values():
        def score(r: Row) -> tuple[float, float]:
            return mean_std(r.val_accuracies)[0], mean_std(r.val_tiebreaks)[0]

        best = max(candidates, key=score)  # max keeps the first of equal scores
        varying = [k for k in varied_keys(candidates) if searched(k, over)]
        out.append(Selected(best, {k: best.experiment.get(k) for k in varying}, candidates))
    return sorted(out, key=lambda s: (s.row.dataset, s.method))


def selected_markdown(selected: list[Selected]) -> str:
    """A table per selecting metric (classification's accuracy, detection's bbox AP), each headed by
    its task's name for it."""
    tables = []
    for label in dict.fromkeys(s.row.metric_label for s in selected):
        tables.append(selected_table([s for s in selected if s.row.metric_label == label], label))
    return "\n".join(tables)


def selected_table(selected: list[Selected], label: str) -> str:
    lines = [f"Selected on validation: per dataset and method, the grid point with the best mean validation {label} "
             f"over seeds, and its test {label}", "",
             f"| dataset | method | chosen | points | n | val {label} | test {label} |", "|---|---|---|---|---|---|---|"]
    for s in selected:
        chosen = ", ".join(f"{k}={v}" for k, v in s.chosen.items()) or "(one point)"
        lines.append(f"| {s.row.dataset} | {s.method} | {chosen} | {len(s.candidates)} | {s.row.n} | "
                     f"{fmt_acc(s.row.val_accuracies)} | {fmt_acc(s.row.accuracies)} |")
    return "\n".join(lines) + "\n"


def write_selected_csv(selected: list[Selected], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "method", "chosen", "points", "n", "val_mean", "val_std", "acc_mean", "acc_std"])
        for s in selected:
            w.writerow([s.row.dataset, s.method, json.dumps(s.chosen, sort_keys=True), len(s.candidates), s.row.n,
                        *csv_mean_std(s.row.val_accuracies), *csv_mean_std(s.row.accuracies)])


def paired_markdown(pairs: list[Paired]) -> str:
    what = " / ".join(sorted({metric_label(pr.task, pr.metric).removesuffix(" (%)") for pr in pairs}))
    lines = [f"Paired against {pairs[0].baseline} on the same seeds: test {what} difference (points)", "",
             "| dataset | method | pairs | mean ± sd | wins / losses / ties | p (paired t) |", "|---|---|---|---|---|---|"]
    for pr in sorted(pairs, key=lambda pr: (pr.dataset, pr.method)):
        m, sd, w, lo, t, p = pr.summary()
        spread = f"{m:+.2f} ± {sd:.2f}" if sd is not None else f"{m:+.2f}"
        lines.append(f"| {pr.dataset} | {pr.method} | {len(pr.differences)} | {spread} | {w} / {lo} / {t} | "
                     f"{'' if p is None else f'{p:.3g}'} |")
    return "\n".join(lines) + "\n"


def fmt_acc(values: list[float]) -> str:
    m, s = mean_std(values)
    return f"{m:.2f} ± {s:.2f}" if s is not None else f"{m:.2f}"


def markdown(rows: list[Row]) -> str:
    classification = [r for r in rows if r.metric == "accuracy"]
    detection = [r for r in rows if r.metric != "accuracy"]
    text = accuracy_markdown(classification) if classification else ""
    if detection:
        text += ("\n" if text else "") + detection_markdown(detection)
    return text


def varied_columns(rows: list[Row]) -> list[str]:
    """The keys that differ between the rows of some dataset: a column each in the long tables."""
    return sorted({k for r in rows for k in r.varied})


def key_cells(r: Row, keys: list[str]) -> str:
    return "".join(f" {format_value(r.varied.get(k))} |" for k in keys)


def detection_markdown(rows: list[Row]) -> str:
    """Test bbox and mask AP (COCO, IoU 0.50:0.95, points), mean ± std over seeds."""
    keys = varied_columns(rows)
    lines = ["Test bbox AP / mask AP (COCO AP at IoU 0.50:0.95, points), mean ± std over seeds", "",
             "| dataset | method |" + "".join(f" {k} |" for k in keys) +
             " n | bbox AP | mask AP | val bbox AP | s / epoch | peak memory (MiB) |",
             "|---|---|" + "---|" * len(keys) + "---|---|---|---|---|---|"]
    for r in sorted(rows, key=row_order):
        mask = fmt_acc(r.mask_aps) if r.mask_aps and all(math.isfinite(v) for v in r.mask_aps) else "–"
        lines.append(f"| {r.dataset} | {r.method} |{key_cells(r, keys)} {r.n} | {fmt_acc(r.accuracies)} | {mask} | "
                     f"{fmt_acc(r.val_accuracies)} | {mean_std(r.epoch_times)[0]:.3f} | "
                     f"{max(r.memories):,.0f} ({r.memory_kind}) |")
    return "\n".join(lines) + "\n"


def accuracy_markdown(rows: list[Row]) -> str:
    datasets = sorted({r.dataset for r in rows})
    methods = list(dict.fromkeys(r.method for r in sorted(rows, key=lambda r: row_order(r)[1:])))
    cell = {(r.dataset, r.method): r for r in rows}
    lines = ["Test accuracy (%), mean ± std over seeds (n runs)", "",
             "| method | " + " | ".join(datasets) + " |", "|---|" + "---|" * len(datasets)]
    for m in methods:
        cells = [f"{fmt_acc(cell[d, m].accuracies)} ({cell[d, m].n})" if (d, m) in cell else "" for d in datasets]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    keys = varied_columns(rows)
    lines += ["", "| dataset | method |" + "".join(f" {k} |" for k in keys) +
              " n | test acc (%) | val acc (%) | s / epoch | peak memory (MiB) |",
              "|---|---|" + "---|" * len(keys) + "---|---|---|---|---|"]
    for r in sorted(rows, key=row_order):
        mem = f"{max(r.memories):,.0f} ({r.memory_kind})"
        lines.append(f"| {r.dataset} | {r.method} |{key_cells(r, keys)} {r.n} | {fmt_acc(r.accuracies)} | "
                     f"{fmt_acc(r.val_accuracies)} | "
                     f"{mean_std(r.epoch_times)[0]:.3f} | {mem} |")
    return "\n".join(lines) + "\n"


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(c, c) for c in text)


def latex(rows: list[Row], pairs: list[Paired] | None = None) -> str:
    """A booktabs table per selecting metric: a row per method, a column per dataset, mean ± std
    over seeds with the best mean of each column in bold; with ``pairs``, each dataset's paired
    wins / losses / ties and p-value against the baseline beside it. Needs ``\\usepackage{booktabs}``."""
    out = []
    for label in dict.fromkeys(r.metric_label for r in rows):
        mine = [r for r in rows if r.metric_label == label]
        datasets = sorted({r.dataset for r in mine})
        methods = list(dict.fromkeys(r.method for r in sorted(mine, key=lambda r: row_order(r)[1:])))
        cell = {(r.dataset, r.method): r for r in mine}
        best = {d: max(mean_std(cell[d, m].accuracies)[0] for m in methods if (d, m) in cell) for d in datasets}
        pair = {(pr.dataset, pr.method): pr for pr in pairs or []}
        per_dataset = 3 if pairs else 1
        lines = [r"\begin{table}[t]", r"\centering",
                 rf"\caption{{Test {latex_escape(label)}, mean $\pm$ std over seeds"
                 + (f"; wins / losses / ties and paired $t$-test $p$ against {latex_escape(pairs[0].baseline)}"
                    if pairs else "") + "; the best mean of each column in bold.}",
                 r"\begin{tabular}{l" + "c" * (per_dataset * len(datasets)) + "}", r"\toprule"]
        if pairs:
            lines.append("Method & " + " & ".join(rf"\multicolumn{{3}}{{c}}{{{latex_escape(d)}}}" for d in datasets)
                         + r" \\")
            lines.append(" & " + " & ".join([r"Mean $\pm$ std & W / L / T & $p$"] * len(datasets)) + r" \\")
        else:
            lines.append("Method & " + " & ".join(latex_escape(d) for d in datasets) + r" \\")
        lines.append(r"\midrule")
        for m in methods:
            cells = []
            for d in datasets:
                r = cell.get((d, m))
                if r is None:
                    cells += [""] * per_dataset
                    continue
                mean, std = mean_std(r.accuracies)
                text = f"{mean:.2f}" + ("" if std is None else rf" $\pm$ {std:.2f}")
                cells.append(rf"\textbf{{{text}}}" if mean == best[d] else text)
                if pairs:
                    pr = pair.get((d, m))
                    if pr is None:
                        cells += ["--", "--"]
                    else:
                        _, _, w, lo, t, p = pr.summary()
                        cells += [f"{w} / {lo} / {t}", "--" if p is None else f"{p:.3g}"]
            lines.append(latex_escape(m) + " & " + " & ".join(cells) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def write_csv(rows: list[Row], path: Path) -> None:
    """A row per cell: dataset, method, a column per varied key (its value), the selecting metric
    (``metric``; ``acc_*`` and ``val_*`` are that metric's), time and memory."""
    keys = varied_columns(rows)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "method", *keys, "metric", "n", "acc_mean", "acc_std", "val_mean", "val_std",
                    "s_per_epoch", "peak_mib", "memory_kind"])
        for r in sorted(rows, key=row_order):
            values = [format_value(r.varied.get(k)) for k in keys]
            w.writerow([r.dataset, r.method, *values, r.metric, r.n, *csv_mean_std(r.accuracies),
                        *csv_mean_std(r.val_accuracies), f"{mean_std(r.epoch_times)[0]:.4f}", f"{max(r.memories):.1f}",
                        r.memory_kind])


def csv_mean_std(values: list[float]) -> list[str]:
    """[mean, sample std] as CSV cells (the std blank for one value)."""
    m, s = mean_std(values)
    return [f"{m:.4f}", "" if s is None else f"{s:.4f}"]


def varied_keys(rows: list[Row]) -> list[str]:
    """The keys whose value is not the same in every run (the seed aside)."""
    keys = sorted({k for r in rows for k in r.experiment})
    return [k for k in keys if len({json.dumps(r.experiment.get(k), sort_keys=True) for r in rows}) > 1]


def write_runs_csv(rows: list[Row], path: Path) -> None:
    """One row per run: its dataset and method, seed, test and validation accuracy, and a column for
    every key that varies across the runs."""
    varied = varied_keys(rows)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "method", "seed", "test_acc", "val_acc", "val_loss", "s_per_epoch", "peak_mib", *varied,
                    "run_dir"])
        for r in sorted(rows, key=row_order):
            values = [json.dumps(r.experiment.get(k)) if isinstance(r.experiment.get(k), (list, dict))
                      else r.experiment.get(k, "") for k in varied]
            for i in sorted(range(r.n), key=lambda i: r.seeds[i]):
                w.writerow([r.dataset, r.method, r.seeds[i], f"{r.accuracies[i]:.4f}", f"{r.val_accuracies[i]:.4f}",
                            f"{r.val_losses[i]:.6g}", f"{r.epoch_times[i]:.4f}", f"{r.memories[i]:.1f}", *values,
                            r.run_dirs[i]])


def build_parser() -> argparse.ArgumentParser:
    """adarand-table's options (the command-line reference is generated from them)."""
    p = argparse.ArgumentParser(prog="adarand-table", description=__doc__.split("\n\n")[0])
    p.add_argument("roots", nargs="+", help="folders holding run folders (searched recursively)")
    p.add_argument("--markdown", help="also write the Markdown tables to this file")
    p.add_argument("--latex", nargs="?", const="-", metavar="FILE",
                   help="a booktabs LaTeX table (best of each column in bold; with --paired, W/L/T and p beside "
                        "each dataset) to FILE, or printed after the tables without one")
    p.add_argument("--csv", help="write the long-form table as CSV to this file (with --select: also FILE_selected.csv)")
    p.add_argument("--runs-csv", help="write one row per run (seed, test and val accuracy, every varied key) to this file")
    p.add_argument("--select", choices=["val"],
                   help="per dataset and method, report the grid point with the best mean validation accuracy")
    p.add_argument("--over", nargs="+", metavar="KEY",
                   help="--select: the keys searched (default: method.* and " + ", ".join(SEARCHED_OPTIM) + ")")
    p.add_argument("--paired", metavar="BASELINE",
                   help="add each method's per-seed differences to this method (e.g. finetune); "
                        "with --select, between the selected points")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.over and not args.select:
        p.error("--over goes with --select val")
    try:
        rows = collect([Path(r) for r in args.roots])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not rows:
        print(f"error: no results.json under {', '.join(args.roots)}", file=sys.stderr)
        return 2
    text = markdown(rows)
    selected = select_on_validation(rows, args.over) if args.select else None
    if selected is not None:
        text += "\n" + selected_markdown(selected)
    if args.paired:
        if selected is None:
            pairs = paired(rows, args.paired)
        else:
            over = args.over
            pairs = paired([s.row for s in selected], args.paired,
                           context=lambda r: key_of({k: v for k, v in r.experiment.items()
                                                     if not searched(k, over) and not k.startswith("method.")}))
        if not pairs:
            print(f"error: --paired: no run of {args.paired!r} shares an experiment and a seed with another method "
                  f"(methods: {', '.join(sorted({r.method for r in rows}))})", file=sys.stderr)
            return 2
        text += "\n" + paired_markdown(pairs)
    if args.latex:
        table = latex([s.row for s in selected] if selected is not None else rows,
                      pairs if args.paired else None)
        if args.latex == "-":
            text += "\n" + table
        else:
            Path(args.latex).write_text(table)
    print(text, end="")
    if args.markdown:
        Path(args.markdown).write_text(text)
    if args.csv:
        write_csv(rows, Path(args.csv))
        if selected is not None:
            write_selected_csv(selected, Path(args.csv).with_name(Path(args.csv).stem + "_selected.csv"))
    if args.runs_csv:
        write_runs_csv(rows, Path(args.runs_csv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
