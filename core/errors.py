"""Errors that are the user's to fix: printed as one line, no traceback, non-zero exit."""


class UserError(Exception):
    """Bad input (config, dataset folder, weights file): the message is the whole story."""


class ConfigError(UserError):
    """A config file or override is malformed or does not match the schema."""

    def __init__(self, source: str, key: str | None, message: str):
        self.source = source
        self.key = key
        where = f"{source}: key '{key}'" if key else source
        super().__init__(f"{where}: {message}")
