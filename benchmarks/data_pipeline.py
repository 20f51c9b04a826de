"""Images per second per core of the training and evaluation transforms, for each decoding path,
on Cars-like JPEGs, measured within one run.

    python benchmarks/data_pipeline.py [--images 256] [--repeats 2]

The images: 800 x 600 JPEGs (quality 90, the size of a Stanford Cars photo) cut from the two real
photographs scikit-learn ships (``load_sample_images``), each a different crop, scale, flip and
brightness. Paths:

* ``pil``: PIL decoding and torchvision's PIL transforms (``data.decoder: pil``);
* ``torchcodec``: TorchCodec's ``decode_image`` (libjpeg-turbo) and transforms v2 on uint8 tensors
  (the default; where TorchCodec does not load, PIL decodes, and the row says so);
* ``torchvision``: ``torchvision.io.decode_jpeg`` and transforms v2 (``data.decoder: torchvision``);
* ``cache``: the decoded copy of ``data.cache: resized`` (shorter side 1.15 x resize_size, uint8,
  memory-mapped; decoded by the default decoder), then transforms v2; its build time is printed too.

One core: ``torch.set_num_threads(1)`` and every image read in this process, as one loader worker
reads them. Train: RandomResizedCrop(224) + flip + normalise; eval: Resize(256) + CenterCrop(224)
+ normalise.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image, ImageEnhance
from sklearn.datasets import load_sample_images

from adarand.core.config import STANDARD_PREPROCESSING, DataConfig
from adarand.datasets.decode import decoder_in_use
from adarand.datasets.image_list import ImageList
from adarand.datasets.resized_cache import build_resized_cache
from adarand.datasets.transforms import eval_transform, train_transform


def make_images(folder: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` 800 x 600 JPEGs cut from scikit-learn's sample photographs."""
    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(a) for a in load_sample_images().images]
    paths = []
    for i in range(n):
        photo = photos[i % len(photos)]
        w, h = photo.size
        scale = rng.uniform(0.6, 1.0)
        cw, ch = int(w * scale), int(h * scale)
        x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
        img = photo.crop((x, y, x + cw, y + ch)).resize((800, 600), Image.BICUBIC)
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.7, 1.3))
        path = folder / f"{i:04d}.jpg"
        img.save(path, quality=90)
        paths.append(str(path))
    return paths


def images_per_second(dataset, repeats: int) -> float:
    dataset[0]  # warm-up
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(len(dataset)):
            dataset[i]
        best = max(best, len(dataset) / (time.perf_counter() - start))
    return best


def codec_version() -> str:
    try:
        import torchcodec
    except (ImportError, OSError, RuntimeError):
        return "not available"
    return torchcodec.__version__


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_images(Path(tmp), args.images)
        samples = [(path, 0) for path in paths]
        rows = []
        for decoder in ("pil", "torchcodec", "torchvision"):
            cfg = DataConfig(root=tmp, decoder=decoder).with_preprocessing(STANDARD_PREPROCESSING)
            train = images_per_second(ImageList(samples, train_transform(cfg), decoder=decoder), args.repeats)
            evaluation = images_per_second(ImageList(samples, eval_transform(cfg), decoder=decoder), args.repeats)
            rows.append((decoder, decoder_in_use(decoder), train, evaluation))
        cfg = DataConfig(root=tmp, cache="resized").with_preprocessing(STANDARD_PREPROCESSING)
        start = time.perf_counter()
        cache = build_resized_cache(paths, Path(tmp) / "cache", round(1.15 * cfg.resize_size), cfg.decoder,
                                    cfg.interpolation, False, workers=1, progress=False)
        build_s = time.perf_counter() - start
        train = images_per_second(ImageList(samples, train_transform(cfg), cache=cache), args.repeats)
        evaluation = images_per_second(ImageList(samples, eval_transform(cfg), cache=cache), args.repeats)
        rows.append(("cache", f"{decoder_in_use(cfg.decoder)}, once", train, evaluation))
    base_train, base_eval = rows[0][2], rows[0][3]
    print(f"{args.images} JPEGs of 800 x 600, one core, best of {args.repeats}; torch {torch.__version__}, "
          f"torchvision {torchvision.__version__}, torchcodec {codec_version()}")
    print(f"{'path':<14}{'decoded by':<32}{'train img/s':>12}{'x PIL':>8}{'eval img/s':>12}{'x PIL':>8}")
    for name, by, train, evaluation in rows:
        print(f"{name:<14}{by:<32}{train:>12.0f}{train / base_train:>8.2f}{evaluation:>12.0f}"
              f"{evaluation / base_eval:>8.2f}")
    print(f"cache build (decode + resize, one worker): {build_s:.1f} s, {args.images / build_s:.0f} img/s")


if __name__ == "__main__":
    main()
