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
The batch is enqueued after the loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from ignite.engine import Engine

from ..core.errors import UserError
from ..core.step import TrainEvents
from .class_statistics import class_sums
from .frozen import frozen_copy, module_mib, tensors_mib
from .registry import Regularizer, register


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
    bank_size: int = field(default=2048, metadata={"range": ">= 1"})
    rotate_every: int = field(default=10, metadata={"range": ">= 1"})


@register("dr_tune")
class DRTune(Regularizer):
    Params = DRTuneParams

    def __init__(self, params: DRTuneParams, ctx):
        super().__init__(params, ctx)
        b = ctx.cfg.data.batch_size
        if params.bank_size % b:
            raise UserError(f"method.bank_size: {params.bank_size} is not a multiple of data.batch_size {b}")
        d, dev = ctx.net.feature_dim, ctx.device
        self.frozen = frozen_copy(ctx.net.backbone)
        self.frozen_mib = module_mib(self.frozen)
        self.bank_p = torch.zeros(params.bank_size, d, device=dev)
        self.bank_d = torch.zeros(params.bank_size, d, device=dev)
        self.bank_y = torch.zeros(params.bank_size, dtype=torch.long, device=dev)
        self.ptr = 0
        self.rotation = torch.eye(d, device=dev)
        self.steps = 0

    def attach(self, trainer: Engine) -> None:
        trainer.add_event_handler(TrainEvents.COMPUTE_LOSS, self.add_loss)

    def enqueue(self, zp: torch.Tensor, zd: torch.Tensor, y: torch.Tensor) -> None:
        n = zp.shape[0]
        idx = (self.ptr + torch.arange(n, device=zp.device)) % self.params.bank_size
        self.bank_p[idx], self.bank_d[idx], self.bank_y[idx] = zp.float(), zd.float(), y
        self.ptr = (self.ptr + n) % self.params.bank_size

    @torch.no_grad()
    def prepare(self) -> None:
        """Fill both banks with pretrained features of augmented training batches."""
        loader = self.ctx.augmented_loader(drop_last=True)
        filled = 0
        while filled < self.params.bank_size:
            for x, y in loader:
                z = self.frozen(x.to(self.ctx.device))
                self.enqueue(z, z, y.to(self.ctx.device))
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
        shifted = class_shift(rotated, d, self.bank_y, self.ctx.net.head.weight.detach().float())
        return rescale_rows(shifted, batch_norm)

    def add_loss(self, engine: Engine) -> None:
        step = engine.state.step
        with torch.no_grad():
            zp = self.frozen(step.x)
        feats = step.features.float()
        bank = self.calibrated_bank(feats.detach().norm(dim=1).mean())
        logits = self.ctx.net.head(torch.cat([feats, bank.to(feats.dtype)]))
        step.losses["ce"] = F.cross_entropy(logits, torch.cat([step.y, self.bank_y]))
        self.steps += 1
        self.enqueue(zp, feats.detach(), step.y)

    def state_dict(self) -> dict:
        return {"bank_p": self.bank_p.clone(), "bank_d": self.bank_d.clone(), "bank_y": self.bank_y.clone(),
                "ptr": self.ptr, "rotation": self.rotation.clone(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        dev = self.ctx.device
        self.bank_p, self.bank_d = state["bank_p"].to(dev), state["bank_d"].to(dev)
        self.bank_y, self.rotation = state["bank_y"].to(dev), state["rotation"].to(dev)
        self.ptr, self.steps = int(state["ptr"]), int(state["steps"])

    def report(self) -> dict:
        return {"frozen_model_mib": self.frozen_mib,
                "bank_mib": tensors_mib(self.bank_p, self.bank_d, self.bank_y, self.rotation)}

    def close(self) -> None:
        self.frozen = None
