"""Batch Spectral Shrinkage in the engine: an adapter over ``adarand.methods.BSS``."""

from ..methods import bss
from ..methods.bss import BSSParams, smallest_singular_values_sq  # noqa: F401
from .registry import MethodAdapter, register


@register("bss")
class BSS(MethodAdapter):
    """Batch Spectral Shrinkage: penalise the k smallest singular values of the batch features."""

    tasks = ("classification", "detection")
    Params = BSSParams

    def __init__(self, params: BSSParams, ctx):
        super().__init__(params, ctx)
        self.method = bss.BSS(params=params)
