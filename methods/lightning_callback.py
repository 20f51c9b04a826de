"""Any method of ``adarand.methods`` in a Lightning training: a callback (extra ``lightning``).

The LightningModule's ``training_step`` returns a dict with its own ``loss`` (the cross-entropy),
the batch's ``features`` g(x) and ``labels`` (and ``logits`` or ``images`` where the method reads
them). The callback wraps ``training_step``: it adds the method's terms to the loss (or, for a
method that replaces the cross-entropy, takes them as the loss), logs each as ``reg/<term>``, and
after the optimizer step calls the method's ``update``. It adds the method's parameter groups to
the first optimizer, moves the method to the module's device, and saves the method's state (and
its generator's) in Lightning's checkpoints, so that a resumed fit continues it.

    reg = AdaRand.from_loader(model.backbone, eval_loader, num_classes, total_steps=epochs * len(train_loader))
    trainer = L.Trainer(max_epochs=epochs, callbacks=[MethodCallback(reg)])
    trainer.fit(module, train_loader)          # training_step returns {"loss", "features", "labels"}
"""

from __future__ import annotations

import functools

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from .base import Method


class MethodCallback(Callback):
    """Adds ``method`` (an ``adarand.methods`` object) to a LightningModule's training:
    loss = its CE + the method's terms (module docstring).

        trainer = L.Trainer(max_epochs=epochs, callbacks=[MethodCallback(reg)])
    """

    def __init__(self, method: Method):
        self.method = method
        self.groups_added = False

    @property
    def state_key(self) -> str:
        return f"MethodCallback[{type(self.method).__name__}]"

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.method.to(pl_module.device)
        if not self.groups_added and trainer.optimizers:
            for group in self.method.parameter_groups(trainer.optimizers[0].param_groups[0]["lr"]):
                trainer.optimizers[0].add_param_group(group)
            self.groups_added = True
        if not getattr(pl_module.training_step, "adds_method", False):
            pl_module.training_step = self.wrap(pl_module, pl_module.training_step)

    def wrap(self, pl_module: LightningModule, training_step):
        method = self.method

        @functools.wraps(training_step)
        def step(*args, **kwargs):
            out = training_step(*args, **kwargs)
            if not isinstance(out, dict) or "features" not in out or "labels" not in out:
                raise TypeError("MethodCallback: training_step must return a dict with loss, features and labels "
                                f"(got {type(out).__name__})")
            terms = method.terms(out["features"], out["labels"], logits=out.get("logits"), images=out.get("images"))
            for name, value in terms.items():
                pl_module.log(f"reg/{name}", value.detach(), on_step=True, on_epoch=True)
            total = sum(t.float() for t in terms.values()) if terms else out["features"].new_zeros(())
            loss = total if method.replaces_cross_entropy else out["loss"] + total
            return {**out, "loss": loss}

        step.adds_method = True
        return step

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        logs = self.method.update(outputs["features"].detach(), outputs["labels"])
        for name, value in logs.items():
            pl_module.log(f"reg/{name}", value, on_step=True, on_epoch=False)

    def state_dict(self) -> dict:
        generator = getattr(self.method, "generator", None)
        return {"method": self.method.state_dict(),
                "generator": generator.get_state() if isinstance(generator, torch.Generator) else None}

    def load_state_dict(self, state_dict: dict) -> None:
        self.method.load_state_dict(state_dict["method"])
        generator = getattr(self.method, "generator", None)
        if state_dict.get("generator") is not None and isinstance(generator, torch.Generator):
            generator.set_state(state_dict["generator"])
