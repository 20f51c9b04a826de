"""The "Writing a new regularizer" example of the documentation, run exactly as printed; the blocks
marked runnable in the README and the pages."""

import re

import pytest
from ignite.engine import Events

from adarand.core.errors import ConfigError
from adarand.engine.build import build_run
from adarand.engine.config import load_config
from adarand.handlers.registry import known_regularizers, register

from conftest import REPO, write_tiny_config

PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def marked_blocks() -> dict[str, list[tuple[str, str]]]:
    """{name: [(page, code), ...]} for every code block between ``<!-- NAME -->`` and
    ``<!-- /NAME -->`` in the README and the documentation's pages: the blocks marked runnable."""
    found: dict[str, list[tuple[str, str]]] = {}
    for page in PAGES:
        for m in re.finditer(r"<!-- ([\w-]+) -->\s*```\w*\n(.*?)```\s*<!-- /\1 -->", page.read_text(), re.S):
            found.setdefault(m.group(1), []).append((str(page.relative_to(REPO)), m.group(2)))
    return found


def readme_block(name: str, language: str) -> str:
    """The code block between ``<!-- NAME -->`` and ``<!-- /NAME -->`` in the README or a page of the
    documentation (the same text wherever it is shown: ``test_docs.py`` checks it)."""
    for page in PAGES:
        block = re.search(rf"<!-- {name} -->\s*```{language}\n(.*?)```\s*<!-- /{name} -->", page.read_text(), re.S)
        if block:
            return block.group(1)
    raise AssertionError(f"no page holds the block {name}")


def readme_example() -> str:
    return readme_block("example-regularizer", "python")


def test_readme_regularizer_example_trains(tmp_path):
    code = readme_example()
    assert 10 <= len(code.strip().splitlines()) <= 30
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    if "feature_mean" not in known_regularizers():  # what the plugin's entry point does when installed
        register("feature_mean")(namespace["FeatureMeanPenalty"])
    cfg = load_config(write_tiny_config(tmp_path, "feature_mean"), ["method.lambda=0.5"])
    assert cfg.method.params.lam == 0.5
    with pytest.raises(ConfigError, match="key 'method.lambda': expected a value at least 0, got -1"):
        load_config(write_tiny_config(tmp_path, "feature_mean"), ["method.lambda=-1"])  # validated as a built-in is
    run = build_run(cfg)
    run.regularizer.attach(run.trainer)
    seen = []
    run.trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(
        (float(e.state.output.losses["feature_mean"].detach()),
         float(0.5 * e.state.output.features.detach().mean(0).pow(2).sum()))))
    run.trainer.run(run.loaders.train, max_epochs=1)
    assert len(seen) == run.ctx.epoch_length and all(a == pytest.approx(b) for a, b in seen)
    assert seen[0][0] > 0


def test_the_python_api_example_trains_the_demo(tmp_path, monkeypatch, cache_dir):
    """The run page's example, as printed, in a folder of its own: five epochs of the demo."""
    import json

    monkeypatch.chdir(tmp_path)
    code = readme_block("example-python-api", "python")
    namespace: dict = {}
    exec(compile(code.replace('{"train.epochs": 5}', f'{{"train.epochs": 5, "cache_dir": "{cache_dir}"}}'),
                 "docs/concepts/run.md", "exec"), namespace)
    results = namespace["results"]
    run = tmp_path / "runs" / "demo5"
    assert results["run_dir"] == "runs/demo5" and results["test_accuracy"] > 0.25  # five classes: chance is 0.2
    assert json.loads((run / "results.json").read_text())["test_accuracy"] == results["test_accuracy"]
    assert len((run / "epochs.csv").read_text().splitlines()) == 1 + 5  # a header and the five epochs
