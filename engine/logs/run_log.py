"""Where the run's scalars go: the TensorBoard events in the run folder and the experiment trackers
that ``logging.trackers`` names (``trackers.py``). One object on rank 0; the training log, the
validation and the learning rates write through it."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from ...core.config import Config
from ...core.errors import error_summary
from .tb_summary import hparams, write_summary
from .tb_writer import AxisLabelledWriter
from .trackers import open_trackers


def final_scalars(results: dict) -> dict[str, float]:
    """The selected model's figures at its epoch: ``accuracy/best_val`` and ``accuracy/test``
    (classification); ``ap/best_val_bbox``, ``ap/test_bbox`` and the mask's (detection)."""
    if results.get("task", "classification") == "classification":
        return {"accuracy/best_val": results["val_accuracy"], "accuracy/test": results["test_accuracy"]}
    return {f"ap/{split}_{kind}": results[f"{prefix}_{kind}_ap"] for kind in ("bbox", "mask")
            for split, prefix in (("best_val", "val"), ("test", "test")) if f"{prefix}_{kind}_ap" in results}


class RunLog:
    def __init__(self, cfg: Config, run_dir: Path, purge_step: int = 0):
        """``purge_step``: the first iteration the run logs; TensorBoard hides what an interrupted
        attempt logged after it."""
        self.cfg = cfg
        tensorboard = "tensorboard" in cfg.logging.trackers
        self.tb = AxisLabelledWriter(log_dir=str(run_dir), purge_step=purge_step) if tensorboard else None
        self.trackers = open_trackers(cfg, run_dir, hparams(cfg))
        self.run_dir = run_dir

    def log(self, scalars: dict[str, float], step: int) -> None:
        """Scalars by tag, all at ``step`` of their axis (an iteration, or an epoch)."""
        if self.tb is not None:
            for tag, value in scalars.items():
                self.tb.add_scalar(tag, value, step)
        for tracker in self.trackers:
            tracker.log(scalars, step)

    def finish(self, results: dict, features: tuple[torch.Tensor, torch.Tensor] | None, classes: list[str]) -> None:
        """The end of a finished run, once ``results.json`` and the selected model are written: the
        selected model's accuracies at its epoch, TensorBoard's HParams row and feature embedding,
        the trackers' copies of the config and the results. A tracker that fails now costs nothing
        of the run: one warning line names it, and the others go on."""
        scalars, step = final_scalars(results), results["best_epoch"]
        if self.tb is not None:
            for tag, value in scalars.items():
                self.tb.add_scalar(tag, value, step)
            write_summary(self.tb, self.cfg, features, classes)
        for tracker in list(self.trackers):
            try:
                tracker.log(scalars, step)
                tracker.finish(self.run_dir / "config.yaml", results)
            except Exception as e:  # reported, and the run's results stand: they are on disk already
                self.drop(tracker, e, "FAILED")

    def drop(self, tracker, error: Exception, status: str, close: bool = True) -> None:
        """One warning line for a tracker that failed; it is closed (when ``close``) and left out."""
        print(f"warning: {type(tracker).__name__.removesuffix('Tracker')} failed ({error_summary(error)}); the run's "
              f"own files are written ({self.run_dir / 'results.json'}, the selected model, the TensorBoard events)",
              file=sys.stderr)
        self.trackers.remove(tracker)
        if close:
            try:
                tracker.close(status)
            except Exception as e:  # its store is unusable: said too, the run goes on
                print(f"warning: {type(tracker).__name__.removesuffix('Tracker')} could not end its run either "
                      f"({error_summary(e)})", file=sys.stderr)

    def close(self, status: str = "FINISHED") -> None:
        """``status``: how the attempt ended, for the trackers' runs: FINISHED (also a run stopped
        to be continued), FAILED (an error) or KILLED (Ctrl-C)."""
        if self.tb is not None:
            self.tb.close()
        for tracker in list(self.trackers):
            try:
                tracker.close(status)
            except Exception as e:  # as in finish: reported, the run's files stand
                self.drop(tracker, e, status, close=False)
        self.tb, self.trackers = None, []
