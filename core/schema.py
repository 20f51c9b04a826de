"""Turning plain dicts into typed dataclasses, with errors that name the file and the key.

Supported field types: bool, int, float, str, ``Optional[X]``, ``list[X]``, ``Literal[...]``
and nested dataclasses. A field without a default is required. A field may carry
``metadata={"key": "lambda"}`` when the YAML key is not a valid Python name, and
``metadata={"range": "> 0"}`` (or ``">= 0"``, ``"[0, 1)"``, ``"(0, 1]"``, ...) for the values
it accepts (every element of a list). Numbers are finite; a number written as YAML 1.1 reads it
as a string (``1e6``) is read as the number.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, Union, get_args, get_origin

from .errors import ConfigError, short_repr

NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")

# provenance(key_path) -> the file (or "command line") that set that key
Provenance = Callable[[str], str]


def yaml_key(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


def describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        inner = [describe(a) for a in get_args(tp) if a is not type(None)]
        return " or ".join(inner) + " or null"
    if origin is list:
        return f"a list of {describe(get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def convert(value: Any, tp: Any, key: str, where: Provenance) -> Any:
    """Check ``value`` against type ``tp``; return the converted value or raise ConfigError."""
    origin = get_origin(tp)

    def fail() -> ConfigError:
        return ConfigError(where(key), key, f"expected {describe(tp)}, got {short_repr(value)}")

    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(value, arg, key, where)
            except ConfigError:
                continue
        raise fail()
    if origin is Literal:
        if value in get_args(tp) and type(value) in {type(a) for a in get_args(tp)}:
            return value
        raise fail()
    if origin is list:
        if not isinstance(value, list):
            raise fail()
        (inner,) = get_args(tp)
        return [convert(v, inner, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise fail()
        return build(tp, value, key, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise fail()
    if tp in (int, float) and isinstance(value, str) and NUMBER.fullmatch(value.strip()):
        value = float(value) if tp is float or not float(value).is_integer() else int(float(value))
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise fail()
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(where(key), key, f"expected a finite number, got {short_repr(value)}")
            return float(value)
        raise fail()
    if tp is str:
        if isinstance(value, str):
            return value
        raise fail()
    if tp is Any:
        return value
    raise TypeError(f"schema type {tp!r} is not supported")


def did_you_mean(name: str, known, spell=lambda k: k) -> str:
    """``did you mean X? `` for the known name closest to ``name`` (difflib), or ''."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"did you mean {spell(close[0])}? " if close else ""


def build(cls: type, data: dict, prefix: str, where: Provenance) -> Any:
    """Build dataclass ``cls`` from ``data``; ``prefix`` is the dotted path of ``data``."""
    hints = typing.get_type_hints(cls)
    fields = {yaml_key(f): f for f in dataclasses.fields(cls) if f.init}
    dotted = (lambda k: f"{prefix}.{k}") if prefix else (lambda k: k)
    for k in data:
        if k not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(where(dotted(k)), dotted(k), f"unknown key ({did_you_mean(str(k), fields, dotted)}"
                                                           f"known keys here: {known})")
    kwargs = {}
    for k, f in fields.items():
        if k in data:
            kwargs[f.name] = convert(data[k], hints[f.name], dotted(k), where)
            problem = out_of_range(kwargs[f.name], f.metadata.get("range"))
            if problem:
                raise ConfigError(where(dotted(k)), dotted(k), problem)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(where(dotted(k)), dotted(k), f"required value is missing (expected {describe(hints[f.name])})")
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if check is not None:
        problem = check()
        if problem:
            key, message = problem
            raise ConfigError(where(dotted(key)), dotted(key), message)
    return obj


RANGE = re.compile(r"\s*(?:(>=|>|<=|<)\s*(\S+)|([\[(])\s*(\S+)\s*,\s*(\S+)\s*([\])]))\s*")


def out_of_range(value: Any, spec: str | None) -> str | None:
    """A message when ``value`` (or an element of it) is outside ``spec``: "> 0", ">= 1",
    "[0, 1)", "(0, 1]" ...; None when it is inside, or None, or there is no spec."""
    if spec is None or value is None:
        return None
    if isinstance(value, list):
        return next((m for m in (out_of_range(v, spec) for v in value) if m), None)
    m = RANGE.fullmatch(spec)
    if m is None:
        raise ValueError(f"schema range {spec!r} is not understood")
    if m.group(1):
        op, bound = m.group(1), float(m.group(2))
        ok = {">": value > bound, ">=": value >= bound, "<": value < bound, "<=": value <= bound}[op]
        wanted = {">": "greater than", ">=": "at least", "<": "less than", "<=": "at most"}[op] + f" {m.group(2)}"
    else:
        low, high = float(m.group(4)), float(m.group(5))
        ok = (value >= low if m.group(3) == "[" else value > low) and (value <= high if m.group(6) == "]" else value < high)
        wanted = f"in {spec.strip()}"
    return None if ok else f"expected a value {wanted}, got {short_repr(value)}"


def to_plain(obj: Any) -> Any:
    """A dataclass tree back to plain dicts with the YAML key names."""
    if dataclasses.is_dataclass(obj):
        return {yaml_key(f): to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, list):
        return [to_plain(v) for v in obj]
    return obj
