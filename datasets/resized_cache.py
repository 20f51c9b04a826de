"""``data.cache: resized``: every image decoded once, resized, and kept as uint8 in one
memory-mapped file under ``cache_dir/resized/``, from which the augmentations read.

Each image is stored with its shorter side ``data.cache_short_side`` (default 1.15 x
``resize_size``, 294 for 256; an image already smaller is kept as it is), in the run's
interpolation with antialiasing. The file is keyed by the file list (paths, sizes, modification
times), the size, the decoder, the interpolation and the colour mode, so seeds and methods share
it; it is built once, before training, by a pool of processes with a progress bar, and written
through a temporary file (a killed build leaves no cache behind).

What changes: a crop has the same place and relative size in the copy as in the original, but
its pixels come from the resized copy. A crop that covers the whole image is resized from ~294
pixels instead of ~600 (the same 224 pixels in the end, up to resampling twice); a small crop
(RandomResizedCrop's scale down to 0.08) is upsampled from fewer pixels than the original holds,
so it is blurrier. Evaluation's Resize(256) resamples the 294-pixel copy.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F
from tqdm import tqdm

from ..core.files import remove_temp_files, write_atomic, write_json_atomic
from .decode import decoder_in_use, read_pil, read_tensor

VERSION = 1


def shorter_side_resize(img: torch.Tensor, short_side: int, interpolation: str) -> torch.Tensor:
    """``img`` (uint8, C x H x W) with its shorter side ``short_side``; a smaller image unchanged."""
    if min(img.shape[-2:]) <= short_side:
        return img
    return F.resize(img, short_side, interpolation=InterpolationMode(interpolation), antialias=True)


def cache_key(paths: list[str], short_side: int, decoder: str, interpolation: str, grayscale: bool) -> str:
    h = hashlib.sha256(json.dumps({"version": VERSION, "short_side": short_side, "decoder": decoder_in_use(decoder),
                                   "interpolation": interpolation, "grayscale": grayscale}).encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def _decode_and_resize(args: tuple[str, int, str, str, bool]) -> np.ndarray:
    path, short_side, decoder, interpolation, grayscale = args
    img = F.pil_to_tensor(read_pil(path, grayscale)) if decoder == "pil" else read_tensor(path, grayscale, decoder)
    return shorter_side_resize(img, short_side, interpolation).numpy()


class ResizedCache:
    """The resized images of ``paths``, in one uint8 file: ``cache.image(path)`` is a C x H x W tensor."""

    def __init__(self, data_file: Path, index: dict):
        self.data_file = data_file
        self.slot = {p: i for i, p in enumerate(index["paths"])}
        self.offsets = index["offsets"]
        self.shapes = index["shapes"]
        self._data = None  # opened on first use, in each loader worker

    def image(self, path: str) -> torch.Tensor:
        if self._data is None:
            self._data = np.memmap(self.data_file, dtype=np.uint8, mode="r")
        i = self.slot[path]
        c, h, w = self.shapes[i]
        return torch.from_numpy(np.array(self._data[self.offsets[i]:self.offsets[i] + c * h * w]).reshape(c, h, w))

    def __getstate__(self) -> dict:  # loader workers open the file themselves
        return {**self.__dict__, "_data": None}


def read_index(index_file: Path, key: str, n: int) -> dict | None:
    try:
        index = json.loads(index_file.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(index, dict) or index.get("key") != key or len(index.get("paths", [])) != n:
        return None
    return index


def build_resized_cache(paths: list[str], cache_dir: Path, short_side: int, decoder: str, interpolation: str,
                        grayscale: bool, workers: int, progress: bool) -> ResizedCache:
    """The cache of ``paths`` (sorted, unique), built if it is not on disk yet."""
    paths = sorted(set(paths))
    key = cache_key(paths, short_side, decoder, interpolation, grayscale)
    folder = cache_dir / "resized"
    data_file, index_file = folder / f"{key}.u8", folder / f"{key}.json"
    index = read_index(index_file, key, len(paths)) if data_file.is_file() else None
    if index is not None and data_file.stat().st_size == index["size"]:
        return ResizedCache(data_file, index)
    remove_temp_files(folder, data_file.name, min_age_s=3600.0)
    offsets, shapes = [], []

    def write(f) -> None:
        jobs = [(p, short_side, decoder, interpolation, grayscale) for p in paths]
        offset = 0
        with multiprocessing.Pool(max(1, workers)) as pool:  # forked, as the data loader's workers
            for arr in tqdm(pool.imap(_decode_and_resize, jobs, chunksize=16), total=len(jobs),
                            desc="caching resized images", disable=not progress, leave=False):
                f.write(arr.tobytes())
                offsets.append(offset)
                shapes.append(list(arr.shape))
                offset += arr.size

    write_atomic(data_file, write)
    index = {"key": key, "paths": paths, "offsets": offsets, "shapes": shapes, "size": data_file.stat().st_size}
    write_json_atomic(index_file, index)
    return ResizedCache(data_file, index)
