"""The run's per-epoch record as a CSV file beside its TensorBoard events, ``epochs.csv``: a row
per epoch with the training log's epoch means (every loss term, Figure 2's diagnostics: feature
norm, gradient norm, feature entropy, mutual information) and the validation accuracy and loss.

It is rewritten whole (atomically) after every epoch from the record the checkpoint holds, so a
continued run's file has exactly the epochs of the run, and ``adarand-plot`` reads it without
parsing event files."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from ...core.files import write_text_atomic

EPOCH_LOG = "epochs.csv"


def write_epoch_log(path: Path, history: list[dict]) -> None:
    columns = list(dict.fromkeys(k for row in history for k in row))
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(columns)
    for row in history:
        w.writerow(["" if row.get(k) is None else (row[k] if k == "epoch" else f"{row[k]:.9g}") for k in columns])
    write_text_atomic(path, out.getvalue())


def read_epoch_log(path: Path) -> list[dict[str, float]]:
    """The rows of an ``epochs.csv`` (a missing value is NaN)."""
    with open(path, newline="") as f:
        return [{k: (int(v) if k == "epoch" else float(v) if v != "" else math.nan) for k, v in row.items()}
                for row in csv.DictReader(f)]
