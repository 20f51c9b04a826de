"""The training log: per-iteration scalars summed on the device, written every ``log_every``
iterations and every epoch, with the epoch's feature entropy and mutual information.

With several processes every figure is the run's, not one process's: the interval and epoch means
are over every process's iterations (one all-reduce of the sums when they are written, so that a
non-finite loss on any process stops all of them at the same iteration), and the entropy and
mutual information are over features gathered from every process, each keeping its share of
``max_samples``. Each process's iteration values are its own batch's (``grad_norm_batch_mean`` is
the mean over processes of each one's batch-mean gradient norm).

TensorBoard groups, each on one axis:

* per iteration (means over ``log_every`` iterations; x = iteration): ``loss/<term>`` and
  ``loss/total``, ``prior/<term>`` (AdaRand's prior objective), ``iteration/<name>`` (the rest);
* per epoch (x = epoch): ``diagnostics/<name>`` (Figure 2: feature norm, gradient norm, feature
  entropy, mutual information), ``loss_per_epoch/<term>``, ``epoch/<name>`` (the rest).
"""

from __future__ import annotations

import math

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events

from ..core.distributed import gather_rows
from ..core.errors import NonFiniteLoss
from .diagnostics import batch_mean_grad_norm_sq, entropy_and_mutual_info, feature_norm_sq, head_grad_norm_sq

DIAGNOSTICS = ("feature_norm", "grad_norm", "grad_norm_batch_mean", "feature_entropy", "mutual_info")


def tensorboard_tag(name: str, per_epoch: bool) -> str:
    """The TensorBoard tag of a logged scalar (see the module's docstring)."""
    if name == "loss" or name.startswith("loss_"):
        term = "total" if name == "loss" else name.removeprefix("loss_")
        return f"loss_per_epoch/{term}" if per_epoch else f"loss/{term}"
    if per_epoch:
        return f"diagnostics/{name}" if name in DIAGNOSTICS else f"epoch/{name}"
    if name.startswith("prior_"):
        return f"prior/{name.removeprefix('prior_')}"
    return f"iteration/{name}"


