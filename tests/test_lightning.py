"""AdaRand through the Lightning callback: the README's example, run as printed on the demo's data
for 2 epochs on the CPU; its terms are logged, its prior is in the checkpoint, and a fit resumed
from the first epoch's checkpoint ends at the uninterrupted fit's weights."""

import copy

import torch
from test_readme_example import readme_block
from torch.utils.data import DataLoader, TensorDataset

from adarand.datasets import create_datasets
from adarand.engine.config import load_config
from adarand.models import create_model

from conftest import REPO

EPOCHS = 2


def demo_parts(tmp_path):
    cfg = load_config(REPO / "yaml" / "demo_ft.yaml", [f"cache_dir={tmp_path / 'cache'}"])
    data = create_datasets(cfg.data, cfg.cache_dir)
    images = torch.stack([data.train_eval[i][0] for i in range(len(data.train_eval))])
    labels = torch.tensor([data.train_eval[i][1] for i in range(len(data.train_eval))])
    torch.manual_seed(0)
    model, _ = create_model(cfg.model, data.num_classes, in_channels=1, image_size=cfg.data.image_size)
    train = DataLoader(TensorDataset(images, labels), batch_size=8, shuffle=False)
    return model, train, DataLoader(TensorDataset(images, labels), batch_size=64), data.num_classes


def fit(tmp_path, monkeypatch, name, model, train_loader, eval_loader, num_classes, epochs, ckpt_path=None,
        stop_after=None):
    """The README's example in a folder of its own; ``ckpt_path``: resume (the README's last line
    given Lightning's ckpt_path); ``stop_after``: the fit stops after that many epochs (an
    interruption: the method's schedule is still the whole run's)."""
    folder = tmp_path / name
    folder.mkdir()
    monkeypatch.chdir(folder)
    code = readme_block("example-lightning", "python")
    if stop_after is not None:
        code = code.replace("L.Trainer(max_epochs=epochs,", f"L.Trainer(max_epochs={stop_after},")
    if ckpt_path is not None:
        code = code.replace("trainer.fit(Classifier(model), train_loader)",
                            f"trainer.fit(Classifier(model), train_loader, ckpt_path={str(ckpt_path)!r})")
    namespace = {"model": model, "train_loader": train_loader, "eval_loader": eval_loader,
                 "num_classes": num_classes, "epochs": epochs}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace, folder / "runs" / "lightning" / "checkpoints"


def test_adarand_through_the_lightning_callback(tmp_path, monkeypatch):
    model, train, evaluation, k = demo_parts(tmp_path)
    start = copy.deepcopy(model)
    whole, whole_ckpts = fit(tmp_path, monkeypatch, "whole", model, train, evaluation, k, EPOCHS)
    trainer, reg = whole["trainer"], whole["reg"]
    # the terms are logged, and the prior's update too
    logged = trainer.callback_metrics
    assert {"reg/reg_epoch", "reg/prior_ada"} <= set(logged), sorted(logged)
    assert float(logged["reg/reg_epoch"]) > 0
    # the prior moved, and its state is in the checkpoint
    (ckpt,) = whole_ckpts.glob("*.ckpt")
    state = torch.load(ckpt, weights_only=True)["callbacks"]["MethodCallback[AdaRand]"]
    assert torch.equal(state["method"]["mu"], reg.mu.detach()) and torch.equal(state["method"]["mu_bar"], reg.mu_bar)
    assert state["method"]["scheduler"]["last_epoch"] == EPOCHS * len(train)
    assert float((reg.mu.detach() - reg.mu_bar).abs().max()) > 0

    # one epoch, then a fit resumed from its checkpoint: the uninterrupted weights and prior
    first, first_ckpts = fit(tmp_path, monkeypatch, "first", copy.deepcopy(start), train, evaluation, k, EPOCHS,
                             stop_after=1)
    assert first["trainer"].current_epoch == 1
    (one_epoch,) = first_ckpts.glob("*.ckpt")
    resumed, _ = fit(tmp_path, monkeypatch, "resumed", copy.deepcopy(start), train, evaluation, k, EPOCHS,
                     ckpt_path=one_epoch)
    a, b = whole["model"].state_dict(), resumed["model"].state_dict()
    assert all(torch.allclose(a[key].double(), b[key].double(), atol=1e-6, rtol=0) for key in a)
    assert torch.allclose(reg.mu.detach(), resumed["reg"].mu.detach(), atol=1e-6)
    moved = max(float((a[key].double() - v.double()).abs().max()) for key, v in start.state_dict().items()
                if v.is_floating_point())
    assert moved > 1e-3
