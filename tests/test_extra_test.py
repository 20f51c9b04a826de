"""Further test sets (data.extra_test, as ImageNet-V2/-R/-A/-Sketch for supplement B.1): evaluated
with the selected model; a set holding some of the classes is scored over those classes' logits."""

import json

import pytest
import torch
import torch.nn.functional as F

from adarand.core.config import save_config
from adarand.core.errors import UserError
from adarand.datasets import create_datasets
from adarand.engine.config import load_config
from adarand.engine.training import run_training
from adarand.experiments.report import collect
from adarand.models import create_model

from conftest import make_image_folder, write_tiny_config


def test_a_class_subset_is_scored_over_its_classes_logits(tmp_path):
    extra = make_image_folder(tmp_path / "extra", {0: 4, 2: 5}, seed=3) / "train"  # classes 0 and 2 of 0-2
    sets = f"[{{name: shifted, root: '{extra}'}}, {{name: all, root: '{tmp_path / 'data' / 'test'}'}}]"
    cfg = load_config(write_tiny_config(tmp_path, "finetune"), [f"data.extra_test={sets}"])
    run_dir = tmp_path / "run"

    def write_config():  # as the command line does
        run_dir.mkdir(parents=True)
        save_config(cfg, run_dir / "config.yaml")

    run_training(0, cfg, run_dir, None, on_ready=write_config)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    got = results["extra_test"]["shifted"]
    assert got["classes"] == 2 and got["images"] == 9
    # independently: the selected model's logits of the two classes only, labels renumbered 0 -> 0, 2 -> 1
    net, _ = create_model(cfg.model, 3)
    state = torch.load(results["checkpoint"], weights_only=True)
    net.load_state_dict(state)
    net.eval()
    data = create_datasets(load_config(run_dir / "config.yaml").data, cfg.cache_dir)
    images, labels = zip(*[data.extra_test["shifted"][0][i] for i in range(9)], strict=True)
    with torch.no_grad():
        logits, _ = net(torch.stack(images))
    sub = logits[:, [0, 2]]
    y = torch.tensor([0 if label == 0 else 1 for label in labels])
    assert got["accuracy"] == pytest.approx(float((sub.argmax(1) == y).double().mean()))
    assert got["loss"] == pytest.approx(float(F.cross_entropy(sub, y)), rel=1e-5)
    # a set with every class is scored as the test split: the same figures
    assert results["extra_test"]["all"]["accuracy"] == pytest.approx(results["test_accuracy"])
    assert results["extra_test"]["all"]["loss"] == pytest.approx(results["test_loss"], rel=1e-6)
    # the tables report each further test set as a dataset of its own
    rows = {r.dataset: r for r in collect([tmp_path / "run"])}
    assert any(name.endswith("→ shifted") for name in rows)


def test_an_extra_test_set_with_an_unknown_class_is_one_line(tmp_path):
    extra = make_image_folder(tmp_path / "extra", {0: 2, 7: 2}) / "train"
    cfg = load_config(write_tiny_config(tmp_path, "finetune"), [f"data.extra_test=[{{name: x, root: '{extra}'}}]"])
    with pytest.raises(UserError, match=r"data.extra_test\[0\].root: .* not training classes: class7"):
        create_datasets(cfg.data, cfg.cache_dir)
