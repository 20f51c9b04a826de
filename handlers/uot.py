"""UOT in the engine (its formulas and source term: ``adarand.methods.uot``): fine-tuning jointly on the
pre-training classes that unbalanced optimal transport finds nearest to the target task (Liu et al., NeurIPS 2022; SPEC §8).

Selection, once before training (cached under ``cache_dir/uot/``):

    m_s, m_t   class means of the pretrained features g(x) of every source class s and every
               target class t (the target's from the priors' pass; the source's from one cached
               pass over the source images, evaluation transform)
    M_st     = (1 - cos(m_s, m_t)) / p_m
    T        = unbalanced Sinkhorn plan between marginals of ones (entropic reg eps, KL penalties
               reg_source on the source side and reg_target on the target side; POT's
               ``ot.unbalanced.sinkhorn_knopp_unbalanced``)
    score_s  = sum_t T_st;  the ``select_classes`` source classes of highest score are kept

Training: each step takes the target batch of B images and mu B images of the selected source
classes (a second loader, ``source_ratio`` = mu), through the backbone in one forward pass; a new
source head h_s (N(0, 0.01^2), bias 0; over every source class with the original labels, or over
the selected ones with ``source_head: selected``) reads their features:

    L = CE(target head, target rows) + lambda_u * CE(h_s, source rows)

Only the target head is evaluated. The source stream's order and augmentations depend only on
(run seed, source epoch, image), so its position (the source batches taken) is all a resumed run
needs to continue it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events
from torch.utils.data import DataLoader, Sampler

from ..core.errors import UserError
from ..core.files import write_json_atomic
from ..core.seeded import SeededDataset, sample_seed
from ..core.step import TrainEvents
from ..methods import uot
from ..methods.frozen import average_gradients_across_processes, module_mib
from ..methods.uot import UOTParams, cosine_cost, select_source_classes, top_classes, unbalanced_plan  # noqa: F401
from .registry import MethodAdapter, register

IGNORED = -100  # the label of the source rows in the batch: F.cross_entropy leaves them out


# ---------------------------------------------------------------------------------------------
# The source stream


class SourceStream(Sampler):
    """An endless stream of ``(index, augmentation seed)`` over ``n`` source images for one process:
    source epoch e is a permutation drawn from (seed, e), dealt out to the processes in turn, and
    the stream starts ``start`` items into this process's share."""

    def __init__(self, n: int, seed: int, start: int = 0, rank: int = 0, world: int = 1):
        self.n, self.seed, self.start, self.rank, self.world = n, seed, start, rank, world

    def __iter__(self):
        per_epoch = len(range(self.rank, self.n, self.world))
        epoch, skip = divmod(self.start, per_epoch)
        while True:
            order = np.random.default_rng(sample_seed(self.seed, epoch, -2)).permutation(self.n)
            for index in order[self.rank::self.world][skip:]:
                yield int(index), sample_seed(self.seed, epoch, int(index))
            epoch, skip = epoch + 1, 0


# ---------------------------------------------------------------------------------------------
# The handler


@dataclass(kw_only=True)
class UOTRunParams(UOTParams):
    """The method's parameters and, for the engine, where the source data is."""

    source_root: str | None = None  # root/<class>/<image> (an ImageNet train folder); sklearn_digits:source for the demo's
    source_list: str | None = None  # or a file of path,label lines

    def check(self):
        if importlib.util.find_spec("ot") is None:
            return "name", "uot needs POT (Python Optimal Transport), not installed: pip install 'adarand[uot]'"
        if (self.source_root is None) == (self.source_list is None):
            return "source_root", ("uot needs the source (pre-training) data: set source_root (a class-folder tree such "
                                   "as an ImageNet train folder) or source_list (a file of path,label lines), not both")
        key, given = ("source_root", self.source_root) if self.source_root is not None else ("source_list", self.source_list)
        placeholder = "{cache_dir}" in given or given == "sklearn_digits:source"
        found = Path(given).expanduser().is_dir() if key == "source_root" else Path(given).expanduser().is_file()
        if not placeholder and not found:
            what = "the pre-training data's class folders, root/<class>/<image> (an ImageNet train folder for " \
                   "ImageNet weights)" if key == "source_root" else "a file of path,label lines"
            return key, f"{given} does not exist; set it to {what}"
        return None


