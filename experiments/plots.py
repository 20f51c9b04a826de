"""The paper's figures as files, from finished run folders (``adarand-plot``; the ``plot`` extra:
matplotlib).

    adarand-plot runs/demo --out figures                        # every figure the runs have data for
    adarand-plot runs/lambda --figure lambda --key method.lambda --out figures

* ``--figure 2``: the four diagnostics of Figure 2 (feature norm, gradient norm, feature entropy,
  mutual information) per epoch, one colour per method: the mean over seeds with a ± std band,
  from each run's ``epochs.csv``.
* ``--figure 3``: a PCA of the selected model's features g(x) of test images, one panel per
  method, coloured by class name, from each run's ``test_features.pt`` (the lowest seed's run).
* ``--figure prior``: AdaRand's prior per epoch beside Figure 2 (the norm of its means against the
  features', the share of its coordinates below zero, its distance to the class means), from the
  ``prior_*`` columns of ``epochs.csv``.
* ``--figure lambda``: test accuracy against a swept key (``--key``, default ``method.lambda``) per
  method, mean ± std over seeds (Figure IV); a method without that key is a dashed line with its
  band.

Runs are grouped as ``adarand-table`` groups them: one curve per experiment (every key but the
seed), one figure per dataset. Each figure is written as PNG and PDF, with the numbers it plots
as CSV beside it.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

from ..core.errors import UserError
from ..engine.logs.epoch_log import EPOCH_LOG, read_epoch_log
from ..engine.test_features import TEST_FEATURES
from ..tasks import task_named
from .figure_style import METHODS, display_name, row_label, symbol
from .figure_style import colour as style_colour
from .figure_style import marker as style_marker
from .report import Row, collect, mean_std, row_order

EXTRA = "pip install 'adarand[plot]'"
DIAGNOSTICS = (("feature_norm", "feature norm ‖g(x)‖²"), ("grad_norm", "gradient norm ‖∇_W ℓ‖²"),
               ("feature_entropy", "feature entropy H(g(x)) (nats, F–G estimator)"),
               ("mutual_info", "mutual information I(g(x); y) (nats, F–G)"))
LINESTYLES = ("-", "--", ":", "-.")
# AdaRand's prior over training (epochs.csv columns, epoch means of what AdaRand.update logs)
PRIOR = (("prior_mu_norm", "prior_feature_norm", "mean norms: ‖μ_k‖ (solid), ‖g(x)‖ (dotted)"),
         ("prior_negative_fraction", None, "share of μ's coordinates below 0"),
         ("prior_mu_distance", None, "mean distance ‖μ_k − μ̄_k‖"))


def require_matplotlib():
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError(f"adarand-plot needs matplotlib: {EXTRA}") from None
    matplotlib.rcParams["pdf.fonttype"] = 42  # editable text in the PDF
    return Figure


# --- the data behind each figure ------------------------------------------------------------------

def by_dataset(rows: list[Row]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for r in sorted(rows, key=lambda r: (r.dataset, r.method)):
        out.setdefault(r.dataset, []).append(r)
    return out


def epoch_curves(row: Row, names: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, int]]:
    """Per column of ``epochs.csv`` in ``names``: (epochs, mean over the row's runs, sample std (0 for
    one run), runs), over the epochs every run has; a column no run recorded is left out."""
    logs = [{r["epoch"]: r for r in read_epoch_log(Path(d) / EPOCH_LOG)} for d in row.run_dirs
            if (Path(d) / EPOCH_LOG).is_file()]
    if not logs:
        return {}
    epochs = sorted(set.intersection(*(set(log) for log in logs)))
    out = {}
    for name in names:
        values = np.array([[log[e].get(name, math.nan) for e in epochs] for log in logs], dtype=np.float64)
        if np.isnan(values).all():
            continue
        std = values.std(axis=0, ddof=1) if len(logs) > 1 else np.zeros(len(epochs))
        out[name] = (np.array(epochs), values.mean(axis=0), std, len(logs))
    return out


def diagnostics_curves(row: Row) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, int]]:
    """Figure 2's four diagnostics of the row (``epoch_curves``)."""
    return epoch_curves(row, [name for name, _ in DIAGNOSTICS])


