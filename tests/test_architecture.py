"""The folders show the architecture and the packages depend one way; the registry is complete
on import; moved modules keep their old import path for one release.

    run.py -> experiments -> engine -> tasks, handlers -> methods -> models, datasets -> core

``python tests/test_architecture.py`` prints the import graph between the packages.
"""

import ast
import sys
import warnings
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ["core", "models", "datasets", "methods", "handlers", "tasks", "engine", "experiments"]
# what each package may import (besides itself)
BELOW_METHODS = {"core", "models", "datasets"}
ALLOWED = {"core": set(), "models": {"core"}, "datasets": {"core"}, "methods": {"core"},
           "handlers": BELOW_METHODS | {"methods"}, "tasks": BELOW_METHODS,
           "engine": BELOW_METHODS | {"methods", "handlers", "tasks"},
           "experiments": BELOW_METHODS | {"methods", "handlers", "tasks", "engine"},
           "run.py": {"core", "engine", "experiments"}}
MOST_MODULES = 16  # per package folder (its __init__.py included)


def package_of(path: Path) -> str:
    rel = path.relative_to(REPO)
    return "run.py" if rel.parts == ("run.py",) else rel.parts[0]


def imported_packages(path: Path):
    """(package imported, line, inside a function) for every import of a project module in ``path``."""
    tree = ast.parse(path.read_text())
    here = path.relative_to(REPO).parts[:-1]
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    nested = {id(node) for f in functions for node in ast.walk(f) if node is not f}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's folder
                base = list(here[:len(here) - node.level + 1])
                target = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.startswith("adarand."):
                target = node.module.split(".")[1:]
            else:
                continue
            if target and target[0] in PACKAGES:
                yield target[0], node.lineno, id(node) in nested
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "adarand" and len(parts) > 1 and parts[1] in PACKAGES:
                    yield parts[1], node.lineno, id(node) in nested


def sources():
    files = [REPO / "run.py"]
    for package in PACKAGES:
        files += sorted((REPO / package).rglob("*.py"))
    return files


def graph() -> dict[str, set[str]]:
    edges = defaultdict(set)
    for f in sources():
        for target, _, _ in imported_packages(f):
            if target != package_of(f):
                edges[package_of(f)].add(target)
    return edges


def test_packages_depend_one_way():
    bad = [(str(f.relative_to(REPO)), line, target) for f in sources() for target, line, _ in imported_packages(f)
           if target != package_of(f) and target not in ALLOWED[package_of(f)]]
    assert bad == []
    edges = graph()
    for a, targets in edges.items():
        for b in targets:
            assert a not in edges.get(b, set()), (a, b)  # no package imports one that imports it back


def test_no_package_folder_holds_more_than_about_fifteen_modules():
    crowded = {str(d.relative_to(REPO)): n for d in REPO.rglob("__init__.py") if ".venv" not in d.parts
               and (n := len(list(d.parent.glob("*.py")))) > MOST_MODULES}
    assert crowded == {}


def test_every_package_folder_is_installed():
    """A folder of modules missing from setup.cfg's packages would be left out of the wheel."""
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    found = {"adarand" + "".join("." + p for p in d.parent.relative_to(REPO).parts) for d in REPO.rglob("__init__.py")
             if not {".venv", "tests", "benchmarks", "docs"} & set(d.parts)}
    assert found == listed


@pytest.mark.parametrize("old,new", [("adarand.engine.sweep", "adarand.experiments.sweep"),
                                     ("adarand.engine.task", "adarand.tasks.task"),
                                     ("adarand.engine.tasks", "adarand.tasks"),
                                     ("adarand.engine.trackers", "adarand.engine.logs.trackers")])
def test_a_moved_module_keeps_its_old_path_with_a_deprecation_warning(old, new):
    import importlib

    module = importlib.import_module(new)
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} has moved to {new}; the old name is removed in 0.3"):
        assert importlib.import_module(old) is module
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        importlib.import_module(new)  # the new path warns nothing


