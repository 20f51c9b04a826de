"""Regenerate every demo table and figure of the README and the documentation from the commands they print.

    OMP_NUM_THREADS=1 python benchmarks/readme_demo.py [--root runs/readme] [--only table|lambda]

Runs (or continues: a sweep skips what its root holds) the demo table's sweep (18 methods x 3
seeds) and the λ grid (FT, RandReg-N(0, 1) and AdaRand at five λ, 3 seeds), then writes:

* in ``docs/reproducing.md``, between ``<!-- demo-table -->`` and ``<!-- /demo-table -->``:
  ``adarand-table ROOT/demo_table --paired finetune``; in the README, between
  ``<!-- demo-table-short -->`` and its end, a few rows of its first table;
* in ``docs/reproducing.md``, between ``<!-- demo-lambda -->`` and ``<!-- /demo-lambda -->``: the λ x
  method table of test accuracy (from the same runs), then ``adarand-table ROOT/lambda --select val
  --paired finetune``;
* ``docs/figures/demo_figure_lambda.png``, ``demo_figure2.png``, ``demo_figure3.png`` and
  ``demo_figure_prior.png`` (``adarand-plot``; Figures 2 and 3 over FT and the two methods at
  λ = 1, AdaRand's prior for AdaRand at λ = 1).

About 20 minutes on 2 CPU cores. The prose around the tables is not rewritten: read it against
the new tables.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

from adarand.experiments.figure_style import display_name
from adarand.experiments.report import collect, fmt_acc

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
REPRODUCING = REPO / "docs" / "reproducing.md"
SHORT_ROWS = ("finetune", "fnp", "randreg_normal", "randreg_cp", "adarand", "l2sp", "bss")  # the README's excerpt
FIGURES = REPO / "docs" / "figures"
LAMBDAS = "[0.1,0.3,1,3,10]"


def command(*args: str, capture: bool = False) -> str:
    print("$", " ".join(args), flush=True)
    done = subprocess.run([sys.executable, "-m", *args], cwd=REPO, check=True, text=True,
                          stdout=subprocess.PIPE if capture else None)
    return done.stdout if capture else ""


def replace_block(text: str, name: str, body: str, page: str = "README.md") -> str:
    pattern = re.compile(rf"(<!-- {name} -->\n).*?(<!-- /{name} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"error: {page} has no <!-- {name} --> ... <!-- /{name} --> block")
    return pattern.sub(lambda m: m.group(1) + "\n" + body.strip() + "\n\n" + m.group(2), text)


def short_table(table: str) -> str:
    """The first table of ``adarand-table``'s output, cut to the rows of SHORT_ROWS."""
    lines = table.strip().split("\n\n")[1].splitlines()
    rows = {line.split(" | ")[0].strip("| "): line for line in lines[2:]}
    return "\n".join(lines[:2] + [rows[m] for m in SHORT_ROWS if m in rows])


def lambda_table(root: Path) -> str:
    """Test accuracy (%) by λ (columns) and method (rows), mean ± std over seeds."""
    rows = [r for r in collect([root]) if "method.lambda" in r.experiment]
    lambdas = sorted({float(r.experiment["method.lambda"]) for r in rows})
    methods = list(dict.fromkeys(str(r.experiment["method.name"]) for r in rows))
    cell = {(str(r.experiment["method.name"]), float(r.experiment["method.lambda"])): r for r in rows}
    lines = ["| λ | " + " | ".join(f"{v:g}" for v in lambdas) + " |", "|---|" + "---|" * len(lambdas)]
    for m in methods:
        lines.append(f"| {display_name(m)} | " + " | ".join(fmt_acc(cell[m, v].accuracies) if (m, v) in cell else ""
                                                             for v in lambdas) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default="runs/readme", help="where the runs go (continued when present)")
    p.add_argument("--only", choices=["table", "lambda"], help="regenerate one of the two parts")
    args = p.parse_args(argv)
    root = (REPO / args.root).resolve()
    blocks = {}
    if args.only in (None, "table"):
        table_root = root / "demo_table"
        command("adarand.experiments.sweep", "--bases", "base/digits_small_cnn", "--methods", "methods/*",
                "method.source_root=[sklearn_digits:source]", "method.select_classes=[3]", "--seeds", "0", "1", "2",
                "--root", str(table_root))
        blocks["demo-table"] = command("adarand.experiments.report", str(table_root), "--paired", "finetune", capture=True)
    if args.only in (None, "lambda"):
        grid = root / "lambda"
        command("adarand.experiments.sweep", "--bases", "base/digits_small_cnn", "--methods", "methods/finetune",
                "methods/randreg_normal", "methods/adarand", f"method.lambda={LAMBDAS}", "--seeds", "0", "1", "2",
                "--root", str(grid))
        selected = command("adarand.experiments.report", str(grid), "--select", "val", "--paired", "finetune", capture=True)
        selected = selected[selected.index("Selected on validation"):]
        blocks["demo-lambda"] = lambda_table(grid) + "\n\n" + selected
        out = root / "figures"
        command("adarand.experiments.plots", str(grid), "--figure", "lambda", "--out", str(out))
        cells = [grid / name for name in ("digits_small_cnn-finetune", "digits_small_cnn-randreg_normal-lambda1",
                                          "digits_small_cnn-adarand-lambda1")]
        command("adarand.experiments.plots", *map(str, cells), "--figure", "2", "3", "prior", "--out", str(out))
        FIGURES.mkdir(parents=True, exist_ok=True)
        for name in ("figure_lambda", "figure2", "figure3", "figure_prior"):
            shutil.copyfile(out / f"{name}.png", FIGURES / f"demo_{name}.png")
    text = REPRODUCING.read_text()  # read at the end: the runs take minutes
    for name, body in blocks.items():
        text = replace_block(text, name, body, "docs/reproducing.md")
    REPRODUCING.write_text(text)
    if "demo-table" in blocks:
        README.write_text(replace_block(README.read_text(), "demo-table-short", short_table(blocks["demo-table"])))
    print(f"README.md, docs/reproducing.md and {FIGURES} regenerated from {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
