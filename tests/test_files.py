"""Atomic, durable writes: the old file survives a failed write, and the OS error names the file."""

import contextlib
import os
import resource
import signal
import time

import pytest
import torch

from adarand.core.cache import write_cache
from adarand.core.files import remove_temp_files, save_atomic, write_text_atomic


@contextlib.contextmanager
def file_size_limit(nbytes: int):
    """Writes past ``nbytes`` fail with EFBIG ("File too large"), as a full disk fails them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def test_a_failed_torch_save_keeps_the_old_file_and_names_the_path(tmp_path):
    path = tmp_path / "x.pt"
    save_atomic({"a": torch.arange(3)}, path)
    with file_size_limit(4096), pytest.raises(OSError) as err:
        save_atomic({"a": torch.zeros(100_000)}, path)
    # torch.save reports a failed stream as its own RuntimeError; the OS error comes through instead
    assert err.value.filename == str(path) and "File too large" in err.value.strerror
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pt"]  # no temporary file left


def test_a_write_into_a_missing_or_file_folder_names_the_path(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError) as err:
        write_text_atomic(tmp_path / "file" / "config.yaml", "a: 1")
    assert str(tmp_path / "file") in str(err.value.filename)


def test_temp_files_are_removed_by_name_and_age(tmp_path):
    old, young, other = (tmp_path / "c.pt.abc.tmp"), (tmp_path / "c.pt.def.tmp"), (tmp_path / "d.pt.ghi.tmp")
    for p in (old, young, other):
        p.write_bytes(b"half")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    os.utime(other, (time.time() - 7200, time.time() - 7200))
    # a cache write removes its own stale temporary files, not one being written, nor another cache's
    write_cache(tmp_path / "c.pt", {"t": torch.ones(2)})
    assert not old.exists() and young.exists() and other.exists()
    assert set(remove_temp_files(tmp_path)) == {young, other}
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
