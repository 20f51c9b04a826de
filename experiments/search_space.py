"""A search space for ``adarand-tune``, in YAML: one entry per config key.

    method.lambda: {type: float, low: 0.01, high: 10.0, log: true}
    method.alpha: {type: float, low: 0.1, high: 0.9, step: 0.1}
    data.batch_size: {type: int, low: 8, high: 32, step: 8}
    optim.name: {type: categorical, choices: [sgd, adamw]}

``float`` and ``int`` take ``low`` and ``high`` (both included), and either ``log: true`` (sampled
on a log scale; ``low`` > 0) or a ``step``; ``categorical`` takes a list of ``choices`` (numbers,
strings, booleans or null). Every key is a dotted config key, as an override names it.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import yaml

from ..core.errors import ConfigError

KINDS = ("float", "int", "categorical")


@dataclasses.dataclass(frozen=True)
class Dimension:
    key: str
    kind: str  # float | int | categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        """The trial's value for this key (Optuna's ``suggest_*``; an enqueued trial gets its own)."""
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return trial.suggest_categorical(self.key, list(self.choices))

    def corners(self) -> list[Any]:
        """The extreme values (every choice of a categorical): what a check before the study loads."""
        if self.kind == "categorical":
            return list(self.choices)
        cast = int if self.kind == "int" else float
        return [cast(self.low), cast(self.high)]


def _number(source: str, key: str, spec: dict, name: str, integer: bool) -> float:
    value = spec.get(name)
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if not ok or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(source, f"{key}.{name}", f"expected {'an integer' if integer else 'a finite number'}, got {value!r}")
    return value


def parse_dimension(source: str, key: str, spec: Any) -> Dimension:
    if not isinstance(spec, dict):
        raise ConfigError(source, key, f"expected a mapping such as {{type: float, low: 0.01, high: 1.0}}, got {spec!r}")
    kind = spec.get("type")
    if kind not in KINDS:
        raise ConfigError(source, f"{key}.type", f"expected one of {', '.join(KINDS)}, got {kind!r}")
    allowed = {"type", "choices"} if kind == "categorical" else {"type", "low", "high", "log", "step"}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ConfigError(source, f"{key}.{unknown[0]}",
                          f"unknown key for type {kind} (known keys: {', '.join(sorted(allowed))})")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices or any(isinstance(c, (list, dict)) for c in choices):
            raise ConfigError(source, f"{key}.choices", f"expected a non-empty list of plain values, got {choices!r}")
        return Dimension(key, kind, choices=tuple(choices))
    integer = kind == "int"
    low, high = _number(source, key, spec, "low", integer), _number(source, key, spec, "high", integer)
    if low > high:
        raise ConfigError(source, f"{key}.high", f"expected high >= low ({low}), got {high}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(source, f"{key}.log", f"expected a boolean, got {log!r}")
    step = spec.get("step")
    if step is not None:
        step = _number(source, key, spec, "step", integer)
        if step <= 0:
            raise ConfigError(source, f"{key}.step", f"expected a positive step, got {step}")
        if log:
            raise ConfigError(source, f"{key}.step", "a step and log: true do not go together (Optuna samples either)")
    if log and low <= 0:
        raise ConfigError(source, f"{key}.low", f"log: true needs low > 0, got {low}")
    return Dimension(key, kind, low=low, high=high, log=log, step=step)


def read_space(path: str | Path) -> list[Dimension]:
    """The search space of a YAML file; ConfigError (one line, naming the file and key) otherwise."""
    source = str(path)
    if not Path(path).is_file():
        raise ConfigError(source, None, "no such search-space file")
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(source, None, f"malformed YAML ({e.__class__.__name__})") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(source, None, "expected a mapping of config keys to their ranges, e.g. "
                                        "method.lambda: {type: float, low: 0.01, high: 10.0, log: true}")
    return [parse_dimension(source, str(key), spec) for key, spec in data.items()]
