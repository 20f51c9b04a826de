"""Whether a run folder belongs to the run asked for: the folder's ``config.yaml`` against the
resolved config, before anything starts.

A folder holds one experiment. ``adarand-run --output DIR`` continues the run in DIR only when
DIR's config agrees with the one given, up to the keys a resumed run may change
(``RESUMABLE_CHANGES``: a longer run is the same run trained further); a sweep accepts even less
(``DISPLAY_KEYS``: how a run prints and where its caches live), so that a folder it skips as done
holds exactly the run it would have trained.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from ..core.config import Config
from ..core.errors import UserError
from ..models import backbone_preprocessing
from .checkpoints import last_checkpoints
from .state import RESUMABLE_CHANGES, config_differences

# how a run prints, where it computes and where its caches live: never part of an experiment
DISPLAY_KEYS = ("train.progress", "train.epoch_lines", "train.log_every", "train.stop_after", "train.device",
                "train.threads", "data.num_workers", "cache_dir", "output_root",
                "logging.trackers", "logging.mlflow_uri", "logging.experiment", "logging.wandb_mode")

NEW, STARTED, FINISHED = "new", "started", "finished"


def resolved_config(cfg: Config) -> dict:
    """The config as the run's ``config.yaml`` records it: the backbone's preprocessing filled in
    where the config leaves it unset (what ``build_run`` does before the run starts)."""
    filled = dataclasses.replace(cfg, data=cfg.data.with_preprocessing(backbone_preprocessing(cfg.model)))
    return filled.to_dict()


def folder_differences(run_dir: Path, cfg: Config, allowed=RESUMABLE_CHANGES) -> list[str] | None:
    """The keys in which ``run_dir``'s ``config.yaml`` differs from ``cfg`` (outside ``allowed``),
    as ``key (run: a, now: b)``; None when the folder holds no config."""
    saved_file = run_dir / "config.yaml"
    if not saved_file.is_file():
        return None
    try:
        saved = yaml.safe_load(saved_file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"{saved_file}: not a readable run config ({e.__class__.__name__}); the folder holds "
                        "something else, choose another") from None
    if not isinstance(saved, dict):
        raise UserError(f"{saved_file}: not a run config (expected a mapping); choose another folder")
    return config_differences(saved, resolved_config(cfg), allowed)


def folder_state(run_dir: Path, cfg: Config, allowed=RESUMABLE_CHANGES, what: str = "--output") -> str:
    """NEW (nothing of a run there), STARTED (a run of this config to continue) or FINISHED
    (its results.json is written). A folder holding another experiment's run raises UserError,
    naming each key that differs."""
    differences = folder_differences(run_dir, cfg, allowed)
    if differences:
        raise UserError(f"{what}: {run_dir} holds a run of another config, which differs in {'; '.join(differences)}; "
                        "choose another folder")
    if (run_dir / "results.json").exists():
        return FINISHED
    if differences is not None or last_checkpoints(run_dir):
        return STARTED
    return NEW
