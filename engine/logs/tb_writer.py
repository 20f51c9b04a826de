"""The run's TensorBoard writer, which labels every chart with its x axis.

The first point of each scalar carries a description: ``x axis: epoch`` or ``x axis: iteration``,
then what the curve is. TensorBoard keeps it with the tag and shows it beside the chart's title
(the Scalars tab's ⓘ). The axis follows from the tag's group: a group holds curves of one axis only
(``handlers/training_log.py``)."""

from __future__ import annotations

from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import scalar

AXES = {"diagnostics": "epoch", "loss_per_epoch": "epoch", "epoch": "epoch", "val": "epoch", "accuracy": "epoch", "ap": "epoch",
        "loss": "iteration", "prior": "iteration", "iteration": "iteration", "lr": "iteration"}

MEANINGS = {
    "diagnostics/feature_norm": "Figure 2: the squared feature norm ‖g(x)‖², averaged over the epoch's training "
                                "samples.",
    "diagnostics/grad_norm": "Figure 2 (Eq. 5): the squared norm of the head's gradient of each sample's "
                             "cross-entropy, averaged over the epoch's training samples.",
    "diagnostics/grad_norm_batch_mean": "The squared norm of the batch-mean gradient of the head (not Eq. 5: "
                                        "about batch-size times smaller).",
    "diagnostics/feature_entropy": "Figure 2: the entropy of the epoch's training features.",
    "diagnostics/mutual_info": "Figure 2: the mutual information between the epoch's training features and "
                               "their labels.",
    "accuracy/best_val": "The selected model's validation accuracy (the best validation epoch), at its epoch.",
    "accuracy/test": "The selected model's test accuracy, at its epoch.",
    "ap/best_val_bbox": "The selected model's validation bbox AP (COCO, IoU 0.50:0.95), at its epoch.",
    "ap/test_bbox": "The selected model's test bbox AP (COCO, IoU 0.50:0.95), at its epoch.",
    "ap/best_val_mask": "The selected model's validation mask AP (COCO, IoU 0.50:0.95), at its epoch.",
    "ap/test_mask": "The selected model's test mask AP (COCO, IoU 0.50:0.95), at its epoch.",
}
GROUP_MEANINGS = {
    "loss": "A loss term, the mean over the last train.log_every iterations.",
    "loss_per_epoch": "A loss term, the mean over the epoch.",
    "prior": "A term of AdaRand's prior objective, the mean over the last train.log_every iterations.",
    "iteration": "The mean over the last train.log_every iterations.",
    "epoch": "The mean over the epoch.",
    "lr": "The learning rate of this parameter group at that iteration.",
    "val": "On the validation split, after each epoch.",
}


def describe(tag: str) -> str:
    """``x axis: <axis>. <what the curve is>`` for a tag; empty for a group of unknown axis."""
    group = tag.split("/", 1)[0]
    if group not in AXES:
        return ""
    return f"x axis: {AXES[group]}. {MEANINGS.get(tag, GROUP_MEANINGS.get(group, ''))}".strip()


class AxisLabelledWriter(SummaryWriter):
    """A SummaryWriter whose first point of each scalar tag carries ``describe(tag)``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.described_tags: set[str] = set()

    def add_scalar(self, tag, scalar_value, global_step=None, walltime=None, new_style=False,
                   double_precision=False):
        first = tag not in self.described_tags and not new_style
        self.described_tags.add(tag)
        description = describe(tag) if first else ""
        if not description:
            super().add_scalar(tag, scalar_value, global_step, walltime, new_style, double_precision)
            return
        summary = scalar(tag, scalar_value, double_precision=double_precision)
        summary.value[0].metadata.summary_description = description
        # a value with metadata names its plugin (TensorBoard's readers warn of one that does not)
        summary.value[0].metadata.plugin_data.plugin_name = "scalars"
        self.file_writer.add_summary(summary, global_step, walltime)

