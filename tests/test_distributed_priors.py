"""Prior statistics in a 2-process (gloo, CPU) run equal the single-process statistics."""

import ignite.distributed as idist
import torch

from adarand.core.config import DataConfig
from adarand.datasets import create_datasets
from adarand.methods.statistics import accumulate_statistics, feature_loader
from adarand.models.small_cnn import create_small_cnn

from conftest import make_image_folder


def _stats(local_rank, root, out_file):
    data = create_datasets(DataConfig(root=str(root), image_size=12, resize_size=12, num_workers=0, val_ratio=0.0,
                                      mean=[0.5] * 3, std=[0.25] * 3), "")
    torch.manual_seed(0)
    net = create_small_cnn(data.num_classes, in_channels=3, width=4)
    loader = feature_loader(data.train_eval, batch_size=4, num_workers=0)
    stats = accumulate_statistics(net.backbone, loader, data.num_classes, torch.device("cpu"))
    if idist.get_rank() == 0:
        torch.save({**stats.state_dict(), "world": idist.get_world_size(), "n_local": len(loader.dataset)}, out_file)


def test_two_processes_agree_with_one(tmp_path):
    root = make_image_folder(tmp_path / "d", {0: 5, 1: 4, 2: 2})  # 11 images: not divisible by 2
    _stats(0, root, tmp_path / "single.pt")
    with idist.Parallel(backend="gloo", nproc_per_node=2) as parallel:
        parallel.run(_stats, root, tmp_path / "double.pt")
    one = torch.load(tmp_path / "single.pt", weights_only=True)
    two = torch.load(tmp_path / "double.pt", weights_only=True)
    assert one["world"] == 1 and two["world"] == 2 and two["n_local"] == 6  # rank 0's share, no padding
    assert torch.equal(one["counts"], two["counts"]) and one["counts"].tolist() == [5, 4, 2]
    assert torch.allclose(one["sums"], two["sums"], rtol=1e-6, atol=1e-8)
    assert torch.allclose(one["sumsq"], two["sumsq"], rtol=1e-6, atol=1e-8)


def _cached(local_rank, tmp_path):
    from adarand.core.cache import load_or_compute_tensors

    rank = idist.get_rank()
    calls = []

    def compute():
        calls.append(rank)
        return {"a": torch.full((2, 3), float(rank), dtype=torch.float64), "n": torch.tensor([rank + 1])}

    # a cache file that exists on rank 0's machine only (rank 1 names a path nothing is at)
    state, hit = load_or_compute_tensors(tmp_path / f"machine{rank}" / "stats.pt", compute, torch.device("cpu"), "t")
    torch.save({"state": state, "hit": hit, "calls": calls}, tmp_path / f"out{rank}.pt")


def test_a_cache_on_rank_0s_machine_only_is_read_there_and_broadcast(tmp_path):
    from adarand.core.cache import write_cache

    cached = {"a": torch.arange(6, dtype=torch.float64).view(2, 3), "n": torch.tensor([7])}
    write_cache(tmp_path / "machine0" / "stats.pt", cached)
    with idist.Parallel(backend="gloo", nproc_per_node=2) as parallel:
        parallel.run(_cached, tmp_path)
    for rank in (0, 1):
        out = torch.load(tmp_path / f"out{rank}.pt", weights_only=True)
        assert out["hit"] is True and out["calls"] == []
        assert out["state"].keys() == cached.keys()
        for k, v in cached.items():
            assert torch.equal(out["state"][k], v) and out["state"][k].dtype == v.dtype
    assert not (tmp_path / "machine1").exists()


def test_a_miss_is_computed_everywhere_and_written_by_rank_0_only(tmp_path):
    with idist.Parallel(backend="gloo", nproc_per_node=2) as parallel:
        parallel.run(_cached, tmp_path)
    for rank in (0, 1):
        out = torch.load(tmp_path / f"out{rank}.pt", weights_only=True)
        assert out["hit"] is False and out["calls"] == [rank]
    assert (tmp_path / "machine0" / "stats.pt").is_file() and not (tmp_path / "machine1").exists()


def _resized_cache_in_two_processes(local_rank, root, out):
    import json
    import time

    from adarand.core.distributed import rank0_first

    span = rank0_first(lambda: (time.time(), time.sleep(0.3), time.time()))
    cfg = DataConfig(root=str(root), image_size=12, resize_size=12, mean=[0.5] * 3, std=[0.25] * 3, num_workers=1,
                     cache="resized", cache_short_side=8)
    data = create_datasets(cfg, str(out / "cache"))
    first = data.train.cache.image(data.train.samples[0][0])
    (out / f"rank{idist.get_rank()}.json").write_text(json.dumps({"start": span[0], "end": span[2],
                                                                  "image": first.tolist()}))


def test_the_resized_cache_is_built_by_rank_0_and_read_by_the_others(tmp_path):
    import json

    root = make_image_folder(tmp_path / "data", {0: 6, 1: 6})
    with idist.Parallel(backend="gloo", nproc_per_node=2) as parallel:
        parallel.run(_resized_cache_in_two_processes, root, tmp_path)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r1["start"] >= r0["end"]  # rank 1 starts once rank 0 is done
    assert r0["image"] == r1["image"] and len(list((tmp_path / "cache" / "resized").glob("*.u8"))) == 1
