"""Plain fine-tuning: cross-entropy only, no regularizer."""

from .registry import Regularizer, register


@register("finetune")
class FineTune(Regularizer):
    """Adds nothing to the loss."""

    tasks = ("classification", "detection")
