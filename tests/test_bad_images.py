"""Unreadable images are found before training by a scan of every image, cached per dataset."""

import json

import pytest

from adarand.core.errors import UserError
from adarand.datasets import create_datasets
from adarand.engine.config import load_config

from conftest import run_main, write_tiny_config


def corrupt(cfg_file, tmp_path):
    bad = tmp_path / "data" / "train" / "class1" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return bad


def test_a_corrupt_image_stops_the_run_before_training_with_one_line(tmp_path):
    cfg_file = write_tiny_config(tmp_path, "finetune")
    bad = corrupt(cfg_file, tmp_path)
    out = tmp_path / "run"
    r = run_main(cfg_file, "--output", out)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert "data.root: 1 unreadable image(s)" in line and str(bad) in line and "skip_bad_images" in line
    assert not out.exists()


def test_skip_bad_images_leaves_them_out_and_the_scan_is_cached(tmp_path):
    cfg_file = write_tiny_config(tmp_path, "finetune")
    bad = corrupt(cfg_file, tmp_path)
    cfg = load_config(cfg_file, ["data.skip_bad_images=true"])
    with pytest.warns(UserWarning, match="leaving out 1 unreadable image"):
        data = create_datasets(cfg.data, cfg.cache_dir)
    kept = [p for p, _ in data.train.samples + data.val.samples]
    assert str(bad) not in kept and len(kept) == 10 + 8 + 6
    (scan,) = list((tmp_path / "cache" / "scans").glob("*.json"))
    assert list(json.loads(scan.read_text())["bad"]) == [str(bad)]
    # the cached result is used: the same answer without opening the images again
    scan.write_text(json.dumps({"key": scan.stem, "bad": {str(bad): "from the cache"}}))
    with pytest.raises(UserError, match="from the cache"):
        create_datasets(load_config(cfg_file).data, cfg.cache_dir)
    # a cache file that is not a scan (garbage, or without its key) is reported and scanned again
    for text in ("{not json", json.dumps({str(bad): "no key inside"})):
        scan.write_text(text)
        with pytest.warns(UserWarning, match=f"cache file {scan} is .*; scanning again"):
            with pytest.raises(UserError, match="1 unreadable image"):
                create_datasets(load_config(cfg_file).data, cfg.cache_dir)
        assert json.loads(scan.read_text())["key"] == scan.stem  # rewritten
    # a changed file list is scanned anew
    bad.unlink()
    assert len(create_datasets(load_config(cfg_file).data, cfg.cache_dir).train.samples) > 0
