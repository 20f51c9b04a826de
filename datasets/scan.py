"""Finding unreadable images before training: a scan that opens every image's header, and keeps
each readable image's size (width, height) for the annotations to be checked against.

The result is cached per file list (paths, sizes, modification times) under ``cache_dir/scans``,
so a dataset is scanned once, not at every run.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from ..core.cache import STALE_TEMP_S
from ..core.errors import error_summary
from ..core.files import remove_temp_files, write_json_atomic


def image_problem(path: str) -> str | None:
    """Why ``path`` cannot be read as an image (its header opened and verified), or None."""
    return read_header(path)[0]


def read_header(path: str) -> tuple[str | None, tuple[int, int] | None]:
    """(why ``path`` cannot be read as an image, or None; its (width, height) when it can)."""
    try:
        with Image.open(path) as img:
            size = img.size
            img.verify()
    except Exception as e:  # any reason an image cannot be decoded is a finding, reported by the caller
        return error_summary(e, "unreadable"), None
    return None, (int(size[0]), int(size[1]))


def scan_key(paths: list[str]) -> str:
    h = hashlib.sha256(b"scan v2: problems and sizes\n")
    for p in sorted(paths):
        st = os.stat(p)
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def read_scan(cache_file: Path) -> tuple[dict[str, str], dict[str, list[int]]] | None:
    """The cached scan ({path: problem}, {path: [width, height]}), or None (with a warning) when the
    file is not one: it must be JSON holding its own key and the problems (the sizes may be left
    out: then no size is checked)."""
    try:
        state = json.loads(cache_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        problem = f"unreadable ({e.__class__.__name__})"
    else:
        bad = state.get("bad") if isinstance(state, dict) else None
        sizes = state.get("sizes", {}) if isinstance(state, dict) else None
        if isinstance(state, dict) and state.get("key") == cache_file.stem and isinstance(bad, dict) \
                and all(isinstance(k, str) and isinstance(v, str) for k, v in bad.items()) and isinstance(sizes, dict):
            return bad, sizes
        problem = "not a scan of this file list (no matching key inside)"
    warnings.warn(f"image scan: the cache file {cache_file} is {problem}; scanning again", stacklevel=2)
    return None


def scan_images(paths: list[str], cache_dir: Path | None, progress: bool = False
                ) -> tuple[dict[str, str], dict[str, list[int]]]:
    """({path: problem} for every image of ``paths`` that cannot be read, {path: [width, height]}
    for the others); cached under ``cache_dir``."""
    cache_file = cache_dir / "scans" / f"{scan_key(paths)}.json" if cache_dir is not None else None
    if cache_file is not None and cache_file.is_file():
        found = read_scan(cache_file)
        if found is not None:
            return found
    bad, sizes = {}, {}
    for p in tqdm(paths, desc="checking images", disable=not progress, leave=False):
        problem, size = read_header(p)
        if problem is not None:
            bad[p] = problem
        else:
            sizes[p] = list(size)
    if cache_file is not None:
        remove_temp_files(cache_file.parent, cache_file.name, min_age_s=STALE_TEMP_S)
        write_json_atomic(cache_file, {"key": cache_file.stem, "bad": bad, "sizes": sizes})
    return bad, sizes


def find_bad_images(paths: list[str], cache_dir: Path | None, progress: bool = False) -> dict[str, str]:
    """{path: problem} for every image of ``paths`` that cannot be read (``scan_images``)."""
    return scan_images(paths, cache_dir, progress)[0]
