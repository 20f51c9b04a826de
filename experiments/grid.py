"""Grids of overrides, and the folder label that tells their runs apart.

An override whose value is a YAML list, for a key that does not hold a list, is a grid axis:
``method.lambda=[0,0.1,0.3] method.alpha=[0.5,0.7]`` is the Cartesian product of 3 x 2 points.
For a key that holds a list (``optim.milestones``), a list of lists is an axis
(``optim.milestones=[[30,40],[60,80]]``) and a plain list is one value.

A run folder's label names what the overrides change, ``lambda0.1-alpha0.5``: the last part of
each key and its value, with a stable hash of the whole set beside the label when the label
would be long or could not spell the values exactly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import re
import types
import typing
from typing import Any, Union, get_args, get_origin

import yaml

from ..core.config import Config
from ..core.errors import ConfigError
from ..core.schema import yaml_key
from ..handlers.registry import get_regularizer_class

LABEL_MAX = 60
SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def parse_override(item: str) -> tuple[str, Any]:
    key, _, text = item.partition("=")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text  # the config loader names the key and the bad value
    return key.strip(), value


def format_value(value: Any) -> str:
    """A value as the YAML text of an override (``0.1``, ``[30, 40]``, ``adarand``)."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def display_value(value: Any) -> str:
    """A value as a line for people shows it: a float to 12 significant digits (``0.3``, where the
    float is 0.30000000000000004), anything else as its override text."""
    if isinstance(value, float):
        return f"{value:.12g}"
    return format_value(value)


def key_type(key: str, method: str) -> Any:
    """The declared type of a dotted config key (``method.<param>``: the method's parameter);
    None for a key the schema does not know (the config loader reports it)."""
    parts = key.split(".")
    if parts[0] == "method" and len(parts) == 2 and parts[1] != "name":
        try:
            cls = get_regularizer_class(method).Params
        except KeyError:
            return None
    else:
        cls = Config
    tp: Any = cls
    for part in parts[1:] if cls is not Config else parts:
        if not dataclasses.is_dataclass(tp):
            return None
        fields = {yaml_key(f): f for f in dataclasses.fields(tp) if f.init}
        if part not in fields:
            return None
        tp = typing.get_type_hints(tp)[fields[part].name]
        if get_origin(tp) in (Union, types.UnionType):  # Optional[X] -> X
            inner = [a for a in get_args(tp) if a is not type(None)]
            tp = inner[0] if len(inner) == 1 else tp
    return tp


def holds_list(key: str, method: str) -> bool:
    return get_origin(key_type(key, method)) is list


def overridden_method(overrides: list[str], method: str) -> str:
    """The method whose parameters the ``method.*`` overrides name: ``method.name`` given on the
    command line (the first of an axis) wins over the configs' ``method``."""
    for key, value in map(parse_override, overrides):
        if key == "method.name":
            method = value[0] if isinstance(value, list) and value else value
    return str(method)


def axes(overrides: list[str], method: str) -> list[tuple[str, list[Any]] | str]:
    """Each override as (key, values) when it is a grid axis, else as given. ``method``: the method
    the configs select (the type of a ``method.*`` key is that method's)."""
    named = [parse_override(item) for item in overrides]
    method = overridden_method(overrides, method)
    out: list[tuple[str, list[Any]] | str] = []
    for item, (key, value) in zip(overrides, named, strict=True):
        is_axis = isinstance(value, list) and len(value) > 0 and (
            not holds_list(key, method) or all(isinstance(v, list) for v in value))
        if is_axis:
            texts = [format_value(v) for v in value]
            repeated = next((t for i, t in enumerate(texts) if t in texts[:i]), None)
            if repeated is not None:
                raise ConfigError("command line", key, f"the grid gives the value {repeated} twice ({item}); "
                                                       "give each value once")
        out.append((key, list(value)) if is_axis else item)
    return out


def undeclared_axes(overrides: list[str], method: str) -> list[str]:
    """The grid axes over a method parameter that ``method`` does not have (``method.lambda`` for
    ``finetune``): such a method is the grid's baseline and runs once per seed. A plain override of
    a key the method lacks stays an error, and so does an axis no config of a sweep declares."""
    method = overridden_method(overrides, method)
    return [a[0] for a in axes(overrides, method) if isinstance(a, tuple) and a[0].startswith("method.")
            and a[0] != "method.name" and key_type(a[0], method) is None]


def grid_points(overrides: list[str], method: str) -> list[list[str]]:
    """Every point of the grid, as a list of ``key=value`` overrides (the product in the order the
    axes are given; one point when no override is a grid). Axes the method lacks are left out
    (``undeclared_axes``)."""
    skip = set(undeclared_axes(overrides, method))
    choices = [[f"{a[0]}={format_value(v)}" for v in a[1]] if isinstance(a, tuple) else [a]
               for a in axes(overrides, method) if not (isinstance(a, tuple) and a[0] in skip)]
    return [list(point) for point in itertools.product(*choices)]


def folder_label(overrides: list[str], ignored: tuple[str, ...] = ()) -> str:
    """``lambda0.1-alpha0.5`` for ``method.lambda=0.1 method.alpha=0.5`` ('' for none). A key's last
    part names it, unless two keys share it (then the whole key, dots as ``_``); ``method.name``
    is its value alone. Keys in ``ignored`` (how a run prints) are left out. A label longer than
    LABEL_MAX characters, or one whose characters had to be replaced, gets an 8-digit hash of the
    overrides beside it."""
    named = [parse_override(item) for item in overrides]
    named = [(k, v) for k, v in named if k not in ignored]
    if not named:
        return ""
    last = [k.rsplit(".", 1)[-1] for k, _ in named]
    parts, lossy = [], False
    for (key, value), short in zip(named, last, strict=True):
        name = short if last.count(short) == 1 else key.replace(".", "_")
        text = format_value(value)
        if isinstance(value, list):
            text = "_".join(format_value(v) for v in value)
        safe = SAFE.sub("_", text).strip("_")
        lossy |= safe != text and not isinstance(value, list)
        parts.append(safe if key == "method.name" else f"{name}{safe}")
    label = "-".join(parts)
    if len(label) > LABEL_MAX or lossy:
        digest = hashlib.sha1("\n".join(f"{k}={format_value(v)}" for k, v in named).encode()).hexdigest()[:8]
        label = f"{label[:LABEL_MAX - 9].rstrip('-_')}-{digest}"
    return label
