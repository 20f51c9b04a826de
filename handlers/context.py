"""What a regularizer may use from the run: model, device, data, length, shared statistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from ..core.cache import load_or_compute_tensors
from ..core.config import Config
from ..core.console import progress_bars
from ..core.seeded import SeededDataset, SeededSampler
from ..methods.statistics import ClassStatistics, accumulate_statistics, feature_loader, features_key

if TYPE_CHECKING:  # types only: a command that only lists or validates loads neither models nor datasets
    from ..datasets import DataSplits, ImageSets
    from ..models import Classifier, PretrainedInfo


@dataclass
class RunContext:
    cfg: Config
    model: nn.Module  # as trained (may be wrapped for data parallelism)
    net: Classifier  # the unwrapped model: .backbone, .head, .stages
    device: torch.device
    data: DataSplits
    epoch_length: int
    pretrained: PretrainedInfo
    generator: torch.Generator  # the regularizers' random draws (seeded from the run seed; checkpointed)
    _class_stats: ClassStatistics | None = field(default=None, repr=False)
    prior_cache_hit: bool | None = None
    image_sets: ImageSets | None = None  # other labelled image sets, read as the run's (a method's source data)

    @property
    def total_iterations(self) -> int:
        return self.epoch_length * self.cfg.train.epochs

    @property
    def cache_dir(self) -> Path:
        return Path(self.cfg.cache_dir).expanduser()

    def augmented_loader(self, drop_last: bool = False) -> DataLoader:
        """The training split with the training transform, in an order and with augmentations
        seeded by the run seed (for passes before training that must see augmented batches:
        DR-Tune's bank, DAFT's BN conversion). It does not draw from the global RNG."""
        d = self.cfg.data
        order = RandomSampler(self.data.train, generator=torch.Generator().manual_seed(self.cfg.seed))
        return DataLoader(SeededDataset(self.data.train), batch_size=d.batch_size, drop_last=drop_last,
                          sampler=SeededSampler(order, self.cfg.seed), num_workers=d.num_workers,
                          generator=torch.Generator().manual_seed(self.cfg.seed))

    def class_statistics(self, extractor: nn.Module | None = None) -> ClassStatistics:
        """Per-class statistics of ``extractor``'s outputs on the training split (eval transform).

        Without an extractor: the backbone's features, as they are when first asked (the
        pretrained extractor, since methods ask before training); computed once per run,
        whichever method asks first. Either way cached on disk for later runs and seeds."""
        if extractor is not None:
            return self._statistics_of(extractor)[0]
        if self._class_stats is None:
            self._class_stats, self.prior_cache_hit = self._statistics_of(self.net.backbone)
        return self._class_stats

    def feature_loader(self, dataset=None) -> DataLoader:
        """The training split (or ``dataset``) with the eval transform, this process's shard, in
        order (for passes of the pretrained extractor)."""
        d = self.cfg.data
        return feature_loader(self.data.train_eval if dataset is None else dataset, d.eval_batch, d.num_workers)

    def features_key(self, extractor: nn.Module, dataset=None, num_classes: int | None = None) -> str:
        """A key of everything ``extractor``'s features on the training split (or ``dataset``, of
        ``num_classes`` classes) depend on."""
        data = self.data
        dataset = data.train_eval if dataset is None else dataset
        return features_key(extractor, dataset.samples, num_classes or data.num_classes, dataset.transform,
                            data.root if dataset is data.train_eval else "", self.cfg.train.amp)

    def statistics_over(self, extractor: nn.Module, dataset, num_classes: int, what: str
                        ) -> tuple[ClassStatistics, bool]:
        """Per-class statistics of ``extractor``'s outputs over ``dataset`` (``num_classes`` classes),
        cached on disk like the priors' (UOT's source classes go through here)."""
        cache_file = self.cache_dir / "priors" / f"{self.features_key(extractor, dataset, num_classes)}.pt"

        def compute() -> dict[str, torch.Tensor]:
            return accumulate_statistics(extractor, self.feature_loader(dataset), num_classes, self.device,
                                         progress=progress_bars(self.cfg.train.progress), amp=self.cfg.train.amp).state_dict()

        d = self.net.feature_dim if extractor is self.net.backbone else None  # another extractor: its own width
        k = num_classes
        expected = {"sums": ((k, d), torch.float64), "sumsq": ((k, d), torch.float64), "counts": ((k,), None)}
        state, hit = load_or_compute_tensors(cache_file, compute, self.device, what, expected)
        return ClassStatistics(state["sums"], state["sumsq"], state["counts"]), hit

    def _statistics_of(self, extractor: nn.Module) -> tuple[ClassStatistics, bool]:
        return self.statistics_over(extractor, self.data.train_eval, self.data.num_classes, "prior statistics")
