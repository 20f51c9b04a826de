"""AdaRand fine-tuning engine (the repository root is the package ``adarand``)."""

__version__ = "0.1.0"
