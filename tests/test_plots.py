"""adarand-plot: the figures' data against the runs' own numbers, recomputed here, and valid files."""

import csv
import json
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import adarand
from adarand.experiments import plots
from adarand.experiments.report import collect

from conftest import write_tiny_config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """finetune and FNP at two lambdas, two seeds each, three epochs on a tiny folder."""
    tmp = tmp_path_factory.mktemp("plots")
    root = tmp / "runs"
    for method, lambdas in (("finetune", [None]), ("fnp", [0.1, 1.0])):
        cfg = write_tiny_config(tmp, method)  # one data folder for both
        for lam in lambdas:
            for seed in (0, 1):
                extra = {"train.epochs": 3} | ({} if lam is None else {"method.lambda": lam})
                adarand.train(cfg, extra, output=root / f"{method}{lam}" / f"seed{seed}", seed=seed, quiet=True)
    return root


def epoch_column(run_dir, column):
    with open(run_dir / "epochs.csv") as f:
        return [float(row[column]) for row in csv.DictReader(f)]


def test_figure2_plots_the_mean_and_std_over_seeds_of_each_runs_record(runs, tmp_path):
    Figure = plots.require_matplotlib()
    rows = collect([runs])
    fig, header, data = plots.figure2(Figure, rows[0].dataset, rows)
    feature_axis = fig.axes[0]
    by_label = {line.get_label(): line for line in feature_axis.get_lines()}
    for row in rows:
        per_seed = [epoch_column(runs / d.split("/")[-2] / d.split("/")[-1], "feature_norm") for d in row.run_dirs]
        mean = [statistics.mean(v) for v in zip(*per_seed, strict=True)]
        line = by_label[f"{plots.figure_label(row)} (n=2)"]  # display names: FT, FNP (λ=0.1)
        assert list(line.get_xdata()) == [1, 2, 3]
        np.testing.assert_allclose(line.get_ydata(), mean, rtol=1e-6)
        stds = [s for m, d, _, _, s, _ in data if m == row.method and d == "feature_norm"]
        np.testing.assert_allclose(stds, [statistics.stdev(v) for v in zip(*per_seed, strict=True)], rtol=1e-6)
    assert [ax.get_title() for ax in fig.axes] == [title for _, title in plots.DIAGNOSTICS]


def test_figure3_is_a_pca_of_the_kept_test_features_by_class(runs):
    """One PCA basis for every panel (the lowest seed's features of each row, together), the panels
    in the table's order."""
    Figure = plots.require_matplotlib()
    rows = collect([runs])
    fig, header, data = plots.figure3(Figure, rows[0].dataset, rows)
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert [ax.get_title() for ax in panels] == [plots.figure_label(r) for r in rows]  # the table's order
    lowest = {plots.figure_label(r): min(zip(r.seeds, r.run_dirs, strict=True))[1] for r in rows}
    kept = {m: torch.load(Path(d) / "test_features.pt", weights_only=True) for m, d in lowest.items()}
    every = np.concatenate([k["features"].double().numpy() for k in kept.values()])
    mean = every.mean(axis=0)
    values, vectors = np.linalg.eigh((every - mean).T @ (every - mean))  # the covariance's eigenvectors
    top = vectors[:, ::-1][:, :2]
    for ax in panels:
        mine_all = (kept[ax.get_title()]["features"].double().numpy() - mean) @ top
        for k, name in enumerate(kept[ax.get_title()]["classes"]):
            points = ax.collections[k].get_offsets()
            mine = mine_all[kept[ax.get_title()]["labels"].numpy() == k]
            assert ax.collections[k].get_label() == name and points.shape == mine.shape
            for c in range(2):  # each component up to its sign, the same sign in every panel
                assert min(np.abs(points[:, c] - mine[:, c]).max(), np.abs(points[:, c] + mine[:, c]).max()) < 1e-4


