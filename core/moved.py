"""Import paths of modules that moved to another package: the old name keeps working for one
release, as the same module object, with a ``DeprecationWarning`` naming the new one.

    sys.meta_path.append(MovedModules({"adarand.engine.sweep": "adarand.experiments.sweep"}, until="0.3"))
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import warnings


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """A finder that answers an old module name with the module at its new name."""

    def __init__(self, moved: dict[str, str], until: str):
        self.moved, self.until = dict(moved), until

    def find_spec(self, fullname, path=None, target=None):
        return importlib.util.spec_from_loader(fullname, self) if fullname in self.moved else None

    def create_module(self, spec):
        new = self.moved[spec.name]
        warnings.warn(f"{spec.name} has moved to {new}; the old name is removed in {self.until}",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module) -> None:
        """Nothing to run: the module was imported under its new name."""
