"""At one seed every method sees the same data: the regularizers draw from a generator of their
own and the augmentations are seeded per image, so a comparison between methods is paired."""

import pytest
import torch

from adarand.engine.config import load_config
from adarand.engine.training import run_training

from conftest import write_tiny_config

SAMPLING = ["fnp", "randreg_uniform", "randreg_normal", "randreg_global", "randreg_cp", "adarand",
            "adarand_no_intra", "adarand_no_inter"]


def trained_weights(tmp_path, method, overrides=()):
    cfg = load_config(write_tiny_config(tmp_path, method), ["train.epochs=2", *overrides])
    run_dir = tmp_path / "runs" / f"{method}-{'-'.join(overrides)}"
    run_training(0, cfg, run_dir, None)
    last = torch.load(next((run_dir / "checkpoints").glob("last_*.pt")), weights_only=True)
    return last["model"]


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_every_sampling_method_with_lambda_zero_trains_exactly_as_finetune(tmp_path):
    reference = trained_weights(tmp_path, "finetune")
    for method in SAMPLING:
        assert_same(trained_weights(tmp_path, method, ["method.lambda=0"]), reference)
    # not vacuous: with its term on, a sampling method trains to other weights
    other = trained_weights(tmp_path, "randreg_normal", ["method.lambda=1"])
    assert any(not torch.equal(other[k], reference[k]) for k in reference)


def test_the_data_do_not_depend_on_the_number_of_loader_workers(tmp_path):
    assert_same(trained_weights(tmp_path, "finetune", ["data.num_workers=2"]), trained_weights(tmp_path, "finetune"))


def test_the_global_rng_does_not_move_the_augmentations(tmp_path):
    from adarand.core.seeded import SeededDataset

    cfg = load_config(write_tiny_config(tmp_path, "finetune"))
    from adarand.engine.build import setup_data

    data, loaders = setup_data(cfg)
    dataset = loaders.train.dataset
    assert isinstance(dataset, SeededDataset)
    key = next(iter(loaders.train.sampler))
    torch.manual_seed(1)
    a = dataset[key][0]
    torch.manual_seed(2)
    b = dataset[key][0]
    assert torch.equal(a, b)
    state = torch.get_rng_state()
    dataset[key]
    assert torch.equal(torch.get_rng_state(), state)  # and the global generator is left as it was
    # another epoch, another crop of the same image
    loaders.train.sampler.set_epoch(1)
    other = {k[0]: k for k in loaders.train.sampler}[key[0]]
    assert other[1] != key[1]
    assert not torch.equal(dataset[other][0], a) or pytest.skip("the two crops happen to coincide")


@pytest.mark.parametrize("method", SAMPLING)
def test_the_regularizers_draw_from_their_own_generator(tmp_path, method):
    from adarand.engine.build import build_run

    run = build_run(load_config(write_tiny_config(tmp_path, method)))
    run.regularizer.prepare()
    labels, features = torch.tensor([0, 1, 2, 1]), torch.zeros(4, run.net.feature_dim)
    own = run.ctx.generator.get_state()
    state = torch.get_rng_state()
    z = run.regularizer.sample(labels, features)
    assert torch.equal(torch.get_rng_state(), state)
    if method != "fnp":
        assert not torch.equal(run.ctx.generator.get_state(), own)
        run.ctx.generator.set_state(own)  # the same generator state draws the same references
        assert torch.equal(run.regularizer.sample(labels, features), z)
