"""AdaRand fine-tuning engine (the repository root is the package ``adarand``).

``adarand.train(config, overrides, output=...)`` runs a fine-tuning as ``adarand-run`` does and
returns its results (see :func:`adarand.engine.launch.train`)."""

__version__ = "0.1.0"

from .engine.launch import train  # noqa: E402  (after the version, which the build reads)

__all__ = ["train", "__version__"]
