"""Small stateful objects that go into the training checkpoint next to Ignite's own."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch


class RNGState:
    """The random number generators' states (torch CPU and CUDA, numpy, Python, and the run's own
    ``generators`` by name), as tensors and plain data so the checkpoint loads with
    ``weights_only=True``."""

    def __init__(self, generators: dict[str, torch.Generator] | None = None):
        self.generators = dict(generators or {})

    def state_dict(self) -> dict:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        version, internal, gauss = random.getstate()
        state = {
            "torch": torch.get_rng_state(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached": float(cached)},
            "python": {"version": version, "internal": list(internal), "gauss": gauss},
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        state["generators"] = {name: g.get_state() for name, g in self.generators.items()}
        return state

    def load_state_dict(self, state: dict) -> None:
        torch.set_rng_state(state["torch"])
        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
        p = state["python"]
        random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
        if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        for name, g in self.generators.items():
            g.set_state(state["generators"][name])


@dataclass
class RunRecord:
    """Best validation epoch so far (by the task's selection: for classification the highest
    accuracy, ties broken by the lower loss; for detection the highest bbox AP, then mask AP), its
    validation metrics, how many times it improved, per-epoch training times, and the wall time
    of the run (summed over the segments of a resumed run; setup before training is not counted)."""

    best_epoch: int = 0
    best_val: dict[str, float] = field(default_factory=dict)  # the selected epoch's validation metrics
    best_key: tuple[float, ...] | None = None  # its selection key (larger is better)
    improvements: int = 0
    epoch_times: list[float] = field(default_factory=list)
    wall_time: float = 0.0
    # a row per epoch: the training log's epoch means (losses, Figure 2's diagnostics) and validation
    history: list[dict] = field(default_factory=list)
    _last: float | None = field(default=None, repr=False)

    @property
    def best_val_accuracy(self) -> float:
        return self.best_val.get("accuracy", -1.0)

    @property
    def best_val_loss(self) -> float:
        return self.best_val.get("loss", float("inf"))

    def tick(self, count: bool = True) -> None:
        """Add the time since the last tick to ``wall_time`` (``count=False``: only restart the clock)."""
        now = time.time()
        if count and self._last is not None:
            self.wall_time += now - self._last
        self._last = now

    def observe(self, epoch: int, metrics: dict[str, float], key: tuple[float, ...]) -> bool:
        """Record a validation result; True when it is a new best: a ``key`` (the task's selection
        metrics, larger is better) greater than the best's in the first place they differ (an
        earlier epoch wins a tie in all of them)."""
        better = self.best_key is None or tuple(key) > self.best_key
        if better:
            self.best_epoch, self.best_val, self.best_key = epoch, {k: float(v) for k, v in metrics.items()}, tuple(key)
            self.improvements += 1
        return better

    def state_dict(self) -> dict:
        return {"best_epoch": self.best_epoch, "best_val": dict(self.best_val),
                "best_key": None if self.best_key is None else list(self.best_key), "improvements": self.improvements,
                "epoch_times": list(self.epoch_times), "wall_time": self.wall_time,
                "history": [dict(row) for row in self.history]}

    def load_state_dict(self, state: dict) -> None:
        self.best_epoch = int(state["best_epoch"])
        self.best_val = {k: float(v) for k, v in state["best_val"].items()}
        self.best_key = None if state["best_key"] is None else tuple(float(v) for v in state["best_key"])
        self.improvements = int(state["improvements"])
        self.epoch_times = [float(t) for t in state["epoch_times"]]
        self.wall_time = float(state["wall_time"])
        self.history = [dict(row) for row in state.get("history", [])]

    def add_epoch(self, epoch: int, train: dict[str, float], val: dict[str, float]) -> dict:
        """The epoch's row: its number, the training means, the validation metrics (``val_<name>``)."""
        row = {"epoch": epoch, **{k: float(v) for k, v in train.items()}, **{f"val_{k}": float(v) for k, v in val.items()}}
        self.history = [r for r in self.history if r["epoch"] < epoch] + [row]
        return row


# keys a resumed run may change: how long it trains, how it logs and reads its data, where caches live
RESUMABLE_CHANGES = ("train.epochs", "train.stop_after", "train.progress", "train.epoch_lines", "train.log_every",
                     "train.device", "train.threads", "data.num_workers", "cache_dir", "output_root",
                     "logging.trackers", "logging.mlflow_uri", "logging.experiment", "logging.wandb_mode")


class ConfigState:
    """The run's resolved config in the checkpoint (as JSON text: plain data), so that a resume can
    refuse a config that differs from the one the run was trained with."""

    def __init__(self, config: dict):
        self.config = config

    def state_dict(self) -> dict:
        return {"config": json.dumps(self.config, sort_keys=True)}

    def load_state_dict(self, state: dict) -> None:
        pass  # the resumed run keeps its own config; differences are refused before loading


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(saved: dict, current: dict, allowed=RESUMABLE_CHANGES) -> list[str]:
    """``key (run: a, now: b)`` for every key that differs, outside ``allowed``."""
    a, b = flatten(saved), flatten(current)
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in allowed)
    return [f"{k} (run: {a.get(k)!r}, now: {b.get(k)!r})" for k in keys]