@register("uot")
class UOT(MethodAdapter):
    """UOT: the target task trained jointly with the source classes that unbalanced optimal
    transport finds nearest, through one forward pass and a new source head."""

    Params = UOTRunParams

    def __init__(self, params: UOTRunParams, ctx):
        super().__init__(params, ctx)
        self.samples, self.source_names = self.read_source()
        self.eval_set = ctx.image_sets.dataset(self.samples, train=False)
        self.method = uot.UOT(ctx.net.feature_dim, len(self.source_names), device=ctx.device, params=params)
        self.source_head = self.method.source_head
        average_gradients_across_processes(self.source_head)
        self.selected: list[int] = []  # source class indices, highest score first
        self.scores: list[float] = []  # every source class's score
        self.position = 0  # source batches taken (by each process)
        self.cache_hit: bool | None = None
        self._stream = None
        self._labels: torch.Tensor | None = None

    # --- the source data ---------------------------------------------------------------------

    def read_source(self) -> tuple[list[tuple[str, int]], list[str]]:
        """The source images and class names (read and scanned as the target's), sharing no file
        with the target data; fewer classes than select_classes stops the run."""
        p = self.params
        key = "method.source_list" if p.source_list is not None else "method.source_root"
        samples, names = self.ctx.image_sets.read(p.source_root, p.source_list, key)
        counts = [0] * len(names)
        for _, label in samples:
            counts[label] += 1
        empty = [name for name, n in zip(names, counts, strict=True) if n == 0]
        if empty:  # a class mean of no image: its cost row is NaN and the selection meaningless
            given = p.source_list if p.source_list is not None else p.source_root
            raise UserError(f"{key}: {len(empty)} source class(es) of {given} hold no (readable) image: "
                            f"{', '.join(empty[:5])}{', ...' if len(empty) > 5 else ''}; remove them or add images")
        if len(names) < p.select_classes:
            raise UserError(f"{key}: {len(names)} source classes, fewer than method.select_classes "
                            f"({p.select_classes})")
        data = self.ctx.data
        target = {str(Path(f).resolve()) for ds in (data.train, data.val, data.test) for f, _ in ds.samples}
        shared = sorted(f for f, _ in samples if str(Path(f).resolve()) in target)
        if shared:
            raise UserError(f"{key}: {len(shared)} source image(s) are also target images (e.g. {shared[0]}); the source "
                            "data must be the pre-training data, apart from the target task's")
        return samples, names

    # --- selection ---------------------------------------------------------------------------

    def prepare(self) -> None:
        ctx, p = self.ctx, self.params
        extractor = ctx.net.backbone
        target = ctx.class_statistics().mean.cpu().numpy()
        key = hashlib.sha256(json.dumps({
            "source": ctx.features_key(extractor, self.eval_set, len(self.source_names)),
            "target": ctx.features_key(extractor), "p_m": p.p_m, "eps": p.eps, "reg_source": p.reg_source,
            "reg_target": p.reg_target, "version": 1}, sort_keys=True).encode()).hexdigest()[:32]
        cache_file = ctx.cache_dir / "uot" / f"{key}.json"
        scores = None
        if cache_file.is_file():
            cached = json.loads(cache_file.read_text())
            scores = np.array(cached["scores"]) if len(cached.get("scores", [])) == len(self.source_names) else None
        self.cache_hit = scores is not None
        if scores is None:
            stats, _ = ctx.statistics_over(extractor, self.eval_set, len(self.source_names), "source class means")
            _, scores = select_source_classes(stats.mean.cpu().numpy(), target, p.select_classes, p.p_m, p.eps,
                                              p.reg_source, p.reg_target)
            if idist.get_rank() == 0:
                write_json_atomic(cache_file, {"scores": scores.tolist(), "classes": self.source_names})
        self.selected = top_classes(scores, p.select_classes)  # the method object's (MethodAdapter sets it there)
        self.scores = [float(v) for v in scores]

    def selected_names(self) -> list[str]:
        return [self.source_names[s] for s in self.selected]

    # --- training ----------------------------------------------------------------------------

    def source_images(self) -> list[tuple[str, int]]:
        """The selected classes' images, each with its source head label (``UOT.head_labels``)."""
        chosen = set(self.selected)
        kept = [(f, label) for f, label in self.samples if label in chosen]
        labels = self.method.head_labels(torch.tensor([label for _, label in kept], dtype=torch.long)).tolist()
        return [(f, label) for (f, _), label in zip(kept, labels, strict=True)]

    def source_loader(self) -> DataLoader:
        """The selected classes' images with their source head labels, as an endless stream from
        the current position."""
        kept = self.source_images()
        d, cfg = self.ctx.cfg.data, self.ctx.cfg
        dataset = self.ctx.image_sets.dataset(kept, train=True)
        batch = max(1, round(self.params.source_ratio * d.batch_size))
        stream = SourceStream(len(kept), sample_seed(cfg.seed, -3, 0), self.position * batch, idist.get_rank(),
                              idist.get_world_size())
        return DataLoader(SeededDataset(dataset), batch_size=batch, sampler=stream, num_workers=d.num_workers,
                          generator=torch.Generator().manual_seed(cfg.seed))

    def parameter_groups(self) -> list[dict]:
        o = self.ctx.cfg.optim
        return self.method.parameter_groups(o.lr * o.head_lr_mult)

    def attach(self, trainer: Engine) -> None:
        trainer.add_event_handler(Events.STARTED, self.start_stream)
        trainer.add_event_handler(Events.GET_BATCH_COMPLETED, self.add_source_batch)  # loaded with the batch
        trainer.add_event_handler(TrainEvents.COMPUTE_LOSS, self.add_loss)

    def start_stream(self, engine: Engine) -> None:
        """The source stream from the current position (a new run's 0, a resumed run's checkpoint),
        started before the first step."""
        self._stream = iter(self.source_loader())

    def add_source_batch(self, engine: Engine) -> None:
        """The source images join the target batch (one forward pass); their labels are IGNORED in
        the target's cross-entropy and kept for the source head's."""
        xs, ys = next(self._stream)
        self.position += 1
        x, y = engine.state.batch
        engine.state.batch = (torch.cat([x, xs]), torch.cat([y, torch.full(ys.shape, IGNORED, dtype=y.dtype)]))
        self._labels = ys

    def add_loss(self, engine: Engine) -> None:
        """CE_target is the trainer's (source rows ignored); lambda_u CE_source added; the step's
        features, logits and labels become the target rows' for everything after."""
        step = engine.state.step
        b = step.y.shape[0] - self._labels.shape[0]
        step.losses.update(self.method.terms(step.features[b:], self._labels.to(step.y.device)))
        step.x, step.y, step.logits, step.features = step.x[:b], step.y[:b], step.logits[:b], step.features[:b]

    # --- state -------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {"selected": list(self.selected), "scores": list(self.scores), "position": self.position,
                "source_head": self.source_head.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.selected, self.scores = [int(s) for s in state["selected"]], [float(v) for v in state["scores"]]
        self.position = int(state["position"])
        self.source_head.load_state_dict(state["source_head"])
        self._stream = None  # started again from the position when training starts

    def run_files(self) -> dict[str, str]:
        lines = [f"{name}\t{self.scores[s]:.6g}" for name, s in zip(self.selected_names(), self.selected,
                                                                            strict=True)]
        return {"uot_source_classes.tsv": "class\tscore\n" + "\n".join(lines) + "\n"}

    def report(self) -> dict:
        d = self.ctx.cfg.data
        chosen = set(self.selected)
        kept = sum(1 for _, label in self.samples if label in chosen)
        return {"source_classes": self.selected_names(), "source_images": kept,
                "source_head": f"{self.params.source_head} ({self.source_head.out_features} outputs)",
                "source_batch": max(1, round(self.params.source_ratio * d.batch_size)),
                "source_head_mib": module_mib(self.source_head), "selection_cache_hit": self.cache_hit}

    def close(self) -> None:
        self._stream = None
