"""What TensorBoard shows of a finished run besides its curves: the HParams table row (the
experiment's settings against its validation and test accuracy) and the final training features
as an embedding labelled by class name (the paper's Figure 3, in the projector's PCA view)."""

from __future__ import annotations

import torch
from torch.utils.tensorboard.summary import hparams as hparams_summaries

from ...core.config import Config
from ..state import flatten

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


def write_summary(writer, cfg: Config, features: tuple[torch.Tensor, torch.Tensor] | None, classes: list[str]) -> None:
    """The HParams row and the embedding of the last epoch's training features.

    The row is the run's session (its settings, then its end), written into the run's own folder so
    that ``tensorboard --logdir`` on a sweep's root has one row per run. No experiment summary is
    written: TensorBoard would take the first run's as the whole table's and drop the columns of
    the other methods' parameters; without one it gathers the columns from every run and shows
    first those that differ (the method, the seed). Its metrics are the runs' scalars in name
    order, so the selected model's accuracies are tagged ``accuracy/best_val`` and ``accuracy/test``
    (``RunLog.finish``) and come first."""
    _, session_start, session_end = hparams_summaries(hparams(cfg), {})
    writer.file_writer.add_summary(session_start)
    writer.file_writer.add_summary(session_end)
    if features is not None:
        feats, labels = features
        writer.add_embedding(feats.float(), metadata=[classes[int(y)] for y in labels], global_step=cfg.train.epochs,
                             tag="train_features")