class TrainingDiagnostics:
    """Accumulates per-iteration scalars on the device (no host sync), writes their means every
    ``log_every`` iterations and every epoch, and the epoch's entropy and mutual information.

    Scalars: every loss term (``loss_<name>``), the total loss, feature norm, head gradient norm,
    and whatever a regularizer put into ``step.logs``.
    """

    def __init__(self, writer, num_classes: int, log_every: int, max_samples: int, chunk: int,
                 epoch_length: int, enabled: bool = True):
        self.writer = writer  # the run's log on rank 0 (``log(scalars, step)``), None elsewhere
        self.num_classes = num_classes
        self.log_every = log_every
        self.chunk = chunk
        self.enabled = enabled
        world, rank = idist.get_world_size(), idist.get_rank()
        # this process's share of max_samples (the shares add up to it), a few rows of each batch
        self.kept_here = max_samples // world + (1 if rank < max_samples % world else 0)
        self.per_batch = max(1, math.ceil(self.kept_here / max(1, epoch_length)))
        self._interval: dict[str, torch.Tensor] = {}
        self._epoch: dict[str, torch.Tensor] = {}
        self._n_interval = 0
        self._n_epoch = 0
        self._feats: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        self.last_epoch: dict[str, float] = {}
        self.last_features: tuple[torch.Tensor, torch.Tensor] | None = None  # the last epoch's (features, labels)
        self.last_finite: dict[str, float] = {}  # the loss terms' means of the last interval written

    def attach(self, trainer: Engine) -> None:
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self.accumulate)
        trainer.add_event_handler(Events.ITERATION_COMPLETED(every=self.log_every), self.write_interval)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self.write_epoch)

    def scalars(self, step) -> dict[str, torch.Tensor]:
        out = {f"loss_{k}": v.detach().float() for k, v in step.losses.items()}
        out["loss"] = step.loss.float()
        out.update({k: v.detach().float() for k, v in step.logs.items()})
        if self.enabled:
            out["feature_norm"] = feature_norm_sq(step.features)
            if step.logits is not None:
                out["grad_norm"] = head_grad_norm_sq(step.logits, step.features, step.y)
                out["grad_norm_batch_mean"] = batch_mean_grad_norm_sq(step.logits, step.features, step.y)
            elif step.grad_probe is not None and step.grad_probe.value is not None:  # detection: at C5
                out["grad_norm"] = step.grad_probe.value
        return out

    @staticmethod
    def _add(store: dict, names: tuple, vector: torch.Tensor) -> None:
        """Add one iteration's scalars (stacked in one vector: one add, not one per scalar)."""
        if store.get("names") == names:
            store["sum"].add_(vector)
        elif not store:
            store.update(names=names, sum=vector.clone())
        else:  # a scalar appeared or vanished: merge by name
            merged = dict(zip(store["names"], store["sum"].unbind(), strict=True))
            for k, v in zip(names, vector.unbind(), strict=True):
                merged[k] = merged[k] + v if k in merged else v
            store.update(names=tuple(merged), sum=torch.stack(list(merged.values())))

    def accumulate(self, engine: Engine) -> None:
        step = engine.state.output
        values = self.scalars(step)
        names, vector = tuple(values), torch.stack(list(values.values()))
        self._add(self._interval, names, vector)
        self._add(self._epoch, names, vector)
        self._n_interval += 1
        self._n_epoch += 1
        kept = sum(f.shape[0] for f in self._feats)
        if self.enabled and kept < self.kept_here:
            take = min(self.per_batch, self.kept_here - kept)
            self._feats.append(step.features.detach()[:take].float())
            self._labels.append(step.y[:take])

    @staticmethod
    def _means(store: dict, n: int) -> dict[str, float]:
        """The means over every process's iterations (the processes log the same scalars)."""
        if not store:
            return {}
        total = torch.cat([store["sum"], store["sum"].new_tensor([n])])
        if idist.get_world_size() > 1:
            total = idist.all_reduce(total)
        values = (total[:-1] / total[-1].clamp(min=1)).cpu().tolist()  # the one host sync
        return dict(zip(store["names"], values, strict=True))

    def check_finite(self, means: dict[str, float], engine: Engine) -> None:
        """Raise NonFiniteLoss when a loss term's mean is NaN or infinite (any iteration of the
        interval); else keep the means as the last finite values."""
        losses = {k: v for k, v in means.items() if k.startswith("loss")}
        bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
        if bad:
            raise NonFiniteLoss(engine.state.iteration, engine.state.epoch, bad, self.last_finite)
        self.last_finite = losses

    def write_interval(self, engine: Engine) -> None:
        means = self._means(self._interval, self._n_interval)
        self._interval, self._n_interval = {}, 0
        self.check_finite(means, engine)
        engine.state.metrics.update({k: v for k, v in means.items() if k.startswith("loss")})
        if self.writer is not None:
            self.writer.log({tensorboard_tag(k, per_epoch=False): v for k, v in means.items()}, engine.state.iteration)

    def write_epoch(self, engine: Engine) -> None:
        means = self._means(self._epoch, self._n_epoch)
        self._epoch, self._n_epoch = {}, 0
        self.check_finite(means, engine)
        if self.enabled and self._feats:
            feats, labels = gather_rows(torch.cat(self._feats)), gather_rows(torch.cat(self._labels))
            h, mi = entropy_and_mutual_info(feats, labels, self.num_classes, self.chunk)
            means["feature_entropy"], means["mutual_info"] = h, mi
            self.last_features = (feats.cpu(), labels.cpu())
        self._feats, self._labels = [], []
        self.last_epoch = means
        if self.writer is not None:
            self.writer.log({tensorboard_tag(k, per_epoch=True): v for k, v in means.items()}, engine.state.epoch)
