"""The paper's feature diagnostics (SPEC §6) and the per-iteration / per-epoch training log.

* feature norm ||g(x)||^2, averaged over samples;
* gradient norm (Eq. 5), per sample and averaged over the batch: the head's gradient of sample
  i's cross-entropy is (p_i - e_{y_i}) g_i^T, so ||grad_W CE_i||^2 = sum_k (p_ik - delta_{y_i k})^2 ||g_i||^2,
  in closed form (no backward pass, the same whatever regularizer is on);
  ``grad_norm_batch_mean`` is the other quantity, the squared norm of the batch-mean gradient
  ||(P - Y)^T G / B||_F^2 = sum((P P^T) * (G G^T)) / B^2 (about B times smaller);
* feature entropy (Faivishevsky-Goldberger): H = d / M * sum log ||g_i - g_j||^2 over the M ordered
  pairs i != j at non-zero distance (pairs at zero distance are skipped and not counted; with no
  duplicate points M = N(N-1));
* mutual information I(g; y) = H(g) - sum_k (N_k / N) H_k over classes with N_k >= 2
  (weights renormalised over those classes).

Pairwise distances are computed block by block (``chunk`` x ``chunk``), so memory stays bounded
whatever N is; the per-class sums come out of the same pass (pairs with equal labels).
"""

from __future__ import annotations

import math

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events


def feature_norm_sq(features: torch.Tensor) -> torch.Tensor:
    return features.detach().float().pow(2).sum(1).mean()