def pca_basis(features: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(mean, the first two principal directions (2, d)) of every set in ``features`` together:
    one basis for all panels, so that their points can be compared. Each direction's sign is chosen
    so that its largest loading is positive."""
    x = np.concatenate([f.astype(np.float64) for f in features])
    mean = x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    components = vt[:2]
    signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
    return mean, components * signs[:, None]


def project(features: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Points (N, 2) on the basis (a missing second direction: zeros)."""
    projected = (features.astype(np.float64) - mean) @ components.T
    if projected.shape[1] < 2:
        projected = np.concatenate([projected, np.zeros((len(projected), 2 - projected.shape[1]))], axis=1)
    return projected


def test_features_of(row: Row) -> tuple[np.ndarray, np.ndarray, list[str], str] | None:
    """(features, labels, class names, run folder) of the row's lowest-seed run that kept its test
    features; None when none did."""
    for _, run_dir in sorted(zip(row.seeds, row.run_dirs, strict=True)):
        path = Path(run_dir) / TEST_FEATURES
        if path.is_file():
            kept = torch.load(path, weights_only=True)
            return kept["features"].float().numpy(), kept["labels"].numpy(), list(kept["classes"]), run_dir
    return None


def pca_panels(rows: list[Row]) -> list[tuple[Row, tuple[np.ndarray, np.ndarray, list[str], str]]]:
    """Per row with test features, in the rows' order: (2-d points in the basis shared by all the
    rows, labels, class names, run folder)."""
    kept = [(r, f) for r in rows if (f := test_features_of(r)) is not None]
    if not kept:
        return []
    mean, components = pca_basis([f[0] for _, f in kept])
    return [(r, (project(f[0], mean, components), *f[1:])) for r, f in kept]


def sweep_points(rows: list[Row], key: str) -> tuple[dict, dict]:
    """Test accuracy against ``key``: {method: (values, means, stds, runs)} for the rows that set it,
    sorted by value, and {method: (mean, std, runs)} for those of this dataset that do not."""
    swept: dict[str, list] = {}
    flat: dict[str, tuple] = {}
    for r in rows:
        method = str(r.experiment.get("method.name", "finetune"))
        m, s = mean_std(r.accuracies)
        value = r.experiment.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            swept.setdefault(method, []).append((float(value), m, s or 0.0, r.n))
        else:
            flat[method] = (m, s or 0.0, r.n)
    out = {}
    for method, points in swept.items():
        points.sort()
        out[method] = tuple(np.array(column) for column in zip(*points, strict=True))
    return out, flat


# --- drawing ------------------------------------------------------------------------------------

def colours(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def figure2(Figure, dataset: str, rows: list[Row]):
    fig = Figure(figsize=(11, 7.5), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    rows = sorted(rows, key=row_order)
    curves = [(r, diagnostics_curves(r)) for r in rows]
    variants: dict[str, int] = {}
    for row, curve in curves:
        name_of = method_name(row)
        style = LINESTYLES[variants.get(name_of, 0) % len(LINESTYLES)]  # a method's rows: one colour, other dashes
        variants[name_of] = variants.get(name_of, 0) + 1
        for ax, (name, _) in zip(axes, DIAGNOSTICS, strict=True):
            if name not in curve:
                continue
            epochs, mean, std, n = curve[name]
            ax.plot(epochs, mean, color=style_colour(name_of), linestyle=style, marker=style_marker(name_of),
                    markevery=max(1, len(epochs) // 8), markersize=4, label=f"{figure_label(row)} (n={n})")
            ax.fill_between(epochs, mean - std, mean + std, color=style_colour(name_of), alpha=0.15, linewidth=0)
    titles = dict(DIAGNOSTICS)
    # what each task's gradient-norm diagnostic measures
    titles["grad_norm"] = " / ".join(dict.fromkeys(task_named(r.task).grad_norm_label for r in rows))
    from matplotlib.ticker import MaxNLocator  # the plot extra's (require_matplotlib has checked it)

    for ax, name in zip(axes, titles, strict=True):
        ax.set_title(titles[name], fontsize="medium")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    outside_legend(fig, axes[0])
    fig.suptitle(f"Training diagnostics, mean ± std over seeds\n{dataset}", fontsize="medium")
    data = [(row.method, name, int(e), m, s, curve[name][3]) for row, curve in curves for name, _ in DIAGNOSTICS
            if name in curve for e, m, s in zip(*curve[name][:3], strict=True)]
    return fig, ["method", "diagnostic", "epoch", "mean", "std", "runs"], data


def figure_prior(Figure, dataset: str, rows: list[Row]):
    """AdaRand's prior beside Figure 2: its means' norm against the features', the share of its
    coordinates below zero (features after a ReLU are >= 0), and its distance to the class means
    it follows; for the rows whose runs logged them (AdaRand and its ablations)."""
    names = [n for first, second, _ in PRIOR for n in (first, second) if n]
    curves = [(r, epoch_curves(r, names)) for r in sorted(rows, key=row_order)]
    curves = [(r, c) for r, c in curves if "prior_mu_norm" in c]
    if not curves:
        return None
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    axes = fig.subplots(1, 3)
    data = []
    for i, (row, curve) in enumerate(curves):
        name_of = method_name(row)
        style = LINESTYLES[i % len(LINESTYLES)] if len({method_name(r) for r, _ in curves}) < len(curves) else "-"
        for ax, (first, second, _) in zip(axes, PRIOR, strict=True):
            for name, dashes in ((first, style), (second, ":")):
                if name is None or name not in curve:
                    continue
                epochs, mean, std, n = curve[name]
                label = f"{figure_label(row)} (n={n})" if name == first else None
                ax.plot(epochs, mean, color=style_colour(name_of), linestyle=dashes, label=label)
                ax.fill_between(epochs, mean - std, mean + std, color=style_colour(name_of), alpha=0.15, linewidth=0)
                data += [(row.method, name, int(e), m, s, n) for e, m, s in zip(epochs, mean, std, strict=True)]
    from matplotlib.ticker import MaxNLocator  # the plot extra's (require_matplotlib has checked it)

    for ax, (_, _, title) in zip(axes, PRIOR, strict=True):
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[1].set_ylim(0, 1)
    outside_legend(fig, axes[0])
    fig.suptitle(f"AdaRand's prior over training, mean ± std over seeds\n{dataset}", fontsize="medium")
    return fig, ["method", "quantity", "epoch", "mean", "std", "runs"], data


def figure3(Figure, dataset: str, rows: list[Row]):
    panels = pca_panels(sorted(rows, key=row_order))  # the table's order, one shared basis
    if not panels:
        return None
    cols = min(4, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(4 * cols + 1.5, 4 * nrows), layout="constrained")
    # one basis, one scale: the panels share their axes
    axes = np.atleast_1d(fig.subplots(nrows, cols, squeeze=False, sharex=True, sharey=True).ravel())
    classes = panels[0][1][2]
    palette = colours(len(classes))
    data = []
    for ax, (row, (xy, labels, names, run_dir)) in zip(axes, panels, strict=False):
        for k, name in enumerate(names):
            mask = labels == k
            ax.scatter(xy[mask, 0], xy[mask, 1], s=6, color=palette[k % len(palette)], label=name)
        ax.set_title(figure_label(row), fontsize="medium")
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        data += [(row.method, run_dir, names[int(y)], float(a), float(b)) for (a, b), y in zip(xy, labels, strict=True)]
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles[:20], labels[:20], loc="outside right center", markerscale=3, fontsize="small")
    fig.suptitle(f"PCA of the selected model's features g(x) on test images, one basis for all panels\n{dataset}",
                 fontsize="medium")
    return fig, ["method", "run_dir", "class", "pc1", "pc2"], data


def sweep_problem(rows: list[Row], key: str) -> str | None:
    """Why a figure against ``key`` would show nothing, or None: no run sets it, or no method has
    two values of it (one point per method is no curve)."""
    swept, _ = sweep_points(rows, key)
    if not swept:
        return f"no run sets {key}"
    if all(len(values) < 2 for values, *_ in swept.values()):
        return f"no method has two values of {key} (sweep it, e.g. '{key}=[0.1,1,10]')"
    return None


def figure_sweep(Figure, dataset: str, rows: list[Row], key: str):
    swept, flat = sweep_points(rows, key)
    if sweep_problem(rows, key) is not None:
        return None
    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.subplots()
    data = []
    every = np.unique(np.concatenate([values for values, *_ in swept.values()]))
    positive = every[every > 0]
    scale = "symlog" if len(positive) and (every <= 0).any() else \
        "log" if len(positive) == len(every) and every.max() / every.min() >= 10 else "linear"
    methods = sorted(swept, key=lambda m: list(METHODS).index(m) if m in METHODS else len(METHODS))
    for i, method in enumerate(methods):
        values, means, stds, ns = swept[method]
        # each method's bars a little apart, so that they do not hide each other
        shift = 0.02 * (i - (len(methods) - 1) / 2)
        shown = values * 10 ** shift if scale == "log" else values + shift * (every.max() - every.min() or 1.0)
        ax.errorbar(shown, means, yerr=stds, color=style_colour(method), marker=style_marker(method), capsize=3,
                    label=display_name(method))
        data += [(method, float(v), float(m), float(s), int(n)) for v, m, s, n in zip(values, means, stds, ns, strict=True)]
    for method, (m, s, n) in sorted(flat.items()):
        ax.axhline(m, color=style_colour(method), linestyle="--", label=f"{display_name(method)} (no {symbol(key)})")
        ax.axhspan(m - s, m + s, color=style_colour(method), alpha=0.12, linewidth=0)
        data.append((method, "", m, s, n))
    if scale == "symlog":
        ax.set_xscale("symlog", linthresh=float(positive.min()))
    elif scale == "log":
        ax.set_xscale("log")
    ax.set_xticks(every, [f"{v:g}" for v in every])  # ticks at the grid's values
    ax.set_xticks([], minor=True)
    label = rows[0].metric_label
    ax.set_xlabel(symbol(key))
    ax.set_ylabel(f"test {label}")
    ax.grid(alpha=0.3)
    outside_legend(fig, ax)
    fig.suptitle(f"Test {label} against {symbol(key)}, mean ± std over seeds\n{dataset}", fontsize="medium")
    return fig, ["method", key, "mean", "std", "runs"], data


def method_name(row: Row) -> str:
    return str(row.experiment.get("method.name", "finetune"))


def figure_label(row: Row) -> str:
    return row_label(method_name(row), row.varied, row.experiment)


def outside_legend(fig, ax) -> None:
    """The legend of ``ax``'s curves to the right of the axes, outside them (constrained layout
    makes room for it)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right center", fontsize="small", frameon=False)


# --- files ----------------------------------------------------------------------------------------

def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def save(fig, header: list[str], data: list[tuple], out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf", out / f"{name}.csv"]
    fig.savefig(paths[0], dpi=150)
    fig.savefig(paths[1])
    with open(paths[2], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(data)
    return paths


def make_figures(rows: list[Row], figures: list[str], out: Path, key: str = "method.lambda",
                 skipped: list[str] | None = None) -> list[Path]:
    """The figures' files; ``skipped`` receives a line for each figure with nothing to show."""
    Figure = require_matplotlib()
    groups = by_dataset(rows)
    written = []
    for dataset, mine in groups.items():
        suffix = "" if len(groups) == 1 else f"-{slug(dataset)}"
        for which in figures:
            if which == "2":
                made, name = figure2(Figure, dataset, mine), "figure2"
            elif which == "3":
                made, name = figure3(Figure, dataset, mine), "figure3"
            elif which == "prior":
                made, name = figure_prior(Figure, dataset, mine), "figure_prior"
            else:
                made, name = figure_sweep(Figure, dataset, mine, key), f"figure_{slug(key.rsplit('.', 1)[-1])}"
                if made is None and skipped is not None:
                    skipped.append(f"{name}{suffix}: not drawn: {sweep_problem(mine, key)}")
            if made is not None:
                written += save(*made, out, name + suffix)
    return written


def write_mean_runs(rows: list[Row], out: Path) -> list[Path]:
    """One TensorBoard run per experiment, ``OUT/<dataset>/<method>``, holding the mean over its seeds
    of each epoch diagnostic and of the validation accuracy: ``tensorboard --logdir OUT`` shows a
    curve per method, each in a colour of its own, where a sweep's root shows one per seed."""
    written = []
    for dataset, mine in by_dataset(rows).items():
        for row in mine:
            curves = epoch_curves(row, [name for name, _ in DIAGNOSTICS] + ["val_accuracy"])
            if not curves:
                continue
            folder = out / slug(dataset) / slug(row.method)
            writer = SummaryWriter(str(folder))
            for name, (epochs, mean, _, _) in curves.items():
                for e, m in zip(epochs, mean, strict=True):
                    writer.add_scalar(f"mean/{name}", float(m), int(e))
            writer.close()
            written.append(folder)
    return written


def build_parser() -> argparse.ArgumentParser:
    """adarand-plot's options (the command-line reference is generated from them)."""
    p = argparse.ArgumentParser(prog="adarand-plot", description=__doc__.split("\n\n")[0])
    p.add_argument("roots", nargs="+", help="folders holding run folders (searched recursively)")
    p.add_argument("--out", required=True, help="the folder the figures go to")
    p.add_argument("--figure", nargs="+", choices=["2", "3", "prior", "lambda"], default=["2", "3", "prior", "lambda"],
                   help="which figures (default: all that the runs have data for)")
    p.add_argument("--key", default="method.lambda", help="--figure lambda: the swept key on the x axis")
    p.add_argument("--tensorboard", metavar="DIR",
                   help="also write a TensorBoard run per method (the mean over seeds of the epoch curves) under DIR")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    try:
        rows = collect([Path(r) for r in args.roots])
        if not rows:
            raise UserError(f"no results.json under {', '.join(args.roots)}")
        skipped: list[str] = []
        written = make_figures(rows, args.figure, Path(args.out), args.key, skipped)
        if args.tensorboard:
            written += write_mean_runs(rows, Path(args.tensorboard))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not written:
        why = "; ".join(skipped) if skipped else f"epochs.csv, test_features.pt, or runs that set {args.key}"
        print(f"error: the runs under {', '.join(args.roots)} have no data for figure(s) {', '.join(args.figure)} "
              f"({why})", file=sys.stderr)
        return 2
    for line in skipped:
        print(line)
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
