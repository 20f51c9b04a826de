"""Helpers for methods that keep a frozen pretrained model or read inner feature maps."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..core.distributed import all_reduce, world_size
from ..core.errors import UserError


def frozen_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` in eval mode, without gradients (it never trains)."""
    frozen = copy.deepcopy(module)
    frozen.eval()
    frozen.requires_grad_(False)
    return frozen


def average_gradients_across_processes(module: nn.Module) -> None:
    """A module a method trains outside the data-parallel model (a source head, a projection head):
    in a run of several processes, each of its gradients is averaged over the processes as it is
    computed, as DDP does for the model's, so every process takes the same step."""
    world = world_size()
    if world > 1:
        for p in module.parameters():
            p.register_hook(lambda g: all_reduce(g.clone()) / world)


def module_mib(module: nn.Module | None) -> float:
    if module is None:
        return 0.0
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def tensors_mib(*tensors: torch.Tensor) -> float:
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


class FeatureMaps:
    """Records the outputs of named submodules of ``module`` on every forward pass (with
    ``only_training``, only while the module is in training mode)."""

    def __init__(self, module: nn.Module, paths: dict[str, str], method: str, only_training: bool = False):
        if not paths:
            raise UserError(f"method.name: {method} needs the backbone's stage layout (feature maps of inner "
                            f"layers), which this backbone does not declare")
        named = dict(module.named_modules())
        missing = [p for p in paths.values() if p not in named]
        if missing:
            raise UserError(f"method.name: {method}: the backbone has no layer(s) {', '.join(missing)}")
        self.outputs: dict[str, torch.Tensor] = {}
        self.only_training = only_training
        self._hooks = [named[p].register_forward_hook(self._recorder(name)) for name, p in paths.items()]

    def _recorder(self, name: str):
        def hook(mod, inputs, output):
            if mod.training or not self.only_training:
                self.outputs[name] = output
        return hook

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []
        self.outputs = {}
