"""DR-Tune: distribution regularization with semantic calibration (seed paper; SPEC §8).

A frozen copy of the pretrained encoder gives z^p for the same augmented batch. FIFO banks hold
K_bank pretrained features, downstream features (detached) and labels; they are filled with
pretrained features before training. Each iteration, without gradients, the pretrained bank is
calibrated: both banks L2-normalised; every ``rotate_every`` iterations an orthogonal Procrustes
rotation (centred banks, reflection fixed) maps the pretrained bank onto the downstream one; each
class's pretrained entries are shifted by (downstream centre - pretrained centre), the downstream
centre weighted by a softmax over the entries' cosine to the normalised head weight of the class;
then every entry is L2-normalised again and scaled to the batch's mean feature norm (every row of
the calibrated bank has that norm, as in the published code). The loss is one cross-entropy over the B + K_bank
rows [features; calibrated bank] with labels [y; bank labels] (the bank trains only the head).
The batch is enqueued after the optimizer step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .base import Method
from .frozen import frozen_copy
from .statistics import class_sums


def procrustes_rotation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The rotation R (orthogonal, det +1) minimising ||a R - b||_F for a, b of shape (N, d)."""
    u, _, vh = torch.linalg.svd(a.t() @ b)
    sign = torch.sign(torch.linalg.det(u @ vh))
    u = torch.cat([u[:, :-1], u[:, -1:] * sign], dim=1)  # reflection fix: flip the weakest direction
    return u @ vh


def class_shift(rotated: torch.Tensor, downstream: torch.Tensor, labels: torch.Tensor,
                head_weight: torch.Tensor) -> torch.Tensor:
    """Shift each class's rotated pretrained entries by (downstream centre - pretrained centre).

    The downstream centre of class k weights its entries by a softmax over their cosine to the
    normalised head weight w_k. Boolean masks per class, no loop; classes without entries are
    left alone, a class with one entry moves onto its downstream entry."""
    k = head_weight.shape[0]
    masks = F.one_hot(labels, k).t().bool()  # (K, N)
    sums, counts = class_sums(rotated, labels, k)
    counts = counts.unsqueeze(1)
    centre_p = sums / counts.clamp(min=1)
    w = F.normalize(head_weight, dim=1)
    cos = (F.normalize(downstream, dim=1) * w[labels]).sum(1)  # (N,) cosine of each entry to its class weight
    logits = torch.where(masks, cos.unsqueeze(0), torch.full_like(masks, float("-inf"), dtype=cos.dtype))
    logits = torch.where(counts > 0, logits, torch.zeros_like(logits))  # empty classes: no -inf rows
    weights = torch.softmax(logits, dim=1) * masks
    centre_d = weights @ downstream
    return rotated + (centre_d - centre_p)[labels]


def rescale_rows(x: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """Every row of ``x`` (N, d) L2-normalised, then scaled to ``norm``: ||row|| = norm for all rows."""
    return F.normalize(x, dim=1) * norm


@dataclass(kw_only=True)
class DRTuneParams:
    bank_size: int = field(default=2048, metadata={"range": ">= 1"})  # frozen-pretrained features kept in the FIFO bank
    # iterations between the bank's rotations onto the downstream features
    rotate_every: int = field(default=10, metadata={"range": ">= 1"})


class DRTune(Method):
    """DR-Tune (module docstring): one cross-entropy over [features; calibrated pretrained bank]
    with labels [y; bank labels]; it replaces the cross-entropy (term ``ce``). ``backbone``: the
    pretrained extractor, copied and frozen when the object is made; ``head``: the classifier.
    ``fill`` fills the banks before training; ``update`` enqueues the step's batch.

        reg = DRTune(model.backbone, model.head, feature_dim, bank_size=2048)
        reg.fill(augmented_train_loader)
        loss = reg(features, y, images=x)                 # no cross-entropy of your own
        reg.update(features, y)                           # after optimizer.step()
    """

    Params = DRTuneParams
    replaces_cross_entropy = True

    def __init__(self, backbone: nn.Module, head: nn.Module, feature_dim: int, *, params: DRTuneParams | None = None,
                 **hyperparameters):
        super().__init__(params, **hyperparameters)
        size, d = self.params.bank_size, feature_dim
        dev = next(head.parameters()).device
        self.frozen = frozen_copy(backbone)
        self.head = head
        self.bank_p = torch.zeros(size, d, device=dev)
        self.bank_d = torch.zeros(size, d, device=dev)
        self.bank_y = torch.zeros(size, dtype=torch.long, device=dev)
        self.ptr = 0
        self.rotation = torch.eye(d, device=dev)
        self.steps = 0
        self.pending: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def enqueue(self, zp: torch.Tensor, zd: torch.Tensor, y: torch.Tensor) -> None:
        n = zp.shape[0]
        idx = (self.ptr + torch.arange(n, device=zp.device)) % self.params.bank_size
        self.bank_p[idx], self.bank_d[idx], self.bank_y[idx] = zp.float(), zd.float(), y
        self.ptr = (self.ptr + n) % self.params.bank_size

    @torch.no_grad()
    def fill(self, loader, device: torch.device | None = None) -> None:
        """Fill both banks with pretrained features of ``loader``'s batches (augmented training
        batches of full size), going round it as often as needed."""
        device = device or self.bank_p.device
        filled = 0
        while filled < self.params.bank_size:
            for x, y in loader:
                z = self.frozen(x.to(device))
                self.enqueue(z, z, y.to(device))
                filled += z.shape[0]
                if filled >= self.params.bank_size:
                    break

    @torch.no_grad()
    def calibrated_bank(self, batch_norm: torch.Tensor) -> torch.Tensor:
        """The pretrained bank, rotated (every ``rotate_every`` calls) and shifted onto the
        downstream bank, each row then L2-normalised and scaled to ``batch_norm``."""
        p, d = F.normalize(self.bank_p, dim=1), F.normalize(self.bank_d, dim=1)
        if self.steps % self.params.rotate_every == 0:
            self.rotation = procrustes_rotation(p - p.mean(0), d - d.mean(0))
        rotated = p @ self.rotation
        shifted = class_shift(rotated, d, self.bank_y, self.head.weight.detach().float())
        return rescale_rows(shifted, batch_norm)

    def terms(self, features, labels, *, logits=None, images=None) -> dict[str, torch.Tensor]:
        if images is None:
            raise ValueError("DRTune needs the batch's images (images=x): the frozen pretrained model reads them")
        with torch.no_grad():
            zp = self.frozen(images)
        feats = features.float()
        bank = self.calibrated_bank(feats.detach().norm(dim=1).mean())
        out = self.head(torch.cat([feats, bank.to(feats.dtype)]))
        self.steps += 1
        self.pending = (zp, feats.detach(), labels)
        return {"ce": F.cross_entropy(out, torch.cat([labels, self.bank_y]))}

    def update(self, features: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """The step's pretrained and downstream features join the banks (oldest out)."""
        if self.pending is not None:
            self.enqueue(*self.pending)
            self.pending = None
        return {}

    def state_dict(self) -> dict:
        return {"bank_p": self.bank_p.clone(), "bank_d": self.bank_d.clone(), "bank_y": self.bank_y.clone(),
                "ptr": self.ptr, "rotation": self.rotation.clone(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        dev = self.bank_p.device
        self.bank_p, self.bank_d = state["bank_p"].to(dev), state["bank_d"].to(dev)
        self.bank_y, self.rotation = state["bank_y"].to(dev), state["rotation"].to(dev)
        self.ptr, self.steps = int(state["ptr"]), int(state["steps"])
