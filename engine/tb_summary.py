"""What TensorBoard shows of a finished run besides its curves: the HParams table row (the
experiment's settings against its validation and test accuracy) and the final training features
as an embedding with their labels (the paper's Figure 3, in the projector's PCA view)."""

from __future__ import annotations

import torch

from ..core.config import Config
from .state import flatten

HPARAM_KEYS = ("seed", "model.arch", "model.pretrained", "data.name", "optim.name", "optim.lr", "optim.weight_decay",
               "data.batch_size", "train.epochs")


def hparams(cfg: Config) -> dict:
    """The settings that tell runs apart in the HParams table: the method and each of its parameters,
    the learning rate, the seed, the backbone, the data. Values that are not numbers, strings or
    booleans (lists) are shown as text."""
    flat = flatten(cfg.to_dict())
    keys = [k for k in flat if k.startswith("method.")] + [k for k in HPARAM_KEYS if k in flat]
    out = {}
    for k in keys:
        v = flat[k]
        out[k] = v if isinstance(v, (bool, int, float, str)) else str(v)
    return out


def write_summary(writer, cfg: Config, results: dict, features: tuple[torch.Tensor, torch.Tensor] | None) -> None:
    """The HParams row (in the run's own folder, so a sweep's root compares runs in one table) and
    the embedding of the last epoch's training features."""
    writer.add_hparams(hparams(cfg), {"hparams/val_accuracy": results["val_accuracy"],
                                      "hparams/test_accuracy": results["test_accuracy"]}, run_name=".")
    if features is not None:
        feats, labels = features
        writer.add_embedding(feats.float(), metadata=[str(int(y)) for y in labels], global_step=cfg.train.epochs,
                             tag="train_features")
