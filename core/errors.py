"""Errors that are the user's to fix: printed as one line, no traceback, non-zero exit."""

import math
import reprlib

_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxdict, _SHORT.maxlist, _SHORT.maxtuple = 3, 6, 8, 8
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 60, 60, 40


def short_repr(value) -> str:
    """A value as an error message shows it: at most a short prefix (a value built by YAML aliases
    can expand to gigabytes of text)."""
    text = _SHORT.repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


class UserError(Exception):
    """Bad input (config, dataset folder, weights file): the message is the whole story."""


class ConfigError(UserError):
    """A config file or override is malformed or does not match the schema."""

    def __init__(self, source: str, key: str | None, message: str):
        self.source = source
        self.key = key
        where = f"{source}: key '{key}'" if key else source
        super().__init__(f"{where}: {message}")


class NonFiniteLoss(Exception):
    """Training produced a NaN or infinite loss: the run stops (exit code 3), with the iteration and
    each loss term's last finite value; resuming would meet the same numbers."""

    exit_code = 3

    def __init__(self, iteration: int, epoch: int, bad: dict[str, float], last_finite: dict[str, float]):
        self.iteration, self.epoch = iteration, epoch
        terms = ", ".join(f"{k} {v}" for k, v in bad.items())
        last = ", ".join(f"{k} {v:.6g}" for k, v in last_finite.items()) or "none (the first interval)"
        super().__init__(f"the loss is not finite at iteration {iteration} (epoch {epoch}): {terms}; the last finite "
                         f"values (means over the previous logging interval): {last}. Lower the learning rate or "
                         "the regularization weight; the run stops without results")


class NonFiniteEvaluation(NonFiniteLoss):
    """An evaluation (validation after an epoch, or the test of the selected model) gave a NaN or
    infinite figure: a model that computes such numbers is no result. Exit code 3, no results.json."""

    def __init__(self, split: str, epoch: int, metrics: dict[str, float]):
        self.iteration, self.epoch = 0, epoch
        bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
        rest = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k not in bad)
        Exception.__init__(self, f"the {split} {' and '.join(bad)} {'is' if len(bad) == 1 else 'are'} not finite after "
                                 f"epoch {epoch}: {', '.join(str(v) for v in bad.values())} ({rest}); the model's "
                                 "outputs overflowed. Lower the learning rate or the regularization weight; the run "
                                 "stops without results")


class ProcessDied(Exception):
    """A process of a several-process run was killed (the out-of-memory killer, a signal): the
    others were stopped; the message names its rank and signal and the command that continues the
    run. Exit code 128 + the signal's number, as a shell reports a killed command."""

    def __init__(self, message: str, signal_number: int):
        self.exit_code = 128 + signal_number
        super().__init__(message)


class Interrupted(Exception):
    """Ctrl-C: the run stops with one line saying how to continue it (exit code 130, as a shell's)."""

    exit_code = 130


def os_error_message(e: OSError) -> str | None:
    """``PATH: the OS error`` for an error the system raised on a file (a full disk, a read-only or
    missing folder, a permission), or None when it names no file (then it is not the user's to fix)."""
    if not e.filename:
        return None
    paths = f"{e.filename} -> {e.filename2}" if e.filename2 else f"{e.filename}"
    return f"{paths}: {e.strerror or e.__class__.__name__}"


def error_summary(e: BaseException, empty: str = "") -> str:
    """``ClassName: the first line of its message`` (``empty`` when it has none), for one-line errors."""
    text = str(e)
    return f"{e.__class__.__name__}: {text.splitlines()[0] if text else empty}"


def error_line(e: BaseException) -> str:
    """The one line the command line prints for an error of the user's or of the run."""
    if isinstance(e, Interrupted):
        return str(e)
    if isinstance(e, OSError):
        return f"error: {os_error_message(e)}"
    return f"error: {e}"
