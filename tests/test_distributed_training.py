"""Two gloo processes on the CPU: the same priors as one process, and mu, mu_bar and the model
weights identical on both ranks through training."""

import gc

import ignite.distributed as idist
import torch
from ignite.engine import Events

from adarand.engine.build import build_run
from adarand.engine.config import load_config
from adarand.methods.statistics import class_priors

from conftest import write_tiny_config


def _train(local_rank, cfg_file, out_dir):
    cfg = load_config(cfg_file)
    run = build_run(cfg)
    reg = run.regularizer
    reg.attach(run.trainer)
    reg.prepare()
    history = {"mu0": reg.mu.detach().clone(), "mu": [], "mu_bar": []}

    @run.trainer.on(Events.ITERATION_COMPLETED)
    def record(_):
        history["mu"].append(reg.mu.detach().clone())
        history["mu_bar"].append(reg.mu_bar.clone())

    run.trainer.run(run.loaders.train, max_epochs=2)
    params = {n: p.detach().clone() for n, p in run.net.named_parameters()}
    torch.save({**history, "model": params, "world": idist.get_world_size(),
                "iterations": run.trainer.state.iteration}, out_dir / f"rank{idist.get_rank()}.pt")
    run = reg = None
    gc.collect()  # free the DDP model (and its process group) before ignite destroys the group


def test_two_processes_keep_priors_and_weights_identical(tmp_path):
    # 26 training images split over 2 processes, batch 4 per process
    cfg_file = write_tiny_config(tmp_path, "adarand", counts={0: 12, 1: 10, 2: 10})
    with idist.Parallel(backend="gloo", nproc_per_node=2) as parallel:
        parallel.run(_train, cfg_file, tmp_path)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["world"] == 2 and r0["iterations"] == r1["iterations"] > 0
    for a, b in zip(r0["mu"] + r0["mu_bar"], r1["mu"] + r1["mu_bar"], strict=True):
        assert torch.equal(a, b)
    # parameters (BN running statistics are per process between steps; DDP broadcasts rank 0's at
    # every forward, and checkpoints hold rank 0's)
    for k in r0["model"]:
        assert torch.allclose(r0["model"][k], r1["model"][k], atol=1e-6), k
    # the priors after initialisation equal those of a single process over the whole split
    single = build_run(load_config(cfg_file, [f"cache_dir={tmp_path / 'fresh'}"]))  # not the 2-process cache
    mu, _ = class_priors(single.ctx.class_statistics(), 1e-4)
    assert single.ctx.prior_cache_hit is False
    assert torch.allclose(r0["mu0"], mu, atol=1e-6, rtol=1e-6)


def test_command_line_with_two_processes(tmp_path):
    import json

    from conftest import run_cli, run_main

    out = tmp_path / "run"
    cfg_file = write_tiny_config(tmp_path, "adarand", counts={0: 12, 1: 10, 2: 10})
    r = run_cli(cfg_file, "train.epochs=1", "--nproc", "2", "--output", out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("test accuracy:") == 1  # printed by rank 0 only
    assert "DistributedDataParallel" not in r.stdout + r.stderr  # Ignite's INFO line stays quiet
    res = json.loads((out / "results.json").read_text())
    assert res["world_size"] == 2
    # a checkpoint written by 2 processes continues in 1
    assert len(list((out / "checkpoints").glob("last_*.pt"))) == 1
    r = run_main(cfg_file, "train.epochs=2", "--resume", out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out / "results.json").read_text())["world_size"] == 1


def _torchrun(*args, env_extra=None):
    """``torchrun ARGS`` started (not waited for), from this environment's torch."""
    import os
    import shutil
    import subprocess
    import sys

    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    assert torchrun, "torchrun comes with torch"
    env = {**os.environ, **(env_extra or {})}
    return subprocess.Popen([torchrun, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def _finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    # each process's one-line error comes first (torchrun's traceback of the others follows it)
    assert proc.returncode == 0, "\n".join(line for line in err.splitlines() if "error:" in line)[:2000] + "\n" + err[-2000:]
    return out


def two_nodes(run: tuple, tmp_path, env: dict, tries: int = 3) -> list[str]:
    """Two torchrun nodes of one process each on the loopback interface, on a port the first node's
    store binds. A port found free can be taken by another program before it binds it: then the
    pair is started again on another port (its stderr says so), up to ``tries`` times."""
    import socket

    for _ in range(tries):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        nodes = [_torchrun("--nnodes=2", f"--node_rank={n}", "--nproc_per_node=1", "--master_addr=127.0.0.1",
                           f"--master_port={port}", *run, "--output", tmp_path / f"node{n}", env_extra=env)
                 for n in (0, 1)]
        done = [p.communicate(timeout=300) + (p.returncode,) for p in nodes]
        if not any(code and "address already in use" in err.lower() for _, err, code in done):
            for _, err, code in done:
                assert code == 0, "\n".join(line for line in err.splitlines() if "error:" in line)[:2000] + err[-2000:]
            return [out for out, _, _ in done]
    raise AssertionError(f"no free port for the two nodes in {tries} tries")


def test_two_nodes_train_exactly_as_one_node_with_two_processes(tmp_path):
    """Two torchrun "machines" (node ranks 0 and 1, one process each, local rank 0 on both) on the
    loopback interface: the same global ranks as one machine with two processes, so the same data
    shards, seeds and reductions, and the same weights to the last bit; only global rank 0 writes.
    The one machine's run has no --output: each process names a run folder, rank 0's is used."""
    import json

    from conftest import REPO

    cfg_file = write_tiny_config(tmp_path, "adarand", counts={0: 12, 1: 10, 2: 10})
    run = (REPO / "run.py", cfg_file, "train.epochs=2")
    # torchrun gives each process one thread when a node has several; the same here, so that the
    # kernels sum in the same order in both layouts
    threads = {"OMP_NUM_THREADS": "1"}
    root = tmp_path / "runs"
    one = _finish(_torchrun("--standalone", "--nproc_per_node=2", *run, f"output_root={root}", env_extra=threads))
    (one_dir,) = list(root.iterdir())  # one run folder for both processes
    outs = two_nodes(run, tmp_path, threads)
    assert one.count("test accuracy:") == 1 and outs[0].count("test accuracy:") == 1 and "test accuracy:" not in outs[1]
    assert not (tmp_path / "node1").exists()  # rank 1 (on node 1) wrote no run folder of its own
    a = json.loads((one_dir / "results.json").read_text())
    b = json.loads((tmp_path / "node0" / "results.json").read_text())
    assert a["world_size"] == b["world_size"] == 2
    assert (a["test_loss"], a["val_accuracy"], a["best_epoch"]) == (b["test_loss"], b["val_accuracy"], b["best_epoch"])
    last = [sorted((d / "checkpoints").glob("last_*.pt")) for d in (one_dir, tmp_path / "node0")]
    ca, cb = (torch.load(files[-1], weights_only=False) for files in last)
    assert ca["model"].keys() == cb["model"].keys()
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k]), k


