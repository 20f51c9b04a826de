"""MkDocs hook: the references that cannot drift, generated at build time.

* ``reference/config.md``: every config key, with its type, default, accepted range and meaning,
  walked from the schema (``adarand.core.config.Config`` and each method's parameters); the meaning
  is the comment the schema's source gives the field.
* ``reference/cli.md``: every command's options, from its argument parser (``build_parser``).
* ``index.md``: the README.
* ``benchmarks.md`` takes in ``benchmarks/README.md``.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import io
import os
import re
import textwrap
import tokenize
import typing
from pathlib import Path

from mkdocs.structure.files import File

COMMANDS = [("adarand-run", "adarand.run"), ("adarand-sweep", "adarand.experiments.sweep"),
            ("adarand-table", "adarand.experiments.report"), ("adarand-plot", "adarand.experiments.plots"),
            ("adarand-tune", "adarand.experiments.tune"), ("adarand-eval", "adarand.experiments.evaluation"),
            ("adarand-export", "adarand.experiments.export")]
SECTIONS = {"data": "the dataset, its split and transforms", "model": "the backbone and its weights",
            "optim": "the optimizer and the learning-rate schedule", "train": "the training loop",
            "diagnostics": "the feature diagnostics of Figure 2", "logging": "TensorBoard, MLflow and W&B",
            "detection": "the detector (``task: detection``)", "method": "the method and its parameters"}


def field_comments(cls: type) -> dict[str, str]:
    """{field name: its comment}: the comment lines right above the field and the one after it."""
    source = textwrap.dedent(inspect.getsource(cls))
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    lines = source.splitlines()
    out = {}
    for node in ast.parse(source).body[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            above, n = [], node.lineno - 1
            while n >= 1 and lines[n - 1].strip().startswith("#"):
                above.insert(0, comments[n])
                n -= 1
            after = [comments[i] for i in range(node.lineno, node.end_lineno + 1) if i in comments]
            out[node.target.id] = " ".join(above + after)
    return out


def default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        if dataclasses.is_dataclass(value):
            return "(a section)"
    else:
        return "**required**"
    return "null" if value is None else f"`{str(value).lower() if isinstance(value, bool) else value}`"


def rows(cls: type, prefix: str):
    """(dotted key, type, default, range, meaning) for every key of ``cls``, nested sections walked."""
    from adarand.core.schema import describe, yaml_key

    hints, comments = typing.get_type_hints(cls), {}
    for klass in reversed(cls.__mro__):  # a subclass's comment wins over its base's
        if dataclasses.is_dataclass(klass):
            comments.update(field_comments(klass))
    for f in dataclasses.fields(cls):
        if not f.init or f.name == "params":
            continue
        key, tp = f"{prefix}{yaml_key(f)}", hints[f.name]
        inner = typing.get_args(tp)[0] if typing.get_origin(tp) is list else None
        if dataclasses.is_dataclass(tp):
            yield from rows(tp, key + ".")
        elif inner is not None and dataclasses.is_dataclass(inner):
            yield key, "a list of mappings", default_text(f), "", comments.get(f.name, "")
            yield from rows(inner, key + "[].")
        else:
            yield key, describe(tp), default_text(f), f.metadata.get("range", ""), comments.get(f.name, "")


def table(items) -> str:
    out = ["| key | type | default | range | meaning |", "|---|---|---|---|---|"]
    for key, tp, default, rng, meaning in items:
        meaning = meaning.replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
        out.append(f"| `{key}` | {tp} | {default} | {rng} | {meaning} |".replace("\n", " "))
    return "\n".join(out)


def config_reference() -> str:
    from adarand.core.config import Config
    from adarand.handlers.registry import describe_method, get_method, known_regularizers

    parts = ["# Config keys", "",
             "Every key a config file or a `key.path=value` override takes, generated from the schema when "
             "the site is built: its type, its default (a key without one is required), the values it accepts "
             "and what it sets. A wrong type, a value out of range or an unknown key stops a run before it "
             "starts, with one line naming the file and the key.", ""]
    top = [r for r in rows(Config, "") if "." not in r[0]]
    parts += ["## Top level", "", table(top), ""]
    for section, what in SECTIONS.items():
        parts += [f"## `{section}`: {what}", "", table(r for r in rows(Config, "") if r[0].startswith(section + ".")), ""]
    parts += ["## Method parameters", "",
              "`method.name` selects the method; its parameters are `method.<key>`.", ""]
    for name in known_regularizers():
        entry = get_method(name)
        fixed = set(entry.fixed)
        items = [r for r in rows(entry.cls.Params, "method.") if r[0].removeprefix("method.") not in fixed]
        parts += [f"### `{name}`", "", describe_method(name) + ".", ""]
        parts += [table(items) if items else "No parameters.", ""]
    return "\n".join(parts)


def cli_reference() -> str:
    parts = ["# Commands", "",
             "Every command and its options, generated from the commands' argument parsers when the site is "
             "built: what `COMMAND --help` prints.", ""]
    width = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps at the terminal's width: the same page on every machine
    try:
        for prog, module in COMMANDS:
            parser = importlib.import_module(module).build_parser()
            parts += [f"## `{prog}`", "", f"```\n{parser.format_help().rstrip()}\n```", ""]
    finally:
        if width is None:
            os.environ.pop("COLUMNS")
        else:
            os.environ["COLUMNS"] = width
    return "\n".join(parts)


def home_page(config) -> str:
    """The README, its links into ``docs/`` made links within the site: the landing page and the
    site's home are one text."""
    readme = (Path(config["config_file_path"]).parent / "README.md").read_text()
    return readme.replace("](docs/", "](")


def on_files(files, config):
    for path, content in (("reference/config.md", config_reference()), ("reference/cli.md", cli_reference()),
                          ("index.md", home_page(config))):
        files.append(File.generated(config, path, content=content))
    return files


INCLUDE = "<!-- include benchmarks/README.md -->"


def on_page_markdown(markdown, page, config, files):
    """``benchmarks.md`` carries the benchmark folder's README (its title dropped, its headings one
    level down), read when the site is built."""
    if INCLUDE not in markdown:
        return markdown
    readme = (Path(config["config_file_path"]).parent / "benchmarks" / "README.md").read_text()
    body = readme.split("\n", 1)[1] if readme.startswith("# ") else readme
    body = re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", body, flags=re.M)
    return markdown.replace(INCLUDE, "## What each script measures\n" + body)
