"""No host synchronisation in the training step outside the logging interval.

Every call that copies a tensor's value to the host (.item(), .tolist(), .cpu(), .numpy(), bool(),
float(), int()) is counted while an iteration runs (from ITERATION_STARTED to the end of
ITERATION_COMPLETED), for every registered method, with the logging interval longer than the run.
The optimizers' host-side step counters (torch/optim) are not device tensors and are allowed.
"""

import sys

import pytest
import torch
from ignite.engine import Events

from adarand.engine.config import ModelConfig, load_config
from adarand.engine.state import RunRecord
from adarand.engine.training import attach_handlers, build_run
from adarand.handlers.registry import known_regularizers
from adarand.models import create_model

from conftest import write_tiny_config

SYNCING = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")


@pytest.mark.parametrize("method", known_regularizers())
def test_no_host_sync_in_the_step(tmp_path, method, monkeypatch):
    extra = {"dr_tune": ["method.bank_size=8"]}.get(method, [])
    if method == "co_tuning":  # needs a pretrained model with a source classifier
        source, _ = create_model(ModelConfig(arch="small_cnn", width=4), num_classes=7)
        torch.save(source.state_dict(), tmp_path / "source.pt")
        extra = [f"model.pretrained={tmp_path / 'source.pt'}"]
    cfg = load_config(write_tiny_config(tmp_path, method), ["train.log_every=1000", *extra])
    run = build_run(cfg)
    attach_handlers(run, tmp_path / "run", RunRecord())
    active, calls = [False], []

    def counting(name, original):
        def wrapper(self, *args, **kwargs):
            if active[0] and "torch/optim/" not in sys._getframe(1).f_code.co_filename:
                calls.append((name, sys._getframe(1).f_code.co_filename, sys._getframe(1).f_lineno))
            return original(self, *args, **kwargs)
        return wrapper

    for name in SYNCING:
        monkeypatch.setattr(torch.Tensor, name, counting(name, getattr(torch.Tensor, name)))

    def start(_):
        active[0] = True

    def stop(_):
        active[0] = False

    run.trainer.add_event_handler(Events.GET_BATCH_COMPLETED, start)  # the batch is loaded: the iteration begins
    run.trainer.add_event_handler(Events.ITERATION_COMPLETED, stop)  # the last ITERATION_COMPLETED handler
    run.trainer.run(run.loaders.train, max_epochs=2)
    assert run.trainer.state.iteration >= 6
    assert calls == []
