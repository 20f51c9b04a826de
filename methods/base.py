"""The protocol every method object follows, in any training loop.

A method is a plain object built from plain things (the model or its extractor, statistics or a
loader, the number of classes, its hyperparameters). Per step:

* ``method.terms(features, labels, logits=..., images=...)``: its loss terms, each already
  weighted, by name. A method with ``replaces_cross_entropy`` returns the classification term
  itself (``"ce"``: DR-Tune's and Core-tuning's), and the loop adds no cross-entropy of its own;
* ``method(features, labels, ...)``: the sum of those terms, to add to the loop's loss;
* ``method.update(features, labels)``: after the optimizer step, for methods with state
  (AdaRand's class means and prior step, DR-Tune's banks); returns scalars to log;
* ``method.parameter_groups(lr)``: parameter groups to add to the network's optimizer (source
  heads, projection heads), built with the network's learning rate ``lr``;
* ``state_dict()`` / ``load_state_dict()`` and ``to(device)``.

The hyperparameters are keyword arguments with the YAML's names, defaults and ranges (``lambda``,
a Python keyword, is ``lam``); a value out of range raises ``ValueError`` naming the method and
the key.

    reg = BSS(lam=0.001)                        # any method, from plain things
    loss = F.cross_entropy(logits, y) + reg(features, y)
    reg.update(features.detach(), y)            # after optimizer.step()
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from ..core.errors import ConfigError
from ..core.schema import build, yaml_key


@dataclasses.dataclass(kw_only=True)
class NoParams:
    pass


def make_params(params_cls: type, given: dict[str, Any], owner: str) -> Any:
    """``params_cls`` from keyword arguments named by field (``lam``) or by YAML key, checked as the
    config loader checks them; ``ValueError`` (one line) naming ``owner`` and the key otherwise.

        params = make_params(AdaRandParams, {"lam": 0.5}, "AdaRand")    # AdaRandParams(lam=0.5, ...)
    """
    fields = {f.name: yaml_key(f) for f in dataclasses.fields(params_cls) if f.init}
    unknown = [k for k in given if k not in fields and k not in fields.values()]
    if unknown:
        raise TypeError(f"{owner}: unknown hyperparameter(s) {', '.join(unknown)} "
                        f"(known: {', '.join(sorted(fields))})")
    raw = {fields.get(k, k): v for k, v in given.items()}
    try:
        return build(params_cls, raw, "", lambda key: owner)
    except ConfigError as e:
        raise ValueError(str(e)) from None


class Method:
    """The base of every method object: no terms, no state (plain fine-tuning: L = CE).

        class MyPenalty(Method):
            def terms(self, features, labels, *, logits=None, images=None):
                return {"my_penalty": features.pow(2).mean()}
    """

    Params: type = NoParams
    replaces_cross_entropy = False

    def __init__(self, params: Any = None, **hyperparameters: Any):
        if params is not None and hyperparameters:
            raise TypeError(f"{type(self).__name__}: give either params or keyword hyperparameters")
        self.params = params if params is not None else make_params(self.Params, hyperparameters, type(self).__name__)

    def terms(self, features: torch.Tensor, labels: torch.Tensor, *, logits: torch.Tensor | None = None,
              images: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The method's loss terms for a batch, each weighted, by name."""
        return {}

    def __call__(self, features: torch.Tensor, labels: torch.Tensor, *, logits: torch.Tensor | None = None,
                 images: torch.Tensor | None = None) -> torch.Tensor:
        """The sum of ``terms`` (0 when it has none)."""
        terms = self.terms(features, labels, logits=logits, images=images)
        total = features.new_zeros((), dtype=torch.float32)
        for t in terms.values():
            total = total + t.float()
        return total

    def update(self, features: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Work after the optimizer step (features of the step, detached); scalars to log."""
        return {}

    def parameter_groups(self, lr: float) -> list[dict]:
        return []

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimizers of its own, by name (their learning rates are worth logging)."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def to(self, device: torch.device | str) -> Method:
        """Every tensor and module it holds, moved to ``device``."""
        device = torch.device(device)
        for name, value in list(vars(self).items()):
            if isinstance(value, nn.Module):
                value.to(device)
            elif isinstance(value, torch.Tensor):
                setattr(self, name, value.to(device))
            elif isinstance(value, dict) and value and all(isinstance(v, torch.Tensor) for v in value.values()):
                setattr(self, name, {k: v.to(device) for k, v in value.items()})
        return self