def _train_co_tuning(local_rank, cfg_file, out_dir, overrides):
    run = build_run(load_config(cfg_file, overrides))
    run.regularizer.attach(run.trainer)
    run.trainer.run(run.loaders.train, max_epochs=1)
    params = {f"net.{n}": p.detach().clone() for n, p in run.net.named_parameters()}
    params.update({f"source.{n}": p.detach().clone() for n, p in run.regularizer.source_head.named_parameters()})
    torch.save(params, out_dir / f"co{idist.get_rank()}.pt")
    run = None
    gc.collect()


def test_co_tuning_source_head_stays_identical_on_both_ranks(tmp_path):
    from adarand.core.config import ModelConfig
    from adarand.models import create_model

    source, _ = create_model(ModelConfig(arch="small_cnn", width=4), num_classes=7)
    torch.save(source.state_dict(), tmp_path / "source.pt")
    cfg_file = write_tiny_config(tmp_path, "co_tuning", counts={0: 12, 1: 10, 2: 10})
    with idist.Parallel(backend="gloo", nproc_per_node=2) as parallel:
        parallel.run(_train_co_tuning, cfg_file, tmp_path, [f"model.pretrained={tmp_path / 'source.pt'}"])
    a, b = torch.load(tmp_path / "co0.pt", weights_only=True), torch.load(tmp_path / "co1.pt", weights_only=True)
    assert any(k.startswith("source.") for k in a)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def _run_then_count_ddp(local_rank, cfg_file, out_dir):
    from torch.nn.parallel import DistributedDataParallel

    from adarand.engine.launch import run_worker

    run_worker(local_rank, load_config(cfg_file), out_dir / "run", None, True)
    alive = sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects())
    (out_dir / f"ddp_alive{idist.get_rank()}").write_text(str(alive))


def test_a_finished_run_frees_its_ddp_model_before_the_process_group_goes(tmp_path):
    # Engines and handlers hold the DDP model in reference cycles; if it outlives the process group,
    # gloo's threads are torn down at interpreter exit and can abort the process (a CI failure).
    cfg_file = write_tiny_config(tmp_path, "adarand", counts={0: 12, 1: 10, 2: 10})
    with idist.Parallel(backend="gloo", nproc_per_node=2) as parallel:
        parallel.run(_run_then_count_ddp, cfg_file, tmp_path)
    assert [(tmp_path / f"ddp_alive{r}").read_text() for r in (0, 1)] == ["0", "0"]


def _delta_weights(local_rank, cfg_file, out_dir):
    run = build_run(load_config(cfg_file, ["method.attention_batches=2", f"cache_dir={out_dir / 'cache2'}"]))
    run.regularizer.prepare()
    torch.save(run.regularizer.attention, out_dir / f"delta{idist.get_rank()}.pt")
    run = None
    gc.collect()


def test_delta_channel_weights_are_the_same_on_every_rank_and_as_one_process(tmp_path):
    cfg_file = write_tiny_config(tmp_path, "delta", counts={0: 12, 1: 10, 2: 10})
    with idist.Parallel(backend="gloo", nproc_per_node=2) as parallel:
        parallel.run(_delta_weights, cfg_file, tmp_path)
    a, b = torch.load(tmp_path / "delta0.pt", weights_only=True), torch.load(tmp_path / "delta1.pt", weights_only=True)
    single = build_run(load_config(cfg_file, ["method.attention_batches=2", f"cache_dir={tmp_path / 'one'}"]))
    single.regularizer.prepare()
    assert set(a) == set(single.net.stages)
    for k in a:
        assert torch.equal(a[k], b[k])
        assert torch.allclose(a[k], single.regularizer.attention[k], atol=1e-6)
