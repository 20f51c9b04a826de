"""Mixed precision on the CPU (bf16; fp16 with its grad scaler) and channels_last."""

import json
import math

import pytest
import torch
from ignite.engine import Events

from adarand.engine.build import build_run
from adarand.engine.config import load_config

from conftest import run_cli, write_tiny_config


@pytest.mark.parametrize("amp,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_forward_in_low_precision_regularizer_in_float32(tmp_path, amp, dtype):
    run = build_run(load_config(write_tiny_config(tmp_path, "adarand"), [f"train.amp={amp}"]))
    seen = {}

    def hook(module, inputs, output):
        seen.setdefault("backbone", output.dtype)

    run.net.backbone.register_forward_hook(hook)
    run.regularizer.attach(run.trainer)
    losses = []
    run.trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(
        {k: (v.dtype, float(v.detach())) for k, v in e.state.output.losses.items()}))
    run.trainer.run(run.loaders.train, max_epochs=1)
    assert seen["backbone"] == dtype
    assert all(d == torch.float32 and math.isfinite(v) for step in losses for d, v in step.values())
    reg = run.regularizer
    assert reg.mu.dtype == reg.mu_bar.dtype == reg.sigma.dtype == torch.float32
    assert run.ctx.class_statistics().sums.dtype == torch.float64
    assert run.trainer.state.grad_scaler.is_enabled() == (amp == "fp16")
    assert all(p.dtype == torch.float32 for p in run.net.parameters())  # master weights stay float32


def test_bf16_run_end_to_end_with_channels_last(tmp_path):
    out = tmp_path / "run"
    r = run_cli(write_tiny_config(tmp_path, "adarand"), "train.amp=bf16", "train.channels_last=true",
                "--output", out)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    assert 0.0 <= res["test_accuracy"] <= 1.0 and math.isfinite(res["test_loss"])


def test_channels_last_model(tmp_path):
    run = build_run(load_config(write_tiny_config(tmp_path, "finetune"), ["train.channels_last=true"]))
    conv = run.net.backbone[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
