"""The data pipeline: JPEG by libjpeg-turbo and transforms v2 against PIL, the resized cache, and
a compiled model."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from adarand.core.config import STANDARD_PREPROCESSING, DataConfig
from adarand.datasets.decode import read_pil, read_tensor
from adarand.datasets.image_list import ImageList
from adarand.datasets.resized_cache import build_resized_cache, cache_key, shorter_side_resize
from adarand.datasets.transforms import eval_transform, train_transform

from conftest import run_main, write_tiny_config


def photo(seed=0, size=(120, 90)):
    """A smooth image with some texture (a photo's statistics more than noise's)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size[1], 0:size[0]]
    base = np.stack([128 + 100 * np.sin(x / 9.0 + c) * np.cos(y / 7.0 - c) for c in range(3)], -1)
    return Image.fromarray(np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8))


@pytest.mark.parametrize("decoder", ["torchcodec", "torchvision"])
def test_jpeg_and_png_decode_as_pil_does(tmp_path, decoder):
    photo().save(tmp_path / "a.jpg", quality=90)
    photo(1).save(tmp_path / "b.png")
    for name in ("a.jpg", "b.png"):
        for gray in (False, True):
            ours = read_tensor(str(tmp_path / name), gray, decoder)
            pil = torch.from_numpy(np.array(read_pil(str(tmp_path / name), gray)))
            pil = pil.unsqueeze(0) if gray else pil.permute(2, 0, 1)
            assert ours.dtype == torch.uint8 and ours.shape == pil.shape
            # libjpeg-turbo against PIL's libjpeg: the same decoder family, at most a level apart (PNG: equal);
            # grayscale: PIL converts RGB to L with its own weights, the JPEG decoder keeps the luma plane
            limit = 0 if name.endswith("png") and not gray else 3
            assert (ours.int() - pil.int()).abs().max() <= limit, (name, gray)


def test_transforms_on_tensors_match_pil_transforms(tmp_path):
    photo().save(tmp_path / "a.jpg", quality=95)
    cfgs = {d: DataConfig(root=str(tmp_path), decoder=d, image_size=48, resize_size=56)
            .with_preprocessing(STANDARD_PREPROCESSING) for d in ("pil", "torchcodec", "torchvision")}
    samples = [(str(tmp_path / "a.jpg"), 0)]
    one_level = 1 / 255 / min(STANDARD_PREPROCESSING["std"])  # a grey level after normalisation
    for make in (eval_transform, train_transform):
        out = {}
        for d, cfg in cfgs.items():
            torch.manual_seed(3)  # the same crop and flip: v2 draws them as the PIL transforms do
            out[d], _ = ImageList(samples, make(cfg), decoder=d)[0]
        for d in ("torchcodec", "torchvision"):
            assert out["pil"].shape == out[d].shape == (3, 48, 48)
            diff = (out["pil"] - out[d]).abs()
            # antialiased resizing on uint8 tensors follows PIL's up to rounding (and the decoders' level)
            assert diff.mean() < one_level and diff.max() < 6 * one_level, (d, make.__name__, diff.mean(), diff.max())


def test_the_resized_cache_holds_each_image_resized_once(tmp_path):
    paths = []
    for i, size in enumerate([(120, 90), (90, 160), (40, 30)]):
        photo(i, size).save(tmp_path / f"{i}.jpg", quality=90)
        paths.append(str(tmp_path / f"{i}.jpg"))
    cache = build_resized_cache(paths, tmp_path / "cache", 60, "torchvision", "bilinear", False, workers=2,
                                progress=False)
    for p in paths:
        want = shorter_side_resize(read_tensor(p), 60, "bilinear")
        assert torch.equal(cache.image(p), want)
    assert cache.image(paths[0]).shape == (3, 60, 80) and cache.image(paths[1]).shape == (3, 106, 60)
    assert cache.image(paths[2]).shape == (3, 30, 40)  # smaller than the size: kept as it is
    (data,) = list((tmp_path / "cache" / "resized").glob("*.u8"))
    stamp = data.stat().st_mtime_ns
    again = build_resized_cache(paths, tmp_path / "cache", 60, "torchvision", "bilinear", False, 1, False)
    assert data.stat().st_mtime_ns == stamp and torch.equal(again.image(paths[1]), cache.image(paths[1]))
    other = build_resized_cache(paths, tmp_path / "cache", 50, "torchvision", "bilinear", False, 1, False)
    assert other.image(paths[0]).shape == (3, 50, 66)  # another size, another file
    index = data.with_suffix(".json")
    index.write_text(json.dumps({"key": "not this one"}))  # a broken index: rebuilt
    rebuilt = build_resized_cache(paths, tmp_path / "cache", 60, "torchvision", "bilinear", False, 1, False)
    assert torch.equal(rebuilt.image(paths[0]), cache.image(paths[0])) and json.loads(index.read_text())["paths"]


