"""AdaRand fine-tuning engine (the repository root is the package ``adarand``).

``adarand.train(config, overrides, output=...)`` runs a fine-tuning as ``adarand-run`` does and
returns its results (see ``adarand.engine.launch.train``); ``adarand.load_model(run)`` gives a
finished run's selected model, its preprocessing and its class names
(``adarand.engine.trained.load_model``). The methods for any training loop are in
``adarand.methods``."""

__version__ = "0.1.0"
__all__ = ["load_model", "train", "__version__"]


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def __getattr__(name: str):
    # imported on first use, so that ``import adarand.core...`` and tools that import this file on
    # its own (pytest, which sees the repository root as a package folder) do not load the engine
    if name == "train":
        from .engine.launch import train

        return train
    if name == "load_model":
        from .engine.trained import load_model

        return load_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
