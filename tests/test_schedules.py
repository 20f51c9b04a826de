"""The network's learning-rate schedules, followed through an Ignite run against their formulas."""

import math

import pytest
import torch
from ignite.engine import Engine, Events

from adarand.core.config import OptimConfig
from adarand.engine.optim import create_lr_scheduler


def lrs_through_a_run(cfg: OptimConfig, epoch_length: int, epochs: int) -> list[float]:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=cfg.lr)
    engine = Engine(lambda e, b: opt.param_groups[0]["lr"])
    engine.add_event_handler(Events.ITERATION_STARTED, create_lr_scheduler(cfg, opt, epoch_length, epochs))
    seen = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.output))
    engine.run([0] * epoch_length, max_epochs=epochs)
    return seen


def test_the_published_schedule_warms_up_then_follows_cos_7pi_16():
    lr, warmup, total = 3e-5, 30, 200
    cfg = OptimConfig(name="adamw", lr=lr, weight_decay=0.1, scheduler="published", warmup_iterations=warmup)
    seen = lrs_through_a_run(cfg, epoch_length=20, epochs=10)
    want = [lr * t / warmup if t < warmup else lr * math.cos(7 * math.pi / 16 * (t - warmup) / (total - warmup))
            for t in range(total)]
    assert seen == [pytest.approx(w, rel=1e-9, abs=1e-15) for w in want]
    assert seen[warmup] == pytest.approx(lr)
    # the last iterations approach cos(7 pi / 16) = 0.195 of lr, not 0
    assert seen[-1] / lr == pytest.approx(math.cos(7 * math.pi / 16 * 169 / 170), rel=1e-9) and seen[-1] / lr > 0.19
