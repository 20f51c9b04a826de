"""A trained model out of a run folder: ``adarand.load_model`` and ``adarand-export``."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

import adarand
from adarand.core.errors import UserError
from adarand.engine.config import load_config
from adarand.experiments import evaluation, export

from conftest import run_entry, run_main


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    run = root / "run"
    r = run_main("demo", "train.epochs=3", f"cache_dir={root / 'cache'}", "--quiet", "--output", run)
    assert r.returncode == 0, r.stderr[-3000:]
    return run


def test_load_model_gives_adarand_evals_test_accuracy(demo_run):
    model, transform, classes, cfg, checkpoint = adarand.load_model(demo_run)
    results = json.loads((demo_run / "results.json").read_text())
    assert checkpoint.name == f"best_model_{results['best_epoch']}.pt" and not model.training
    assert classes == results["classes"] == [f"digit{k}" for k in range(5, 10)]
    r = run_entry(evaluation.main, str(demo_run))
    assert r.returncode == 0, r.stderr
    evaluated = json.loads((demo_run / "eval_test.json").read_text())
    # every test image from its file, through the returned transform and model
    from adarand.datasets import create_datasets

    test = create_datasets(cfg.data, cfg.cache_dir).test
    with torch.no_grad():
        predicted = [int(model(transform(path).unsqueeze(0))[0].argmax(1)) for path, _ in test.samples]
    correct = sum(p == label for p, (_, label) in zip(predicted, test.samples, strict=True))
    assert correct / len(test.samples) == evaluated["accuracy"] == results["test_accuracy"]
    # a PIL image gives the same input as its file
    from PIL import Image

    path = test.samples[0][0]
    assert torch.equal(transform(Image.open(path)), transform(path))


def test_load_model_of_a_folder_without_a_run_is_one_line(tmp_path):
    with pytest.raises(UserError, match="not a run folder"):
        adarand.load_model(tmp_path)


def normalized_logits(demo_run, x):
    """What the exported graph must compute, worked out here: the model on (x - mean) / std."""
    model, _, _, cfg, _ = adarand.load_model(demo_run)
    mean = torch.tensor(cfg.data.mean).view(1, -1, 1, 1)
    std = torch.tensor(cfg.data.std).view(1, -1, 1, 1)
    with torch.no_grad():
        return model((x - mean) / std)[0]


def test_onnx_export_gives_pytorchs_logits(demo_run, tmp_path):
    r = run_entry(export.main, str(demo_run), "--output", str(tmp_path / "demo.onnx"))
    assert r.returncode == 0, r.stderr
    assert "ONNX Runtime vs PyTorch: max |difference|" in r.stdout
    assert (tmp_path / "demo.onnx.classes.txt").read_text().split() == [f"digit{k}" for k in range(5, 10)]
    session = ort.InferenceSession(str(tmp_path / "demo.onnx"), providers=["CPUExecutionProvider"])
    cfg = load_config(demo_run / "config.yaml")
    for batch in (1, 5):  # the batch size is dynamic
        x = torch.rand(batch, 1, cfg.data.image_size, cfg.data.image_size, generator=torch.Generator().manual_seed(batch))
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        np.testing.assert_allclose(got, normalized_logits(demo_run, x).numpy(), atol=1e-4, rtol=0)


def test_torchscript_and_pt2_exports_give_pytorchs_logits(demo_run, tmp_path):
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    want = normalized_logits(demo_run, x)
    assert run_entry(export.main, str(demo_run), "--format", "torchscript", "--output", str(tmp_path / "m.pt")).returncode == 0
    assert torch.allclose(torch.jit.load(str(tmp_path / "m.pt"))(x), want, atol=1e-5)
    assert run_entry(export.main, str(demo_run), "--format", "pt2", "--output", str(tmp_path / "m.pt2")).returncode == 0
    assert torch.allclose(torch.export.load(str(tmp_path / "m.pt2")).module()(x), want, atol=1e-5)