def test_every_old_path_of_a_moved_module_answers():
    import importlib

    from adarand.engine import MOVED
    for old, new in MOVED.items():
        sys.modules.pop(old, None)
        with pytest.warns(DeprecationWarning):
            assert importlib.import_module(old) is importlib.import_module(new)


def test_no_project_import_inside_a_function():
    """Except in run.py, the command line, which imports what a command needs when it runs it (so
    that ``--help`` answers without loading torch)."""
    inside = [(str(f.relative_to(REPO)), line) for f in sources() for _, line, nested in imported_packages(f)
              if nested and package_of(f) != "run.py"]
    assert inside == []


def test_no_private_torch_name_anywhere():
    """No call or import of a torch name with a leading underscore (torch._foreach_sub, torch._C, ...)."""
    import re

    private = re.compile(r"\b(torch|nn|F)(\.[A-Za-z]\w*)*\.(_[A-Za-z]\w*)")
    files = sources() + sorted((REPO / "benchmarks").glob("*.py")) + sorted((REPO / "tests").glob("*.py"))
    found = []
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.Attribute, ast.ImportFrom, ast.Import)):
                text = ast.unparse(node) if not isinstance(node, (ast.ImportFrom, ast.Import)) else \
                    " ".join([getattr(node, "module", None) or ""] + [a.name for a in node.names])
                if private.search(text.replace(" ", ".")) or (isinstance(node, ast.ImportFrom) and
                                                             (node.module or "").startswith("torch") and
                                                             any(a.name.startswith("_") for a in node.names)):
                    found.append((str(f.relative_to(REPO)), node.lineno, text))
    assert found == []


def test_the_methods_import_without_ignite():
    """``adarand.methods`` is for any training loop: importing it loads no Ignite."""
    import subprocess

    code = "import sys, adarand.methods; print('ignite' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_the_registry_is_complete_once_handlers_is_imported():
    import subprocess

    code = ("import adarand.handlers.registry as r; import pkgutil, adarand.handlers as h; "
            "mods = [m.name for m in pkgutil.iter_modules(h.__path__)]; "
            "print(len(r.known_regularizers()), all(f'adarand.handlers.{m}' in __import__('sys').modules for m in mods))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    count, complete = out.stdout.split()
    assert int(count) == 18 and complete == "True"


if __name__ == "__main__":
    for package, targets in sorted(graph().items(), key=lambda kv: (["run.py", *PACKAGES[::-1]].index(kv[0]))):
        print(f"{package:9s} -> {', '.join(sorted(targets, key=PACKAGES.index))}")


def test_the_commands_that_train_nothing_load_only_what_they_need():
    """``--help`` and ``--list`` load no torch; a config of a torchvision backbone, printed, no timm
    (their times: ``benchmarks/startup.py``)."""
    import subprocess

    # one fresh interpreter, the commands one after another: what each adds to what the one before loaded
    probe = ("import contextlib, io, runpy, sys\n"
             "for args in (['--help'], ['--list'], ['cars_adarand', '--print-config']):\n"
             "    sys.argv = ['adarand-run', *args]\n"
             "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
             "        runpy.run_path({run!r}, run_name='__main__')\n"
             "    print(sorted(m for m in ('torch', 'torchvision', 'timm', 'ignite') if m in sys.modules))\n")
    r = subprocess.run([sys.executable, "-c", probe.format(run=str(REPO / "run.py"))], capture_output=True, text=True,
                       cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines() == ["[]", "[]", "['ignite', 'torch', 'torchvision']"]


def test_every_built_in_method_has_its_packaged_config():
    """--list names the methods by their packaged configs (methods/<name>.yaml) without importing
    them: the configs and the registry must agree."""
    from adarand.core.config import CONFIG_DIR
    from adarand.handlers.registry import known_regularizers, plugins

    shipped = {p.stem for p in (CONFIG_DIR / "methods").glob("*.yaml")}
    assert shipped == set(known_regularizers()) - set(plugins())