def test_a_run_with_the_resized_cache_and_a_compiled_model(tmp_path):
    """The small CNN compiled (the regularizer still sees (logits, features)), on the resized cache;
    the numbers stay those of the eager model on the same cache."""
    cfg = write_tiny_config(tmp_path, "adarand")
    common = [cfg, "train.epochs=1", "data.cache=resized", "data.cache_short_side=10", "--quiet"]
    assert run_main(*common, "--output", tmp_path / "eager").returncode == 0
    # aot_eager: dynamo's graphs and autograd's, without the C++ code generation that takes a
    # minute on this CPU (benchmarks/compile_step.py times the default, inductor)
    r = run_main(*common, "train.compile=true", "train.compile_backend=aot_eager", "--output", tmp_path / "compiled")
    assert r.returncode == 0, r.stderr[-2000:]
    eager, compiled = (json.loads((tmp_path / k / "results.json").read_text()) for k in ("eager", "compiled"))
    assert compiled["test_loss"] == pytest.approx(eager["test_loss"], rel=1e-4)
    assert list((tmp_path / "cache" / "resized").glob("*.u8"))
    state = torch.load(next((tmp_path / "compiled" / "checkpoints").glob("best_*.pt")), weights_only=True)
    assert not any("_orig_mod" in k for k in state)  # the plain model's weights


@pytest.mark.parametrize("decoder", ["torchvision", "pil"])
def test_a_cache_that_resizes_nothing_trains_exactly_as_the_images(tmp_path, decoder):
    """With cache_short_side at least the largest image side the cache holds the decoded images
    themselves: a seeded run gives the same results.json figures and the same weights with it and
    without it."""
    from adarand import train

    cfg = write_tiny_config(tmp_path, "adarand")
    common = ["train.epochs=2", f"data.decoder={decoder}", "data.cache_short_side=16"]  # the images are 12 x 12
    runs = {cache: train(cfg, [*common, f"data.cache={cache}"], output=tmp_path / cache, quiet=True)
            for cache in ("none", "resized")}
    assert list((tmp_path / "cache" / "resized").glob("*")), "the resized run read its images from the cache"
    for key in ("best_epoch", "val_accuracy", "val_loss", "test_accuracy", "test_loss"):
        assert runs["resized"][key] == runs["none"][key], key
    weights = [torch.load(next((tmp_path / c / "checkpoints").glob("last_*.pt")), weights_only=True)["model"]
               for c in ("none", "resized")]
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]), k


def test_without_torchcodec_pil_decodes_and_says_so_once(tmp_path, monkeypatch, caplog):
    """The fallback: the same tensor as PIL's, one warning line with the reason, another cache key."""
    import sys

    from adarand.datasets import decode
    photo().save(tmp_path / "a.jpg", quality=90)
    path = str(tmp_path / "a.jpg")
    with_codec = cache_key([path], 60, "torchcodec", "bilinear", False)
    monkeypatch.setitem(sys.modules, "torchcodec", None)  # an import of it fails, as where it is not installed
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)
    decode.torchcodec_decode.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="adarand.datasets.decode"):
            first, second = read_tensor(path), read_tensor(path)
        pil = torch.from_numpy(np.array(read_pil(path))).permute(2, 0, 1)
        assert torch.equal(first, pil) and torch.equal(second, pil)
        lines = [r.getMessage() for r in caplog.records]
        assert lines == ["data.decoder: torchcodec not installed; PIL decodes the images instead (pip install torchcodec)"]
        assert decode.decoder_in_use("torchcodec") == "pil (torchcodec unavailable)"
        assert cache_key([path], 60, "torchcodec", "bilinear", False) != with_codec  # PIL's pixels are cached apart
    finally:
        decode.torchcodec_decode.cache_clear()
