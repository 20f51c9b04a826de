"""Aggregating run folders into tables: mean ± std against a hand computation."""

import csv
import json

import pytest

from adarand.core.config import save_config
from adarand.engine.config import load_config
from adarand.experiments.report import main as table_main

from conftest import REPO


def fake_run(folder, configs, overrides, acc, epoch_time, rss):
    folder.mkdir(parents=True)
    save_config(load_config(configs, overrides), folder / "config.yaml")
    (folder / "results.json").write_text(json.dumps({"test_accuracy": acc, "time_per_epoch_s": epoch_time,
                                                     "peak_rss_mib": rss}))


def test_table_mean_std_by_hand(tmp_path, capsys):
    base = REPO / "yaml/base/digits_small_cnn.yaml"
    ft, ada = REPO / "yaml/methods/finetune.yaml", REPO / "yaml/methods/adarand.yaml"
    for i, acc in enumerate([0.80, 0.82, 0.87]):
        fake_run(tmp_path / "a" / f"ft{i}", [base, ft], [f"seed={i}"], acc, 1.0 + i, 100 + i)
    for i, acc in enumerate([0.90, 0.91]):  # made elsewhere: another folder
        fake_run(tmp_path / "b" / f"ada{i}", [base, ada], ["method.lambda=0.5", f"seed={i}"], acc, 2.0, 300)
    fake_run(tmp_path / "b" / "ada_default", [base, ada], [], 0.75, 2.0, 300)
    out_csv = tmp_path / "t.csv"
    assert table_main([str(tmp_path / "a"), str(tmp_path / "b"), "--csv", str(out_csv)]) == 0
    text = capsys.readouterr().out
    # finetune: mean 83.00; deviations -3, -1, 4 -> sample variance 26 / 2 = 13 -> std 3.61
    assert "83.00 ± 3.61 (3)" in text
    # adarand with lambda 0.5 is its own row: mean 90.50, std sqrt(0.5) = 0.71
    assert "| adarand (lambda=0.5) |" in text and "90.50 ± 0.71 (2)" in text
    assert "| adarand (lambda=1) | 75.00 (1) |" in text  # the default named too: the rows differ in it
    rows = {r["method"]: r for r in csv.DictReader(open(out_csv))}
    assert float(rows["finetune"]["acc_mean"]) == pytest.approx(83.0)
    assert float(rows["finetune"]["acc_std"]) == pytest.approx(13 ** 0.5, abs=1e-4)
    assert float(rows["finetune"]["s_per_epoch"]) == pytest.approx(2.0)  # mean of 1, 2, 3
    assert float(rows["finetune"]["peak_mib"]) == pytest.approx(102.0)  # the largest
    assert rows["adarand (lambda=1)"]["acc_std"] == "" and rows["finetune"]["dataset"] == "sklearn_digits 10% [small_cnn]"


def test_runs_pool_only_within_an_experiment_and_pair_by_seed(tmp_path, capsys):
    import math

    base = REPO / "yaml/base/digits_small_cnn.yaml"
    ft, ada = REPO / "yaml/methods/finetune.yaml", REPO / "yaml/methods/adarand.yaml"
    for seed, (a_ft, a_ada) in enumerate([(0.80, 0.83), (0.82, 0.82), (0.87, 0.91)]):
        fake_run(tmp_path / f"ft{seed}", [base, ft], [f"seed={seed}"], a_ft, 1.0, 100)
        fake_run(tmp_path / f"ada{seed}", [base, ada], [f"seed={seed}", "cache_dir=/elsewhere"], a_ada, 1.0, 100)
    fake_run(tmp_path / "ada9", [base, ada], ["seed=9"], 0.99, 1.0, 100)  # no finetune at seed 9: not paired
    fake_run(tmp_path / "short", [base, ft], ["train.epochs=3"], 0.50, 1.0, 100)  # another experiment
    assert table_main([str(tmp_path), "--paired", "finetune"]) == 0
    text = capsys.readouterr().out
    # the 3-epoch run is not pooled with the 50-epoch ones; the rows name what differs
    assert "| finetune [train.epochs=50] | 83.00 ± 3.61 (3) |" in text
    assert "| finetune [train.epochs=3] | 50.00 (1) |" in text
    assert "| adarand | 88.75 ± 7.93 (4) |" in text  # 83, 82, 91, 99 (sd 7.932): cache_dir does not split runs
    # paired on seeds 0-2: differences +3, 0, +4 points
    diffs = [3.0, 0.0, 4.0]
    m = sum(diffs) / 3
    sd = math.sqrt(sum((d - m) ** 2 for d in diffs) / 2)
    t = m / (sd / math.sqrt(3))
    p = 1 - t / math.sqrt(t * t + 2)  # two-sided p of Student's t with 2 degrees of freedom, in closed form
    paired_part = text.split("Paired against finetune on the same seeds")[1]
    line = next(row for row in paired_part.splitlines() if row.startswith("| sklearn_digits 10% [small_cnn] | adarand |"))
    assert f"| 3 | +{m:.2f} ± {sd:.2f} | 2 / 0 / 1 | {p:.3g} |" in line
    assert table_main([str(tmp_path), "--paired", "nosuch"]) == 2
    assert "no run of 'nosuch'" in capsys.readouterr().err


