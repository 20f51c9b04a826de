"""The documentation site: ``mkdocs build --strict`` with no network, the generated references
against the schema and the argument parsers (walked again here), a broken link failing the build,
the README as a landing page, and one page opened in Chromium."""

import dataclasses
import html
import importlib
import os
import re
import shutil
import subprocess
import sys
import typing

import numpy as np
import pytest
from PIL import Image

from conftest import REPO

NO_NETWORK = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
              "HTTPS_PROXY": "http://127.0.0.1:9", "NO_MKDOCS_2_WARNING": "1"}
COMMANDS = {"adarand-run": "adarand.run", "adarand-sweep": "adarand.experiments.sweep",
            "adarand-table": "adarand.experiments.report", "adarand-plot": "adarand.experiments.plots",
            "adarand-tune": "adarand.experiments.tune", "adarand-eval": "adarand.experiments.evaluation",
            "adarand-export": "adarand.experiments.export"}


def build(config, out) -> subprocess.CompletedProcess:
    env = {**os.environ, **NO_NETWORK}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    done = build(REPO / "mkdocs.yml", out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "WARNING" not in done.stderr
    return out


def page_text(site, page: str) -> str:
    """The page's HTML with tags removed and entities decoded: what a reader reads."""
    raw = (site / page / "index.html").read_text()
    return html.unescape(re.sub(r"<[^>]+>", "", raw))


def schema_keys(cls, prefix=""):
    """(dotted key, default, range) of every key of a config dataclass, nested ones walked."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init or f.name == "params":
            continue
        key, tp = prefix + f.metadata.get("key", f.name), hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from schema_keys(tp, key + ".")
            continue
        if typing.get_origin(tp) is list and dataclasses.is_dataclass(typing.get_args(tp)[0]):
            yield from schema_keys(typing.get_args(tp)[0], key + "[].")
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        yield key, default, f.metadata.get("range")


def test_the_site_builds_strict_and_every_page_is_rendered(site):
    nav = re.findall(r":\s*([\w/-]+)\.md", (REPO / "mkdocs.yml").read_text())
    assert len(nav) >= 20
    for page in nav:
        folder = site if page == "index" else site / page
        assert (folder / "index.html").is_file(), page
    home = page_text(site, ".")
    assert "Two commands" in home and "AdaRand in your own training loop" in home  # the README is the home page


def test_the_config_reference_lists_every_key_with_its_default_and_range(site):
    from adarand.core.config import CONFIG_DIR, Config
    from adarand.handlers.registry import get_method

    def known_regularizers():  # the built-in methods (a test may have registered one of its own in this process)
        return sorted(p.stem for p in (CONFIG_DIR / "methods").glob("*.yaml"))

    raw = (site / "reference" / "config" / "index.html").read_text()
    sections = re.split(r"<h[23] ", raw)  # a section per heading: the top level, the config sections, each method

    def table_rows(section: str) -> dict[str, list[str]]:
        return {html.unescape(m.group(1)): [html.unescape(re.sub(r"<[^>]+>", "", cell)).strip()
                                            for cell in re.findall(r"<td>(.*?)</td>", m.group(0), re.S)]
                for m in re.finditer(r"<tr>\s*<td><code>([^<]+)</code></td>.*?</tr>", section, re.S)}

    rows = {}
    for section in sections:
        heading = section.split("</h", 1)[0]
        names = re.findall(r"<code>(\w+)</code>", heading)
        rows.update({(names[0] if names and names[0] in known_regularizers() else "", k): v
                     for k, v in table_rows(section).items()})
    keys = [("", *k) for k in schema_keys(Config)]
    for name in known_regularizers():
        entry = get_method(name)
        keys += [(name, *k) for k in schema_keys(entry.cls.Params, "method.")
                 if k[0].removeprefix("method.") not in entry.fixed]
    assert len(keys) > 150 and len(rows) == len(keys)
    for method, key, default, rng in keys:
        assert (method, key) in rows, (method, key)
        _, kind, shown_default, shown_range, meaning = rows[method, key]
        if default is not None and not dataclasses.is_dataclass(default) and not isinstance(default, list):
            assert shown_default == (str(default).lower() if isinstance(default, bool) else str(default)), key
        elif default is None:
            assert shown_default in ("null", "required", "(a section)"), key
        assert shown_range == (rng or ""), key
        assert kind and len(meaning) >= 12, (key, meaning)  # a meaning, not an empty cell
    assert rows["uot", "method.source_head"][1:3] == ["one of 'all', 'selected'", "all"]
    assert rows["adarand", "method.alpha"][2] == "0.5" and rows["core_tuning", "method.alpha"][2] == "1.0"
    assert rows["", "data.batch_size"][1:4] == ["an integer", "64", ">= 1"]


def test_the_command_reference_is_what_each_parser_prints(site, monkeypatch):
    text = page_text(site, "reference/cli")
    monkeypatch.setenv("COLUMNS", "100")
    for prog, module in COMMANDS.items():
        printed = importlib.import_module(module).build_parser().format_help()
        assert printed.startswith(f"usage: {prog}")
        for line in printed.splitlines():
            assert line.strip() in text, (prog, line)


def test_a_broken_link_fails_the_build(tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "docs", copy / "docs")
    for name in ("mkdocs.yml", "README.md"):
        shutil.copy(REPO / name, copy / name)
    shutil.copytree(REPO / "benchmarks", copy / "benchmarks", ignore=shutil.ignore_patterns("*.py"))
    page = copy / "docs" / "guides" / "studies.md"
    page.write_text(page.read_text() + "\nSee [the old page](../concepts/gone.md).\n")
    done = build(copy / "mkdocs.yml", tmp_path / "site")
    assert done.returncode != 0
    assert re.search(r"guides/studies.md' contains a link '../concepts/gone.md', but the target .* is not found among "
                     r"documentation files", done.stderr)


def test_the_readme_is_a_landing_page_with_the_two_commands():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    for command in ("python3 -m venv .venv && . .venv/bin/activate && pip install -e . && python run.py "
                    "yaml/demo_adarand.yaml",
                    "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]' && python -m pytest -q"):
        assert f"```bash\n{command}\n```" in text
    ci = (REPO / ".ci" / "run").read_text()
    assert "pip install -e '.[test]' && python -m pytest -q" in ci
    for target in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (REPO / target).is_file(), target


def test_the_runnable_blocks_of_the_pages_are_one_text():
    """A block marked runnable that two pages show (the README's loop, its guide's) is the same code."""
    from test_readme_example import marked_blocks

    seen = marked_blocks()
    assert {"example-plain-loop", "example-lightning", "example-regularizer", "example-plugin"} <= set(seen)
    for name, copies in seen.items():
        assert len({code for _, code in copies}) == 1, (name, [page for page, _ in copies])
    assert len(seen["example-plain-loop"]) == 2  # the README and the guide


def find_chromium():
    import tensorboard_view as view

    return view.find_chromium()


@pytest.mark.skipif(find_chromium() is None, reason="no Chromium (apt install chromium, or $ADARAND_CHROMIUM)")
def test_a_page_opens_rendered_in_chromium(site, tmp_path):
    """The methods page from the built files, in headless Chromium: the theme's navigation, the page's
    title and its methods table are drawn, and the screenshot is a page, not an error or a blank."""
    import tensorboard_view as view

    png = tmp_path / "methods.png"
    with view.browser_page(find_chromium()) as page:
        page.goto((site / "concepts" / "methods" / "index.html").as_uri())
        page.wait_for_selector("table", timeout=30_000)
        title = page.locator("article h1").first.inner_text()
        nav = page.locator("nav.md-nav--primary").first.inner_text()
        cells = page.locator("article table td code").all_inner_texts()
        styled = page.evaluate("getComputedStyle(document.querySelector('header.md-header')).position")
        page.screenshot(path=str(png))
    assert title.strip().startswith("Methods")
    assert "Getting started" in nav and "Config keys" in nav
    assert {"adarand", "finetune", "uot"} <= set(cells)
    assert styled in ("sticky", "fixed")  # the theme's stylesheet loaded from the built files
    image = np.asarray(Image.open(png).convert("RGB"))
    assert image.shape == (view.VIEWPORT["height"], view.VIEWPORT["width"], 3)
    colours = (image[..., 0].astype(np.int32) << 16) | (image[..., 1].astype(np.int32) << 8) | image[..., 2]
    assert len(np.unique(colours)) > 50
    header = image[:48]  # Material's coloured header bar across the top
    assert (header.std(axis=(0, 1)) < 60).all() and header.mean() < 200
