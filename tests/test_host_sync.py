"""No host synchronisation in the training step outside the logging interval.

Every call that copies a tensor's value to the host (.item(), .tolist(), .cpu(), .numpy(), bool(),
float(), int()) is counted while an iteration runs (from the loaded batch to the end of
ITERATION_COMPLETED), for every registered method, with the logging interval longer than the run.
The optimizers' host-side step counters (torch/optim) are not device tensors and are allowed.

The same iterations run under the PyTorch profiler, which also sees the reads that torch's own
C++ operators make (``aten::_local_scalar_dense``, what ``.item()`` runs): ``torch.normal(mean,
std)`` reads min(std) >= 0 back every call, which the Python-level patch above cannot see. The
reads allowed are named in ALLOWED_READS with the reason each is no device sync on a GPU, or is
the method's own (torch.linalg's SVD checks its solver's status on the host; see the README).
"""

import sys

import pytest
import torch
from ignite.engine import Events
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

from adarand.core.config import ModelConfig
from adarand.engine.attach import attach_handlers
from adarand.engine.build import build_run
from adarand.engine.config import load_config
from adarand.engine.state import RunRecord
from adarand.handlers.registry import known_regularizers
from adarand.models import create_model

from conftest import make_image_folder, write_tiny_config

SYNCING = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")

# operator whose C++ code reads a value back -> the methods allowed to run it in the step (None: any)
ALLOWED_READS = {
    # the CPU kernels read their step counters from CPU tensors; the CUDA kernels read them on the GPU
    # (the network's fused Adam/AdamW in fp16 runs)
    "aten::_fused_adam_": None,
    "aten::_fused_adamw_": None,
    # torch.optim.Adam (AdaRand's prior optimizer, capturable=False) keeps its step counter in a CPU
    # tensor on every device and reads it for the bias corrections: a host read, never a device sync
    "Optimizer.step#Adam.step": None,
    # bounds checks on the CPU only (ATen's one_hot skips them on CUDA and relies on a device assert)
    "aten::one_hot": None,
    # torch.linalg's SVD checks LAPACK's / cuSOLVER's status on the host: a sync on a GPU, which
    # BSS (singular values every step) and DR-Tune (its rotation every 10 iterations) cannot avoid
    "aten::_linalg_check_errors": {"bss", "dr_tune"},
}


def allowed(chain: list[str], method: str) -> bool:
    return any(op in ALLOWED_READS and (ALLOWED_READS[op] is None or method in ALLOWED_READS[op]) for op in chain)


def reads_in_iterations(prof) -> list[list[str]]:
    """For each aten::_local_scalar_dense inside an iteration window, its chain of parent operators
    up to the window (innermost first)."""
    chains = []
    for event in prof.events():
        if event.name != "aten::_local_scalar_dense":
            continue
        chain, parent = [], event.cpu_parent
        while parent is not None and parent.name != "TRAIN_ITERATION":
            chain.append(parent.name)
            parent = parent.cpu_parent
        if parent is not None:
            chains.append(chain)
    return chains


@pytest.mark.parametrize("method", known_regularizers())
def test_no_host_sync_in_the_step(tmp_path, method, monkeypatch):
    check_no_host_sync(tmp_path, method, monkeypatch, [])


@pytest.mark.parametrize("method", ["finetune", "adarand"])
@pytest.mark.parametrize("optim", ["sgd", "adamw"])
def test_no_host_sync_with_fp16_and_its_grad_scaler(tmp_path, method, optim, monkeypatch):
    """The GradScaler reads its inf flag back every step unless the optimizer is fused (fp16 runs
    make it so)."""
    check_no_host_sync(tmp_path, method, monkeypatch, ["train.amp=fp16", f"optim.name={optim}"])


def check_no_host_sync(tmp_path, method, monkeypatch, overrides):
    extra = {"dr_tune": ["method.bank_size=8"]}.get(method, []) + overrides
    if method == "uot":  # needs source data: a folder of four classes beside the target's
        source = make_image_folder(tmp_path / "source", {0: 4, 1: 4, 2: 4, 3: 4}, n_test=0, seed=3) / "train"
        extra += [f"method.source_root={source}", "method.select_classes=2"]
    if method == "co_tuning":  # needs a pretrained model with a source classifier
        source, _ = create_model(ModelConfig(arch="small_cnn", width=4), num_classes=7)
        torch.save(source.state_dict(), tmp_path / "source.pt")
        extra = [f"model.pretrained={tmp_path / 'source.pt'}"]
    cfg = load_config(write_tiny_config(tmp_path, method), ["train.log_every=1000", *extra])
    run = build_run(cfg)
    attach_handlers(run, tmp_path / "run", RunRecord())
    run.regularizer.prepare()  # as a run does before its first epoch
    active, calls = [False], []

    def counting(name, original):
        def wrapper(self, *args, **kwargs):
            if active[0] and "torch/optim/" not in sys._getframe(1).f_code.co_filename:
                calls.append((name, sys._getframe(1).f_code.co_filename, sys._getframe(1).f_lineno))
            return original(self, *args, **kwargs)
        return wrapper

    for name in SYNCING:
        monkeypatch.setattr(torch.Tensor, name, counting(name, getattr(torch.Tensor, name)))

    window = []

    def start(_):
        active[0] = True
        window.append(record_function("TRAIN_ITERATION"))
        window[-1].__enter__()

    def stop(_):
        active[0] = False
        window.pop().__exit__(None, None, None)

    run.trainer.add_event_handler(Events.GET_BATCH_COMPLETED, start)  # the batch is loaded: the iteration begins
    run.trainer.add_event_handler(Events.ITERATION_COMPLETED, stop)  # the last ITERATION_COMPLETED handler
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run.trainer.run(run.loaders.train, max_epochs=2)
    assert run.trainer.state.iteration >= 6
    assert calls == []
    chains = reads_in_iterations(prof)
    not_allowed = [chain for chain in chains if not allowed(chain, method)]
    assert not_allowed == []


def test_the_operator_level_check_sees_torch_normal():
    """reads_in_iterations finds the host read inside torch.normal(mean, std), which no patch of
    torch.Tensor sees."""
    mean, std = torch.zeros(4, 3), torch.ones(4, 3)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with record_function("TRAIN_ITERATION"):
            torch.normal(mean, std)
            torch.randn_like(mean).mul_(std).add_(mean)
        torch.zeros(3).sum().item()  # outside the window
    assert reads_in_iterations(prof) and all("aten::normal" in chain for chain in reads_in_iterations(prof))