def test_the_sweep_figure_and_the_files(runs, tmp_path, capsys):
    Figure = plots.require_matplotlib()
    rows = collect([runs])
    fig, header, data = plots.figure_sweep(Figure, rows[0].dataset, rows, "method.lambda")
    ax = fig.axes[0]
    fnp_line = next(c for c in ax.containers if c.get_label() == "FNP").lines[0]  # the errorbar's data line
    expected = []
    for lam in (0.1, 1.0):
        accs = [100 * json.loads((runs / f"fnp{lam}" / f"seed{s}" / "results.json").read_text())["test_accuracy"]
                for s in (0, 1)]
        expected.append((statistics.mean(accs), statistics.stdev(accs)))
    assert list(fnp_line.get_xdata()) == [0.1, 1.0]
    np.testing.assert_allclose(fnp_line.get_ydata(), [m for m, _ in expected], rtol=1e-9)
    assert [(d[1], pytest.approx(d[3])) for d in data if d[0] == "fnp"] == [(0.1, expected[0][1]), (1.0, expected[1][1])]
    finetune = [100 * json.loads((runs / "finetuneNone" / f"seed{s}" / "results.json").read_text())["test_accuracy"]
                for s in (0, 1)]
    dashed = next(line for line in ax.get_lines() if line.get_label() == "FT (no λ)")
    assert dashed.get_ydata()[0] == pytest.approx(statistics.mean(finetune))

    out = tmp_path / "figures"
    assert plots.main([str(runs), "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{f}.{ext}" for f in ("figure2", "figure3", "figure_lambda") for ext in ("png", "pdf", "csv"))
    for f in ("figure2", "figure3", "figure_lambda"):
        png, pdf = out / f"{f}.png", out / f"{f}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(png) as im:
            im.verify()
        raw = pdf.read_bytes()
        assert raw.startswith(b"%PDF-") and raw.rstrip().endswith(b"%%EOF")
    assert capsys.readouterr().out.split() == [str(out / n) for n in
                                               [f"{f}.{e}" for f in ("figure2", "figure3", "figure_lambda")
                                                for e in ("png", "pdf", "csv")]]
    assert plots.main([str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert "no results.json under" in capsys.readouterr().err


def test_without_matplotlib_one_line_names_the_extra(runs, tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the extra were not installed
    assert plots.main([str(runs), "--out", str(tmp_path / "f")]) == 2
    assert capsys.readouterr().err.strip() == "error: adarand-plot needs matplotlib: pip install 'adarand[plot]'"
    assert not (tmp_path / "f").exists()


def test_mean_runs_for_tensorboard_hold_the_mean_over_seeds(runs, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rows = collect([runs])
    folders = plots.write_mean_runs(rows, tmp_path / "means")
    assert len(folders) == len(rows)
    row = next(r for r in rows if r.method == "finetune")
    folder = next(f for f in folders if f.name == "finetune")
    ea = EventAccumulator(str(folder))
    ea.Reload()
    per_seed = [epoch_column(runs / "finetuneNone" / f"seed{s}", "mutual_info") for s in (0, 1)]
    got = [e.value for e in ea.Scalars("mean/mutual_info")]
    np.testing.assert_allclose(got, [statistics.mean(v) for v in zip(*per_seed, strict=True)], rtol=1e-5)
    assert [e.step for e in ea.Scalars("mean/val_accuracy")] == [1, 2, 3] and row.n == 2


def test_no_text_overlaps_or_leaves_the_canvas_and_the_axes_name_the_metric(runs):
    """Every figure drawn: no two text boxes overlap and none leaves the canvas (their extents from
    matplotlib's renderer), the legends are outside the axes, and the axes name what they show."""
    from adarand.experiments.figure_style import text_problems

    Figure = plots.require_matplotlib()
    rows = collect([runs])
    long = "sklearn_digits 10% [small_cnn] and a dataset name as long as a real one"  # the title spans the figure
    figures = {"2": plots.figure2(Figure, long, rows), "3": plots.figure3(Figure, long, rows),
               "lambda": plots.figure_sweep(Figure, long, rows, "method.lambda")}
    for name, (fig, _, _) in figures.items():
        assert text_problems(fig) == [], name
        assert not any(ax.get_legend() for ax in fig.axes), name  # a figure legend, outside the axes
        assert "Figure" not in fig.get_suptitle()
    sweep = figures["lambda"][0].axes[0]
    assert sweep.get_ylabel() == "test accuracy (%)" and sweep.get_xlabel() == "λ" and sweep.get_xscale() == "log"
    assert [t.get_text() for t in sweep.get_xticklabels()] == ["0.1", "1"]  # ticks at the grid's values
    titles = [ax.get_title() for ax in figures["2"][0].axes]
    assert any("nats" in t and "mutual information" in t for t in titles)
    # one colour per method in every figure
    from adarand.experiments.figure_style import colour

    ft_2 = next(line for line in figures["2"][0].axes[0].get_lines() if line.get_label().startswith("FT"))
    ft_sweep = next(line for line in sweep.get_lines() if line.get_label().startswith("FT"))
    assert ft_2.get_color() == ft_sweep.get_color() == colour("finetune")


def test_adarands_prior_in_tensorboard_epochs_csv_and_its_figure(tmp_path):
    """AdaRand's prior diagnostics reach TensorBoard and epochs.csv, and the prior figure draws
    their means over seeds cleanly."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from adarand.experiments.figure_style import text_problems

    cfg = write_tiny_config(tmp_path, "adarand")
    root = tmp_path / "runs"
    for seed in (0, 1):
        adarand.train(cfg, {"train.epochs": 2}, output=root / "adarand" / f"seed{seed}", seed=seed, quiet=True)
    events = EventAccumulator(str(root / "adarand" / "seed0"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"prior/mu_norm", "prior/feature_norm", "prior/negative_fraction", "prior/mu_distance"} <= tags
    Figure = plots.require_matplotlib()
    rows = collect([root])
    fig, header, data = plots.figure_prior(Figure, rows[0].dataset, rows)
    assert text_problems(fig) == []
    columns = {"prior_mu_norm", "prior_feature_norm", "prior_negative_fraction", "prior_mu_distance"}
    assert {d[1] for d in data} == columns
    for name in columns:
        per_seed = [epoch_column(root / "adarand" / f"seed{s}", name) for s in (0, 1)]
        means = [statistics.mean(v) for v in zip(*per_seed, strict=True)]
        assert [m for _, n, _, m, _, _ in data if n == name] == pytest.approx(means, rel=1e-9)
    assert all(0.0 <= m <= 1.0 for _, n, _, m, _, _ in data if n == "prior_negative_fraction")