def test_select_on_validation_reports_the_best_validation_point_not_the_best_test_point(tmp_path, capsys):
    import math

    base = REPO / "yaml/base/digits_small_cnn.yaml"
    ft, ada = REPO / "yaml/methods/finetune.yaml", REPO / "yaml/methods/adarand.yaml"

    def run(folder, configs, overrides, test, val, val_loss=0.5):
        fake_run(folder, configs, overrides, test, 1.0, 100)
        res = json.loads((folder / "results.json").read_text())
        (folder / "results.json").write_text(json.dumps({**res, "val_accuracy": val, "val_loss": val_loss}))

    # (test, val) by lambda and seed: lambda 1.0 has the best test accuracy, lambda 0.1 the best validation
    grid = {0.1: [(0.84, 0.95), (0.86, 0.93)], 1.0: [(0.92, 0.90), (0.94, 0.90)], 0.3: [(0.80, 0.93), (0.82, 0.94)]}
    for lam, per_seed in grid.items():
        for seed, (test, val) in enumerate(per_seed):
            run(tmp_path / f"ada{lam}" / f"seed{seed}", [base, ada], [f"method.lambda={lam}", f"seed={seed}"], test, val)
    for seed, test in enumerate([0.81, 0.83]):
        run(tmp_path / "ft" / f"seed{seed}", [base, ft], [f"seed={seed}"], test, 0.9)
    runs_csv, cells_csv = tmp_path / "runs.csv", tmp_path / "cells.csv"
    assert table_main([str(tmp_path), "--select", "val", "--paired", "finetune", "--runs-csv", str(runs_csv),
                       "--csv", str(cells_csv)]) == 0
    text = capsys.readouterr().out
    selected = text.split("Selected on validation")[1].split("Paired against")[0]
    # mean validation accuracy: lambda 0.1 94.00, 0.3 93.50, 1.0 90.00; test: 85.00, 81.00, 93.00
    line = next(row for row in selected.splitlines() if "| adarand |" in row)
    assert "| method.lambda=0.1 | 3 | 2 | 94.00 ± 1.41 | 85.00 ± 1.41 |" in line
    ft_line = next(row for row in selected.splitlines() if "| finetune |" in row)
    assert "| (one point) | 1 | 2 | 90.00 ± 0.00 | 82.00 ± 1.41 |" in ft_line
    # paired on the selected points: 84 - 81, 86 - 83 -> +3, +3
    paired_part = text.split("Paired against finetune")[1]
    pline = next(row for row in paired_part.splitlines() if "| adarand" in row)
    assert "| 2 | +3.00 ± 0.00 | 2 / 0 / 0 |" in pline
    # the per-run CSV: a row per run, the varied keys as columns
    import csv
    rows = list(csv.DictReader(open(runs_csv)))
    assert len(rows) == 8 and {"method.lambda", "method.name", "test_acc", "val_acc", "seed"} <= set(rows[0])
    by = {(r["method.name"], r["method.lambda"], r["seed"]): r for r in rows}
    assert float(by["adarand", "1.0", "1"]["test_acc"]) == 94.0 and float(by["adarand", "1.0", "1"]["val_acc"]) == 90.0
    assert by["finetune", "", "0"]["run_dir"].endswith("ft/seed0")
    sel = list(csv.DictReader(open(tmp_path / "cells_selected.csv")))
    ada = next(r for r in sel if r["method"] == "adarand")
    assert json.loads(ada["chosen"]) == {"method.lambda": 0.1} and math.isclose(float(ada["acc_mean"]), 85.0)
    # a tie in mean validation accuracy goes to the lower mean validation loss: lambda 0.3 at 94.00, loss 0.1
    for seed, val in ((0, 0.95), (1, 0.93)):
        f = tmp_path / "ada0.3" / f"seed{seed}" / "results.json"
        f.write_text(json.dumps({**json.loads(f.read_text()), "val_accuracy": val, "val_loss": 0.1}))
    assert table_main([str(tmp_path), "--select", "val"]) == 0
    line = next(row for row in capsys.readouterr().out.split("Selected on validation")[1].splitlines() if "| adarand |" in row)
    assert "| method.lambda=0.3 | 3 | 2 | 94.00 ± 1.41 | 81.00 ± 1.41 |" in line


