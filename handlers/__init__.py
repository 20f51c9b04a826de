"""Regularizers, one module each. Importing this package imports every module in it, so the
registry (``registry.py``) is complete once ``adarand.handlers`` is imported."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
