"""Which config keys make another run: every key of the schema, changed, makes a folder hold
another experiment, except the keys that only say how a run prints or where its files go (a
sweep's ``DISPLAY_KEYS``) and, for ``--output``, those a resume may change as well."""

from adarand.engine.config import load_config
from adarand.engine.run_folder import DISPLAY_KEYS
from adarand.engine.state import RESUMABLE_CHANGES, config_differences, flatten

from conftest import REPO

# what a run may differ in and still be the run asked for: how it prints, where it runs and writes
EXPECTED_DISPLAY = {"train.progress", "train.epoch_lines", "train.log_every", "train.stop_after", "train.device",
                    "train.threads", "data.num_workers", "cache_dir", "output_root", "logging.trackers",
                    "logging.mlflow_uri", "logging.experiment", "logging.wandb_mode"}


def test_only_keys_that_change_no_training_are_exempt():
    assert set(DISPLAY_KEYS) == EXPECTED_DISPLAY
    assert set(RESUMABLE_CHANGES) == EXPECTED_DISPLAY | {"train.epochs"}  # a longer run is the run trained further


def test_changing_any_other_key_makes_another_run():
    """A property over the schema: each key of the resolved config (the demo's, AdaRand's and the
    detection demo's, between them every section), changed alone, is a difference."""
    checked = set()
    for name in ("demo_adarand", "demo_detection_adarand"):
        saved = load_config(REPO / "yaml" / f"{name}.yaml").to_dict()
        for key in flatten(saved):
            changed = with_value(saved, key, ["changed"])
            differences = config_differences(saved, changed, DISPLAY_KEYS)
            if key in EXPECTED_DISPLAY:
                assert differences == [], key
            else:
                assert [d.split(" ")[0] for d in differences] == [key], key
                checked.add(key)
    for key in ("train.amp", "train.channels_last", "train.compile", "seed", "data.batch_size", "optim.lr",
                "method.lambda", "method.alpha", "detection.min_size", "model.arch", "diagnostics.enabled"):
        assert key in checked, key


def with_value(config: dict, dotted: str, value) -> dict:
    """A copy of the nested ``config`` with the key at ``dotted`` set to ``value``."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in config.items()}
    node, parts = out, dotted.split(".")
    for part in parts[:-1]:
        node[part] = dict(node[part])
        node = node[part]
    node[parts[-1]] = value
    return out
