"""What two processes compute is what one computes on the same data: the training log's epoch
figures (means, feature entropy, mutual information), a non-finite loss on one process stopping
every process, and validation and test accuracy and loss over the sharded loaders."""

from types import SimpleNamespace

import ignite.distributed as idist
import pytest
import torch
import torch.nn.functional as F

from adarand.core.errors import NonFiniteLoss
from adarand.core.step import StepState
from adarand.handlers.training_log import TrainingDiagnostics

from conftest import write_tiny_config

GLOBAL_BATCH, ITERATIONS = 8, 4


def _log_an_epoch(local_rank, out_dir, nan_on_rank, max_samples=64):
    """Four global batches of 8 (features, labels, logits), each process taking its half, through the
    training log; the epoch's figures saved, or the iteration where a non-finite loss stopped it."""
    world, rank = idist.get_world_size(), idist.get_rank()
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(GLOBAL_BATCH, 5, generator=g) * 3, torch.randint(0, 3, (GLOBAL_BATCH,), generator=g),
                torch.randn(GLOBAL_BATCH, 3, generator=g)) for _ in range(ITERATIONS)]
    diag = TrainingDiagnostics(None, num_classes=3, log_every=2, max_samples=max_samples, chunk=8,
                               epoch_length=ITERATIONS)
    engine = SimpleNamespace(state=SimpleNamespace(output=None, metrics={}, iteration=0, epoch=1))
    share = GLOBAL_BATCH // world
    out = {}
    try:
        for i, (feats, labels, logits) in enumerate(batches, start=1):
            rows = slice(rank * share, (rank + 1) * share)
            ce = F.cross_entropy(logits[rows], labels[rows])
            if rank == nan_on_rank and i == 2:
                ce = ce * float("nan")
            engine.state.iteration = i
            engine.state.output = StepState(x=None, y=labels[rows], logits=logits[rows], features=feats[rows],
                                            losses={"ce": ce}, loss=ce)
            diag.accumulate(engine)
            if i % 2 == 0:
                diag.write_interval(engine)
        diag.write_epoch(engine)
        out["epoch"], out["features"] = diag.last_epoch, diag.last_features[0]
    except NonFiniteLoss:
        out["stopped_at"] = engine.state.iteration
    torch.save(out, out_dir / f"log{rank}_of{world}_{max_samples}.pt")


def _log_three_epochs(local_rank, out_dir):
    """The three cases of the training log, one after another in the same processes."""
    for nan_on_rank, max_samples in ((1, 64), (None, 64), (None, 10)):
        _log_an_epoch(local_rank, out_dir, nan_on_rank, max_samples)
        if nan_on_rank is not None:
            (out_dir / f"log{idist.get_rank()}_of{idist.get_world_size()}_{max_samples}.pt").rename(
                out_dir / f"nan{idist.get_rank()}.pt")


def test_two_processes_log_what_one_logs_and_stop_together_on_a_non_finite_loss(tmp_path):
    _log_an_epoch(0, tmp_path, nan_on_rank=None)
    with idist.Parallel(backend="gloo", nproc_per_node=2) as parallel:
        parallel.run(_log_three_epochs, tmp_path)
    one = torch.load(tmp_path / "log0_of1_64.pt")["epoch"]
    for rank in (0, 1):
        two = torch.load(tmp_path / f"log{rank}_of2_64.pt")["epoch"]
        # the per-sample figures, and entropy and MI over every process's features (none cut here)
        for name in ("loss", "loss_ce", "feature_norm", "grad_norm", "feature_entropy", "mutual_info"):
            assert two[name] == pytest.approx(one[name], rel=1e-5), (rank, name)

    # fewer samples than the epoch has: each process keeps its share (5 of 10), all of them gathered
    g = torch.Generator().manual_seed(0)
    halves = [[], []]
    for _ in range(ITERATIONS):  # the same draws as _log_an_epoch: each global batch's two halves
        feats = torch.randn(GLOBAL_BATCH, 5, generator=g) * 3
        torch.randint(0, 3, (GLOBAL_BATCH,), generator=g), torch.randn(GLOBAL_BATCH, 3, generator=g)
        halves[0] += list(feats[:GLOBAL_BATCH // 2])
        halves[1] += list(feats[GLOBAL_BATCH // 2:])
    kept = torch.load(tmp_path / "log0_of2_10.pt")["features"]
    assert torch.equal(kept, torch.load(tmp_path / "log1_of2_10.pt")["features"])  # the same on every process
    origin = [next(r for r in (0, 1) if any(torch.equal(row, h) for h in halves[r])) for row in kept]
    assert len(kept) == 10 and origin == [0] * 5 + [1] * 5

    # a non-finite loss on rank 1 only: both processes stop at that logging interval
    assert [torch.load(tmp_path / f"nan{r}.pt") for r in (0, 1)] == [{"stopped_at": 2}, {"stopped_at": 2}]


def _evaluate(local_rank, cfg_file, weights, out_dir):
    """Validation and test accuracy and loss of the given weights, over this process's shards."""
    from adarand.engine.build import build_run
    from adarand.engine.config import load_config
    from adarand.tasks.evaluator import create_evaluator

    run = build_run(load_config(cfg_file))
    run.net.load_state_dict(torch.load(weights, weights_only=True))
    run.val_evaluator.run(run.loaders.val)
    test = create_evaluator(run.model, run.device)
    test.run(run.loaders.test)
    torch.save({"val": dict(run.val_evaluator.state.metrics), "test": dict(test.state.metrics),
                "shards": (len(run.loaders.val.dataset), len(run.loaders.test.dataset))},
               out_dir / f"eval{idist.get_rank()}_of{idist.get_world_size()}.pt")


def test_validation_and_test_figures_of_two_processes_are_those_of_one(tmp_path):
    """Model selection reads them: the sharded loaders must count every image once (7 validation
    images: shards of 4 and 3, no padded duplicate)."""
    from adarand.engine.build import build_run
    from adarand.engine.config import load_config

    cfg_file = write_tiny_config(tmp_path, counts={0: 15, 1: 10, 2: 8})
    net = build_run(load_config(cfg_file)).net
    with torch.no_grad():  # a head that tells the classes apart unevenly: accuracies strictly between 0 and 1
        net.head.weight.copy_(torch.randn(net.head.weight.shape, generator=torch.Generator().manual_seed(3)))
    torch.save(net.state_dict(), tmp_path / "weights.pt")
    _evaluate(0, cfg_file, tmp_path / "weights.pt", tmp_path)
    with idist.Parallel(backend="gloo", nproc_per_node=2) as parallel:
        parallel.run(_evaluate, cfg_file, tmp_path / "weights.pt", tmp_path)
    one = torch.load(tmp_path / "eval0_of1.pt")
    two = [torch.load(tmp_path / f"eval{r}_of2.pt") for r in (0, 1)]
    assert one["shards"][0] == 7 and sorted(t["shards"][0] for t in two) == [3, 4]
    assert sum(t["shards"][1] for t in two) == one["shards"][1]
    assert 0 < one["val"]["accuracy"] < 1 and 0 < one["test"]["accuracy"] < 1
    for t in two:
        for split in ("val", "test"):
            assert t[split]["accuracy"] == one[split]["accuracy"], split
            assert t[split]["loss"] == pytest.approx(one[split]["loss"], rel=1e-6), split