def test_a_seed_found_twice_in_one_experiment_is_refused_naming_both_folders(tmp_path, capsys):
    """The same sweep under two roots (or a copied run folder): seed 1 twice would count twice in
    the mean and pair with one of its runs only."""
    base = REPO / "yaml/base/digits_small_cnn.yaml"
    ft, ada = REPO / "yaml/methods/finetune.yaml", REPO / "yaml/methods/adarand.yaml"
    for root in ("first", "copy"):
        for seed, acc in ((0, 0.80), (1, 0.84)):
            fake_run(tmp_path / root / f"ada{seed}", [base, ada], [f"seed={seed}"], acc, 1.0, 100)
    fake_run(tmp_path / "first" / "ft0", [base, ft], ["seed=0"], 0.78, 1.0, 100)
    assert table_main([str(tmp_path / "first"), str(tmp_path / "copy"), "--paired", "finetune"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: seed 0 of sklearn_digits 10% [small_cnn] adarand is in two run "
                                               f"folders of the same experiment: {tmp_path / 'first' / 'ada0'} and "
                                               f"{tmp_path / 'copy' / 'ada0'};")
    assert table_main([str(tmp_path / "first"), "--paired", "finetune"]) == 0  # one root: each seed once


def test_detection_tables_and_figures_name_their_metric(tmp_path, capsys):
    """Over detection runs, every header, axis and caption names bbox AP, as the task words it."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from adarand.experiments import plots
    from adarand.experiments.report import collect

    base, methods = REPO / "yaml/base/shapes_small_cnn.yaml", REPO / "yaml/methods"
    for name in ("finetune", "adarand"):
        for lam in ([None] if name == "finetune" else [0.1, 1.0]):
            for seed in (0, 1):
                folder = tmp_path / f"{name}{lam}" / f"seed{seed}"
                overrides = [f"seed={seed}"] + ([] if lam is None else [f"method.lambda={lam}"])
                fake_run(folder, [base, methods / f"{name}.yaml"], overrides, 0.0, 1.0, 100)
                ap = 0.30 + 0.01 * seed + (0.0 if lam is None else 0.02 * lam)
                (folder / "results.json").write_text(json.dumps({
                    "task": "detection", "metric": "bbox_ap", "test_bbox_ap": ap, "val_bbox_ap": ap + 0.05,
                    "val_mask_ap": ap, "test_mask_ap": ap - 0.01, "time_per_epoch_s": 1.0, "peak_rss_mib": 100}))
    assert table_main([str(tmp_path), "--select", "val", "--paired", "finetune"]) == 0
    text = capsys.readouterr().out
    assert "accuracy" not in text and "acc (%)" not in text
    assert "best mean validation bbox AP" in text and "| val bbox AP | test bbox AP |" in text
    assert "test bbox AP difference (points)" in text
    rows = collect([tmp_path])
    fig, _, _ = plots.figure_sweep(Figure, rows[0].dataset, rows, "method.lambda")
    assert fig.axes[0].get_ylabel() == "test bbox AP"
    assert "bbox AP against λ" in fig.get_suptitle()
    fig2, _, _ = plots.figure2(Figure, rows[0].dataset, rows)
    assert "C5" in fig2.axes[1].get_title()  # the detection task's gradient-norm diagnostic


def test_a_root_without_a_swept_key_draws_no_sweep_figure(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from adarand.experiments import plots

    base, ada = REPO / "yaml/base/digits_small_cnn.yaml", REPO / "yaml/methods/adarand.yaml"
    for seed in (0, 1):
        fake_run(tmp_path / "runs" / f"s{seed}", [base, ada], [f"seed={seed}"], 0.8, 1.0, 100)
    assert plots.main([str(tmp_path / "runs"), "--figure", "lambda", "--out", str(tmp_path / "fig")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "figure_lambda: not drawn: no method has two values of method.lambda" in err
    assert not (tmp_path / "fig" / "figure_lambda.png").exists()


def test_every_differing_key_is_a_column_and_rows_sort_numerically(tmp_path, capsys):
    """A lambda grid (given out of order), a batch size and an optimizer that differ: each a column
    in the table and the CSV, the lambdas in numeric order, the default lambda and alpha named."""
    base, ada = REPO / "yaml/base/digits_small_cnn.yaml", REPO / "yaml/methods/adarand.yaml"
    ft = REPO / "yaml/methods/finetune.yaml"
    lambdas = [0.1, 10.0, 3.0, 1.0, 0.3]
    for i, lam in enumerate(lambdas):
        fake_run(tmp_path / f"lam{lam}", [base, ada], [f"method.lambda={lam}", "method.alpha=0.5"], 0.8 + 0.01 * i, 1, 1)
    fake_run(tmp_path / "alpha", [base, ada], ["method.alpha=0.30000000000000004"], 0.7, 1, 1)
    fake_run(tmp_path / "b32", [base, ft], ["data.batch_size=32"], 0.6, 1, 1)
    fake_run(tmp_path / "adam", [base, ft], ["optim.name=adam"], 0.65, 1, 1)
    out_csv = tmp_path / "cells.csv"
    assert table_main([str(tmp_path), "--csv", str(out_csv)]) == 0
    text = capsys.readouterr().out
    long = text.split("\n\n")[-1]
    header = long.splitlines()[0]
    for key in ("method.lambda", "method.alpha", "data.batch_size", "optim.name"):
        assert f" {key} |" in header, key
    ada_rows = [line for line in long.splitlines() if "| adarand (" in line]
    assert [row.split(" | ")[1] for row in ada_rows] == [
        "adarand (alpha=0.3, lambda=1)", "adarand (alpha=0.5, lambda=0.1)", "adarand (alpha=0.5, lambda=0.3)",
        "adarand (alpha=0.5, lambda=1)", "adarand (alpha=0.5, lambda=3)", "adarand (alpha=0.5, lambda=10)"]
    assert "| finetune [data.batch_size=16, optim.name=adam] |" in text
    assert "| finetune [data.batch_size=32, optim.name=sgd] |" in text
    cells = list(csv.DictReader(open(out_csv)))
    assert [c["method.lambda"] for c in cells if c["method"].startswith("adarand")] == ["1", "0.1", "0.3", "1", "3", "10"]
    assert {c["optim.name"] for c in cells if c["method"].startswith("finetune")} == {"adam", "sgd"}
    assert all(c["method.lambda"] == "" for c in cells if c["method"].startswith("finetune"))


def test_latex_table_cells_against_the_runs(tmp_path, capsys):
    """--latex: booktabs, mean ± std from the runs, the column's best in bold, W/L/T and p of the
    paired t-test (worked out here with scipy) against the baseline."""
    from scipy import stats

    base = REPO / "yaml/base/digits_small_cnn.yaml"
    ft, ada = REPO / "yaml/methods/finetune.yaml", REPO / "yaml/methods/adarand.yaml"
    ft_acc, ada_acc = [0.80, 0.82, 0.87], [0.83, 0.86, 0.88]
    for seed, (a, b) in enumerate(zip(ft_acc, ada_acc, strict=True)):
        fake_run(tmp_path / "ft" / f"s{seed}", [base, ft], [f"seed={seed}"], a, 1, 1)
        fake_run(tmp_path / "ada" / f"s{seed}", [base, ada], [f"seed={seed}"], b, 1, 1)
    out = tmp_path / "table.tex"
    assert table_main([str(tmp_path), "--paired", "finetune", "--latex", str(out)]) == 0
    tex = out.read_text()
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex and "begin{tabular}{lccc}" in tex
    rows = {line.split(" & ")[0]: line.split(" & ")[1:] for line in tex.splitlines() if line.endswith(r"\\")}
    diffs = [100 * (b - a) for a, b in zip(ft_acc, ada_acc, strict=True)]
    p = stats.ttest_rel([100 * v for v in ada_acc], [100 * v for v in ft_acc]).pvalue
    m, s = 100 * sum(ada_acc) / 3, stats.tstd([100 * v for v in ada_acc])
    assert rows["adarand"][0] == rf"\textbf{{{m:.2f} $\pm$ {s:.2f}}}"  # the better mean: bold
    assert rows["adarand"][1] == f"{sum(d > 0 for d in diffs)} / 0 / 0"
    assert rows["adarand"][2].removesuffix(r" \\") == f"{p:.3g}"
    m, s = 100 * sum(ft_acc) / 3, stats.tstd([100 * v for v in ft_acc])
    assert rows["finetune"][0] == f"{m:.2f} $\\pm$ {s:.2f}" and rows["finetune"][1] == "--"
    assert r"sklearn\_digits 10\% [small\_cnn]" in tex  # escaped
