"""The selected model's test features, kept for the paper's Figure 3 (a PCA of g(x) coloured by
class): ``test_features.pt`` in the run folder, with ``features`` (float16, one row per image),
``labels``, ``indices`` (the images' places in the test split) and ``classes`` (the names). The
images are evenly spaced over the test split, so that a split sorted by class gives every class
its share. Plain tensors and lists: it loads with ``torch.load(..., weights_only=True)``."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from ..core.files import save_atomic
from ..core.step import autocast, prepare_input

TEST_FEATURES = "test_features.pt"


def spread_indices(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them when k >= n)."""
    if k >= n:
        return list(range(n))
    return [int(i * n / k) for i in range(k)]


@torch.no_grad()
def test_features(net: torch.nn.Module, dataset, k: int, device: torch.device, batch_size: int, amp: str = "off",
                  channels_last: bool = False) -> dict:
    """g(x) of ``k`` evenly spaced test images, with their labels and indices."""
    indices = spread_indices(len(dataset), k)
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False, num_workers=0)
    was_training = net.training
    net.eval()
    feats, labels = [], []
    for x, y in loader:
        with autocast(device, amp):
            _, f = net(prepare_input(x, device, channels_last))
        feats.append(f.float().cpu())
        labels.append(torch.as_tensor(y))
    net.train(was_training)
    return {"features": torch.cat(feats).to(torch.float16), "labels": torch.cat(labels).long(),
            "indices": torch.tensor(indices, dtype=torch.long)}


def save_test_features(path: Path, record: dict, classes: list[str]) -> None:
    save_atomic({**record, "classes": list(classes)}, path)
