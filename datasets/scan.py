"""Finding unreadable images before training: a scan that opens every image's header.

The result is cached per file list (paths, sizes, modification times) under ``cache_dir/scans``,
so a dataset is scanned once, not at every run.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from ..core.files import write_atomic


def image_problem(path: str) -> str | None:
    """Why ``path`` cannot be read as an image (its header opened and verified), or None."""
    try:
        with Image.open(path) as img:
            img.verify()
    except Exception as e:  # any reason an image cannot be decoded is a finding, reported by the caller
        return f"{e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else 'unreadable'}"
    return None


def scan_key(paths: list[str]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        st = os.stat(p)
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def find_bad_images(paths: list[str], cache_dir: Path | None, progress: bool = False) -> dict[str, str]:
    """{path: problem} for every image of ``paths`` that cannot be read; cached under ``cache_dir``."""
    cache_file = cache_dir / "scans" / f"{scan_key(paths)}.json" if cache_dir is not None else None
    if cache_file is not None and cache_file.is_file():
        try:
            return dict(json.loads(cache_file.read_text()))
        except (ValueError, TypeError):
            pass  # an unreadable scan cache is scanned anew and rewritten below
    found = {}
    for p in tqdm(paths, desc="checking images", disable=not progress, leave=False):
        problem = image_problem(p)
        if problem is not None:
            found[p] = problem
    if cache_file is not None:
        write_atomic(cache_file, lambda tmp: Path(tmp).write_text(json.dumps(found)))
    return found
