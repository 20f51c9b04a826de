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

Pure functions of a batch or of an epoch's features; ``training_log.py`` writes them to TensorBoard.

Pairwise distances are computed block by block (``chunk`` x ``chunk``), so memory stays bounded
whatever N is; the per-class sums come out of the same pass (pairs with equal labels).
"""

from __future__ import annotations

import torch

from ..methods.statistics import class_sums


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
                row_sums, _ = class_sums(torch.stack([same_logs.sum(1), same_valid.sum(1)], 1), row_lab, num_classes)
                cls_sum += row_sums[:, 0]
                cls_cnt += row_sums[:, 1]
                if j0 != i0:
                    col_sums, _ = class_sums(torch.stack([same_logs.sum(0), same_valid.sum(0)], 1), col_lab, num_classes)
                    cls_sum += col_sums[:, 0]
                    cls_cnt += col_sums[:, 1]
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
    _, n_k = class_sums(torch.zeros(len(labels), 1, dtype=torch.float64, device=labels.device), labels, num_classes)
    keep = (n_k >= 2) & (cc > 0)
    if not bool(keep.any()):
        return h, float("nan")
    w = n_k[keep] / n_k[keep].sum()
    h_cond = float((w * d * cs[keep] / cc[keep]).sum())
    return h, h - h_cond
