"""Regularizers: the narrow interface every method implements, and the registry of names.

A regularizer is an object that the run builds once, before the optimizer:

* ``Params`` — a dataclass of its YAML parameters (validated by the config loader);
* ``parameter_groups()`` — extra parameter groups for the network's optimizer (e.g. a source head);
* ``optimizers()`` — optimizers of its own, by name, whose learning rates are logged;
* ``attach(trainer)`` — attaches its Ignite handlers. To add a loss term it handles
  ``TrainEvents.COMPUTE_LOSS``, fired inside the train step after the forward pass, and writes
  into ``trainer.state.step.losses`` (it may also replace ``"ce"``). Work after the optimizer step
  goes on ``Events.ITERATION_COMPLETED``; a pass before training on ``Events.STARTED``;
* ``state_dict()`` / ``load_state_dict()`` — its state, saved in the training checkpoint;
* ``take_log_sums()`` — scalars it sums on the device itself, as sums over the iterations since
  the last call (the training diagnostics take them at each write and log their means), for a
  scalar that is cheaper to accumulate than to put into ``step.logs`` every iteration;
* ``report()`` — figures for results.json (memory of frozen models, banks, caches);
* ``close()`` — releases frozen models and caches when the run ends.

The context it receives (:class:`RunContext`) gives the model, the device, the data, the run's
length and the shared prior statistics (one pass, cached, whichever method asks first).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from ignite.engine import Engine

    from ..engine.context import RunContext

_REGISTRY: dict[str, type[Regularizer]] = {}


@dataclass(kw_only=True)
class NoParams:
    pass


class Regularizer:
    name: str = ""
    Params: type = NoParams

    def __init__(self, params: Any, ctx: RunContext):
        self.params = params
        self.ctx = ctx

    def parameter_groups(self) -> list[dict]:
        return []

    def attach(self, trainer: Engine) -> None:
        pass

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimizers of its own (their learning rates are logged to TensorBoard)."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def take_log_sums(self) -> dict[str, torch.Tensor]:
        """{name: sum over the iterations since the last call} (0-d tensors); resets the sums."""
        return {}

    def report(self) -> dict:
        return {}

    def close(self) -> None:
        pass


def register(name: str) -> Callable[[type[Regularizer]], type[Regularizer]]:
    def deco(cls: type[Regularizer]) -> type[Regularizer]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"regularizer name {name!r} is registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _load_builtin() -> None:
    # The built-in methods register themselves on import; the list is fixed in code.
    from . import adarand, bss, co_tuning, daft, delta, dr_tune, finetune, l2sp, lp_ft, random_features  # noqa: F401


def get_regularizer_class(name: str) -> type[Regularizer]:
    _load_builtin()
    return _REGISTRY[name]


def known_regularizers() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)
