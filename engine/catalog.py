"""What can be run: the configs shipped with the package and the methods (``adarand-run --list``)."""

from __future__ import annotations

from ..core.config import packaged_configs
from ..handlers.registry import describe_method, known_regularizers


def catalog() -> str:
    """A line per packaged config (its leading comment) and per method (its packaged config's
    comment, or the first sentence of its docstring for a plugin)."""
    configs = packaged_configs()
    width = max(len(name) for name, _ in configs) + 2
    lines = ["configs (adarand-run NAME):"] + [f"  {name:<{width}}{text}" for name, text in configs]
    shipped = {name.removeprefix("methods/"): text for name, text in configs if name.startswith("methods/")}
    methods = known_regularizers()
    width = max(len(name) for name in methods) + 2
    lines += ["", "methods (method.name=NAME):"]
    lines += [f"  {name:<{width}}{shipped.get(name) or describe_method(name)}" for name in methods]
    return "\n".join(lines)
