"""What a run prints: progress bars on a terminal only, and one plain line per epoch (which a
cluster job's log file keeps readable)."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bars(enabled: bool) -> bool:
    """Whether to draw progress bars: asked for (``train.progress``) and stderr is a terminal; in a
    log file a bar is only carriage returns and cursor codes."""
    return enabled and sys.stderr.isatty()


def epoch_line(epoch: int, epochs: int, losses: dict[str, float], val: str, best: str, best_epoch: int,
               train_s: float, val_s: float) -> str:
    """``epoch 3/50: loss 0.912 (ce 0.880, reg 0.032) | val acc 71.25 % loss 0.934 | best 72.50 %
    (epoch 2) | 3.1 s + val 0.4 s``. ``losses``: the epoch's means, ``loss`` the total and
    ``loss_<term>`` each term; ``val`` and ``best``: the task's words for the validation metrics
    and the best so far."""
    terms = ", ".join(f"{k.removeprefix('loss_')} {v:.4g}" for k, v in losses.items() if k.startswith("loss_"))
    total = f"loss {losses['loss']:.4g}" + (f" ({terms})" if terms else "") if "loss" in losses else "loss -"
    return (f"epoch {epoch}/{epochs}: {total} | {val} | best {best} (epoch {best_epoch}) | "
            f"{train_s:.1f} s + val {val_s:.1f} s")


def print_line(text: str) -> None:
    """A line on stdout that never lands inside a progress bar: tqdm clears the bars drawn on the
    terminal, writes the line and draws them again (without bars it is a plain print)."""
    tqdm.write(text, file=sys.stdout)
    sys.stdout.flush()


def result_words(results: dict, split: str) -> str:
    """A run's figures on ``split`` (val, test) from its results.json: ``accuracy: 85.71 %`` or
    ``bbox AP: 30.12, mask AP: 25.00`` (AP in points)."""
    if results.get("task", "classification") == "classification":
        return f"accuracy: {100 * results[f'{split}_accuracy']:.2f} %"
    return ", ".join(f"{kind} AP: {100 * results[f'{split}_{kind}_ap']:.2f}" for kind in ("bbox", "mask")
                     if f"{split}_{kind}_ap" in results)
