"""Regularizers: the narrow interface every method implements, and the registry of names.

A regularizer is an object that the run builds once, before the optimizer:

* ``Params`` — a dataclass of its YAML parameters (validated by the config loader);
* ``parameter_groups()`` — extra parameter groups for the network's optimizer (e.g. a source head);
* ``optimizers()`` — optimizers of its own, by name, whose learning rates are logged;
* ``attach(trainer)`` — attaches its Ignite handlers. To add a loss term it handles
  ``TrainEvents.COMPUTE_LOSS``, fired inside the train step after the forward pass, and writes
  into ``trainer.state.step.losses`` (it may also replace ``"ce"``); other scalars to log go into
  ``step.logs``. Work after the optimizer step goes on ``Events.ITERATION_COMPLETED``;
* ``prepare()`` — what it builds before training from the pretrained model and the data (priors,
  channel weights, banks, a probe, a BN conversion). The engine calls it once before the first
  epoch, and not on resume: what it builds is in ``state_dict()``;
* ``state_dict()`` / ``load_state_dict()`` — its state, saved in the training checkpoint;
* ``report()`` — figures for results.json (memory of frozen models, banks, caches), read before
  ``close()``;
* ``close()`` — releases frozen models and caches when the run ends.

A module registers its class with ``@register(name)``; ``@register(name, key=value)`` registers a
preset whose name fixes parameters (``fnp`` is the random-feature class with ``prior: zero``).

The context it receives (:class:`RunContext`) gives the model, the device, the data, the run's
length and the shared prior statistics (one pass, cached, whichever method asks first).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from ignite.engine import Engine

import yaml

from ..core.config import MethodConfig
from ..core.errors import ConfigError
from ..core.schema import build
from .context import RunContext

_REGISTRY: dict[str, MethodEntry] = {}


@dataclass(kw_only=True)
class NoParams:
    pass


class Regularizer:
    Params: type = NoParams

    def __init__(self, params: Any, ctx: RunContext):
        self.params = params
        self.ctx = ctx

    def parameter_groups(self) -> list[dict]:
        return []

    def attach(self, trainer: Engine) -> None:
        pass

    def prepare(self) -> None:
        """Build what training starts from (called once before training, not on resume)."""

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimizers of its own (their learning rates are logged to TensorBoard)."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def report(self) -> dict:
        return {}

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class MethodEntry:
    """A registered method: its class and the parameters its name fixes (a preset)."""

    cls: type[Regularizer]
    fixed: dict[str, Any]


def register(name: str, **fixed: Any) -> Callable[[type[Regularizer]], type[Regularizer]]:
    """Register ``cls`` under ``name``. ``fixed``: parameter values the name stands for (e.g.
    ``register("fnp", prior="zero")``); a config that sets one of them is refused. One class may be
    registered under several names."""

    def deco(cls: type[Regularizer]) -> type[Regularizer]:
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            raise ValueError(f"regularizer name {name!r} is registered twice")
        _REGISTRY[name] = MethodEntry(cls, dict(fixed))
        return cls

    return deco


def get_method(name: str) -> MethodEntry:
    """The entry registered under ``name`` (KeyError if none)."""
    return _REGISTRY[name]


def get_regularizer_class(name: str) -> type[Regularizer]:
    return _REGISTRY[name].cls


def known_regularizers() -> list[str]:
    return sorted(_REGISTRY)


def build_params(method: MethodConfig, where: Callable[[str], str]) -> tuple[Any, tuple[str, ...]]:
    """The method's typed parameters from the mapping ``method.params``, and the keys its name
    fixes. ``where(key)``: the file that set a key, for the one-line errors (ConfigError)."""
    name = method.name
    if name not in _REGISTRY:
        raise ConfigError(where("method.name"), "method.name",
                          f"unknown method {name!r} (known: {', '.join(known_regularizers())})")
    entry = _REGISTRY[name]
    raw = dict(method.params or {})
    for key, value in entry.fixed.items():
        if key in raw:
            raise ConfigError(where(f"method.{key}"), f"method.{key}",
                              f"{name} fixes {key} to {yaml.safe_dump(value).splitlines()[0]}; choose another method to set it")
    return build(entry.cls.Params, {**raw, **entry.fixed}, "method", where), tuple(entry.fixed)
