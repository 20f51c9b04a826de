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
  ``close()``; ``run_files()`` — text files for the run folder (UOT's chosen classes);
* ``close()`` — releases frozen models and caches when the run ends;
* ``tasks`` — the tasks it runs on: ``("classification",)`` unless it declares detection too.

A module registers its class with ``@register(name)``; ``@register(name, key=value)`` registers a
preset whose name fixes parameters (``fnp`` is the random-feature class with ``prior: zero``).
Another installed package adds methods through the entry-point group ``adarand.regularizers``
(``mymethod = mypackage.module:MyRegularizer``); ``method.name: mymethod`` then finds it.

The context it receives (``RunContext``) gives the model, the device, the data, the run's
length and the shared prior statistics (one pass, cached, whichever method asks first).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from ignite.engine import Engine, Events

import yaml

from ..core.config import PLUGIN_GROUP, MethodConfig
from ..core.errors import ConfigError, UserError, error_summary
from ..core.schema import build, did_you_mean, yaml_key
from ..core.step import TrainEvents
from ..methods.base import Method
from .context import RunContext

_REGISTRY: dict[str, MethodEntry] = {}


@dataclass(kw_only=True)
class NoParams:
    pass


class Regularizer:
    Params: type = NoParams
    # the tasks it runs on (``task:``); a method that reads only ``step.features`` and ``step.y`` (and
    # the backbone's parameters) runs on detection too, one that needs logits or a classifier does not
    tasks: tuple[str, ...] = ("classification",)

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

    def run_files(self) -> dict[str, str]:
        """Text files for the run folder, by name (e.g. UOT's chosen source classes), written once
        what ``prepare()`` (or a resume) set up is in place."""
        return {}

    def close(self) -> None:
        pass


class MethodAdapter(Regularizer):
    """A regularizer whose math is a method object (``adarand.methods``, ``self.method``): its terms
    join the step's losses at ``COMPUTE_LOSS``, its update runs after the optimizer step, its
    parameter groups, optimizers and state are the object's. A subclass builds ``self.method``
    from the run (``RunContext``) and adds what only the engine does (caches, reports)."""

    method: Method

    def __getattr__(self, name: str):
        """What the adapter does not hold is the method object's (``reg.mu``, ``reg.sample``)."""
        if name == "method":
            raise AttributeError(name)
        return getattr(self.method, name)

    def __setattr__(self, name: str, value) -> None:
        """An attribute the method object holds is set there (one state, not two)."""
        method = self.__dict__.get("method")
        if method is not None and name not in self.__dict__ and hasattr(method, name):
            setattr(method, name, value)
        else:
            super().__setattr__(name, value)

    def attach(self, trainer: Engine) -> None:
        trainer.add_event_handler(TrainEvents.COMPUTE_LOSS, self.add_loss)
        if type(self.method).update is not Method.update:
            trainer.add_event_handler(Events.ITERATION_COMPLETED, self.update)

    def add_loss(self, engine: Engine) -> None:
        step = engine.state.step
        step.losses.update(self.method.terms(step.features, step.y, logits=step.logits, images=step.x))

    def update(self, engine: Engine) -> None:
        step = engine.state.output
        step.logs.update(self.method.update(step.features.detach(), step.y))

    def parameter_groups(self) -> list[dict]:
        return self.method.parameter_groups(self.ctx.cfg.optim.lr)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self.method.optimizers()

    def state_dict(self) -> dict:
        return self.method.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.method.load_state_dict(state)


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


def plugins() -> dict[str, importlib.metadata.EntryPoint]:
    """Regularizers of other installed packages: the entry points of the group ``adarand.regularizers``,
    by name. Nothing is imported until a run asks for one."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP) if ep.name not in _REGISTRY}


def load_plugin(ep: importlib.metadata.EntryPoint) -> None:
    """Import a plugin and register it under its entry point's name. The entry point names a
    Regularizer subclass (``pkg.module:MyRegularizer``), or a module whose import registers the
    name with ``@register``. Raises UserError (one line) when it does neither."""
    origin = f"entry point {ep.name} = {ep.value}" + (f" of {ep.dist.name} {ep.dist.version}" if ep.dist else "")
    try:
        obj = ep.load()
    except Exception as e:  # a broken plugin: its error, in one line, naming the plugin
        raise UserError(f"method.name: the plugin {ep.name!r} ({origin}) failed to import: "
                        f"{error_summary(e)}") from None
    if isinstance(obj, type) and issubclass(obj, Regularizer):
        register(ep.name)(obj)
    elif ep.name not in _REGISTRY:
        raise UserError(f"method.name: the plugin {ep.name!r} ({origin}) is neither a Regularizer subclass nor a "
                        f"module that registers {ep.name!r}")


def get_method(name: str) -> MethodEntry:
    """The entry registered under ``name``, a plugin's loaded on first use (KeyError if none)."""
    if name not in _REGISTRY and name in (found := plugins()):
        load_plugin(found[name])
    return _REGISTRY[name]


def get_regularizer_class(name: str) -> type[Regularizer]:
    return get_method(name).cls


def known_regularizers() -> list[str]:
    """The methods of this package and of installed plugins."""
    return sorted(set(_REGISTRY) | set(plugins()))


def build_params(method: MethodConfig, where: Callable[[str], str]) -> tuple[Any, tuple[str, ...]]:
    """The method's typed parameters from the mapping ``method.params``, and the keys its name
    fixes. ``where(key)``: the file that set a key, for the one-line errors (ConfigError)."""
    name = method.name
    if name not in known_regularizers():
        raise ConfigError(where("method.name"), "method.name",
                          f"unknown method {name!r} ({did_you_mean(str(name), known_regularizers())}"
                          f"known: {', '.join(known_regularizers())})")
    entry = get_method(name)
    raw = dict(method.params or {})
    for key, value in entry.fixed.items():
        if key in raw:
            raise ConfigError(where(f"method.{key}"), f"method.{key}",
                              f"{name} fixes {key} to {yaml.safe_dump(value).splitlines()[0]}; choose another method to set it")
    own = {yaml_key(f) for f in dataclasses.fields(entry.cls.Params) if f.init}
    for key in raw:
        if key not in own:
            others = [n for n in known_regularizers() if n in _REGISTRY and key in
                      {yaml_key(f) for f in dataclasses.fields(_REGISTRY[n].cls.Params) if f.init}]
            if others:
                raise ConfigError(where(f"method.{key}"), f"method.{key}",
                                  f"not a parameter of {name}; it belongs to {', '.join(others[:6])}"
                                  f"{', ...' if len(others) > 6 else ''} (set here for another method: for {name}, "
                                  f"leave it out, e.g. start from a config of {name})")
    return build(entry.cls.Params, {**raw, **entry.fixed}, "method", where), tuple(entry.fixed)


def task_problem(name: str, task: str) -> str | None:
    """Why method ``name`` cannot run on ``task``, or None."""
    if task in get_regularizer_class(name).tasks:
        return None
    able = [n for n in known_regularizers() if n in _REGISTRY and task in _REGISTRY[n].cls.tasks]
    return (f"{name} does not run on task: {task} (it needs the classifier's logits or a classification model); "
            f"the methods for {task}: {', '.join(able)}")


def describe_method(name: str) -> str:
    """One line: the first sentence of the class's docstring, and the parameters a preset's name fixes."""
    entry = get_method(name)
    doc = " ".join((entry.cls.__doc__ or entry.cls.__name__).split()).split(". ")[0].rstrip(".")
    fixed = ", ".join(f"{k}: {v}" for k, v in entry.fixed.items())
    return f"{doc} ({fixed})" if fixed else doc
