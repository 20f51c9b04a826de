"""What can be run: the configs shipped with the package and the methods (``adarand-run --list``).

Read without importing a method: a built-in method is listed by its packaged config
(``methods/<name>.yaml``, whose leading comment describes it; every built-in method has one), a
plugin by its entry point, described by the first sentence of its class's docstring read from its
source. So ``--list`` loads neither torch nor Ignite.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
from pathlib import Path

from ..core.config import PLUGIN_GROUP, first_sentence, packaged_configs


def plugin_description(ep: importlib.metadata.EntryPoint) -> str:
    """The first sentence of the docstring of the class an entry point names (``pkg.module:Class``),
    read from the module's source; else where it points."""
    module, _, name = ep.value.partition(":")
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    origin = Path(spec.origin) if spec is not None and spec.origin and spec.origin.endswith(".py") else None
    if origin is not None:
        for node in ast.parse(origin.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef) and (not name or node.name == name) and ast.get_docstring(node):
                return first_sentence(" ".join(ast.get_docstring(node).split()))
    return f"a plugin ({ep.value})"


def catalog() -> str:
    """A line per packaged config (its leading comment) and per method (its packaged config's
    comment, or the first sentence of its docstring for a plugin)."""
    configs = packaged_configs()
    width = max(len(name) for name, _ in configs) + 2
    lines = ["configs (adarand-run NAME):"] + [f"  {name:<{width}}{text}" for name, text in configs]
    described = {name.removeprefix("methods/"): text for name, text in configs if name.startswith("methods/")}
    for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        described.setdefault(ep.name, plugin_description(ep))
    width = max(len(name) for name in described) + 2
    lines += ["", "methods (method.name=NAME):"]
    lines += [f"  {name:<{width}}{described[name]}" for name in sorted(described)]
    return "\n".join(lines)