def softmax_minus_onehot(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """P - Y (B x K): the softmax of the logits minus the one-hot labels (no host sync)."""
    p = torch.softmax(logits.detach().float(), dim=1)
    return p.scatter_add(1, labels.unsqueeze(1), torch.full_like(p[:, :1], -1.0))


def head_grad_norm_sq(logits: torch.Tensor, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 5: (1/B) sum_i ||grad_W CE(W g_i + b, y_i)||_F^2 = (1/B) sum_i sum_k (p_ik - delta_{y_i k})^2 ||g_i||^2."""
    r = softmax_minus_onehot(logits, labels)
    return (r.pow(2).sum(1) * features.detach().float().pow(2).sum(1)).mean()


def batch_mean_grad_norm_sq(logits: torch.Tensor, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """||grad_W (1/B) sum_i CE(W g_i + b, y_i)||_F^2 = ||(P - Y)^T G||_F^2 / B^2 = sum((R R^T) * (G G^T)) / B^2."""
    r = softmax_minus_onehot(logits, labels)
    g = features.detach().float()
    b = g.shape[0]
    return ((r @ r.t()) * (g @ g.t())).sum() / (b * b)


@torch.no_grad()
def pairwise_log_sums(features: torch.Tensor, labels: torch.Tensor | None = None, num_classes: int = 0,
                      chunk: int = 512):
    """Sum and count of log ||g_i - g_j||^2 over ordered pairs i != j at non-zero distance;
    with labels also per class over pairs inside the class.

    Blockwise in float64: only blocks (i, j) with j >= i are computed (an off-diagonal block counts
    for both orders), and each block casts its own rows, so the extra memory is O(chunk^2 + chunk d)
    plus O(N) for the squared norms, whatever N is."""
    x = features.detach()
    n = x.shape[0]
    sq = x.double().pow(2).sum(1) if n <= chunk else torch.cat([x[i:i + chunk].double().pow(2).sum(1)
                                                                 for i in range(0, n, chunk)])
    total_sum = sq.new_zeros(())
    total_cnt = sq.new_zeros(())
    cls_sum = sq.new_zeros(num_classes)
    cls_cnt = sq.new_zeros(num_classes)
    for i0 in range(0, n, chunk):
        a = x[i0:i0 + chunk].double()
        ia = torch.arange(i0, i0 + a.shape[0], device=x.device)
        for j0 in range(i0, n, chunk):
            b = a if j0 == i0 else x[j0:j0 + chunk].double()
            jb = torch.arange(j0, j0 + b.shape[0], device=x.device)
            scale = sq[i0:i0 + chunk, None] + sq[None, j0:j0 + chunk]
            d2 = (scale - 2.0 * a @ b.t()).clamp(min=0.0)
            valid = (ia[:, None] != jb[None, :]) & (d2 > 1e-12 * scale.clamp(min=1e-300))
            logs = torch.where(valid, d2.clamp(min=1e-300).log(), torch.zeros_like(d2))
            twice = 1.0 if j0 == i0 else 2.0  # the block (j, i) is the transpose of this one
            total_sum += twice * logs.sum()
            total_cnt += twice * valid.sum()
            if labels is not None:
                row_lab, col_lab = labels[i0:i0 + chunk], labels[j0:j0 + chunk]
                same = row_lab[:, None] == col_lab[None, :]
                same_logs, same_valid = logs * same, (valid & same).double()
                cls_sum.index_add_(0, row_lab, same_logs.sum(1))
                cls_cnt.index_add_(0, row_lab, same_valid.sum(1))
                if j0 != i0:
                    cls_sum.index_add_(0, col_lab, same_logs.sum(0))
                    cls_cnt.index_add_(0, col_lab, same_valid.sum(0))
    return total_sum, total_cnt, cls_sum, cls_cnt


def feature_entropy(features: torch.Tensor, chunk: int = 512) -> float:
    s, c, _, _ = pairwise_log_sums(features, chunk=chunk)
    return features.shape[1] * float(s / c) if c > 0 else float("nan")


def entropy_and_mutual_info(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
                            chunk: int = 512) -> tuple[float, float]:
    d = features.shape[1]
    s, c, cs, cc = pairwise_log_sums(features, labels, num_classes, chunk)
    if c == 0:
        return float("nan"), float("nan")
    h = d * float(s / c)
    n_k = torch.bincount(labels, minlength=num_classes).double()
    keep = (n_k >= 2) & (cc > 0)
    if not bool(keep.any()):
        return h, float("nan")
    w = n_k[keep] / n_k[keep].sum()
    h_cond = float((w * d * cs[keep] / cc[keep]).sum())
    return h, h - h_cond


class TrainingDiagnostics:
    """Accumulates per-iteration scalars on the device (no host sync), writes their means every
    ``log_every`` iterations and every epoch, and the epoch's entropy and mutual information.

    Scalars: every loss term (``loss_<name>``), the total loss, feature norm, head gradient norm,
    and whatever a regularizer put into ``step.logs``.
    """

    def __init__(self, writer, num_classes: int, log_every: int, max_samples: int, chunk: int,
                 epoch_length: int, enabled: bool = True):
        self.writer = writer  # a SummaryWriter on rank 0, None elsewhere
        self.num_classes = num_classes
        self.log_every = log_every
        self.max_samples = max_samples
        self.chunk = chunk
        self.enabled = enabled
        self.per_batch = max(1, math.ceil(max_samples / max(1, epoch_length)))
        self._interval: dict[str, torch.Tensor] = {}
        self._epoch: dict[str, torch.Tensor] = {}
        self._n_interval = 0
        self._n_epoch = 0
        self._feats: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        self.last_epoch: dict[str, float] = {}

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
            out["grad_norm"] = head_grad_norm_sq(step.logits, step.features, step.y)
            out["grad_norm_batch_mean"] = batch_mean_grad_norm_sq(step.logits, step.features, step.y)
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
        if self.enabled and sum(f.shape[0] for f in self._feats) < self.max_samples:
            self._feats.append(step.features.detach()[: self.per_batch].float())
            self._labels.append(step.y[: self.per_batch])

    @staticmethod
    def _means(store: dict, n: int) -> dict[str, float]:
        if not store:
            return {}
        values = (store["sum"] / max(n, 1)).cpu().tolist()  # the one host sync
        return dict(zip(store["names"], values, strict=True))

    def write_interval(self, engine: Engine) -> None:
        means = self._means(self._interval, self._n_interval)
        self._interval, self._n_interval = {}, 0
        engine.state.metrics.update({k: v for k, v in means.items() if k.startswith("loss")})
        if self.writer is not None:
            for k, v in means.items():
                self.writer.add_scalar(f"train_iter/{k}", v, engine.state.iteration)

    def write_epoch(self, engine: Engine) -> None:
        means = self._means(self._epoch, self._n_epoch)
        self._epoch, self._n_epoch = {}, 0
        if self.enabled and self._feats:
            feats, labels = torch.cat(self._feats), torch.cat(self._labels)
            if idist.get_world_size() > 1:
                feats, labels = idist.all_gather(feats), idist.all_gather(labels)
            feats, labels = feats[: self.max_samples], labels[: self.max_samples]
            h, mi = entropy_and_mutual_info(feats, labels, self.num_classes, self.chunk)
            means["feature_entropy"], means["mutual_info"] = h, mi
        self._feats, self._labels = [], []
        self.last_epoch = means
        if self.writer is not None:
            for k, v in means.items():
                self.writer.add_scalar(f"train_epoch/{k}", v, engine.state.epoch)
