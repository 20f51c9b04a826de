"""Screenshots of TensorBoard on finished runs, taken in headless Chromium, and a check that what a
reader looks for is on them:

- ``diagnostics.png``: the Time Series tab filtered to ``diagnostics/``, a card for each Figure 2
  diagnostic;
- ``scalars.png``: the Scalars tab filtered to ``diagnostics/``, each card's description naming
  its x axis (epoch);
- ``hparams.png``: the HParams table, a row per run, with the selected model's validation and test
  accuracy, and the method and the seed where they differ between runs, among its shown columns;
- ``projector.png``: the Projector on the training features of the run it opens with, in its PCA
  view, with the points and dimension that run wrote, coloured by label with a legend that counts
  each label as the run's metadata does.

    python tests/tensorboard_view.py LOGDIR --out DIR [--chromium PATH]

LOGDIR is a run folder or a folder of runs (a sweep's root). It needs Playwright
(``pip install playwright``) and a Chromium binary (Debian: ``apt install chromium``; found on the
PATH as chromium, chromium-browser, google-chrome, or given by --chromium or $ADARAND_CHROMIUM).
Playwright drives that binary; its own browser download is not used. Exit 1 with the problems
listed when a check fails.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

DIAGNOSTICS = ("diagnostics/feature_norm", "diagnostics/grad_norm", "diagnostics/feature_entropy",
               "diagnostics/mutual_info")
HPARAMS_METRICS = ("accuracy/best_val", "accuracy/test")
HPARAMS_TELLING = ("method", "seed")  # shown as method.name and seed when they differ between runs
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
# headless without a GPU (WebGL in software, for the projector), and no calls home: this machine's
# network may be closed
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync")
VIEWPORT = {"width": 1600, "height": 1000}
WIDE_VIEWPORT = {"width": 2400, "height": 1000}
TALL_VIEWPORT = {"width": 1600, "height": 1400}
WAIT_S = 60
# requests to the local server, never through a proxy (urlopen's shared opener keeps the proxies of
# the environment it was first built in)
LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# the text under an element, through shadow roots (TensorBoard's Polymer dashboards), without
# styles and scripts
DEEP_TEXT_JS = """(root) => {
  const out = [];
  const walk = (n) => {
    if (n.nodeType === Node.TEXT_NODE) { out.push(n.textContent.trim()); return; }
    if (n.nodeName === 'STYLE' || n.nodeName === 'SCRIPT') return;
    if (n.shadowRoot) walk(n.shadowRoot);
    for (const c of n.childNodes) walk(c);
  };
  walk(root || document.body);
  return out.filter(Boolean).join('\\n');
}"""

# the first element of a tag name, searched through shadow roots
FIND_DEEP_JS = """(tag) => {
  const find = (n) => {
    if (n.nodeName === tag.toUpperCase()) return n;
    for (const c of [...(n.shadowRoot ? [n.shadowRoot] : []), ...n.children]) {
      const hit = find(c);
      if (hit) return hit;
    }
    return null;
  };
  return find(document.body);
}"""


def find_chromium(given: str | None = None) -> str | None:
    """The Chromium binary: ``given``, else $ADARAND_CHROMIUM, else the first of CHROMIUM_NAMES on
    the PATH; None when there is none."""
    for candidate in (given, os.environ.get("ADARAND_CHROMIUM")):
        if candidate:
            return candidate
    return next((shutil.which(name) for name in CHROMIUM_NAMES if shutil.which(name)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def tensorboard(logdir: Path, tries: int = 3):
    """A TensorBoard server on LOGDIR, on a free local port, with every event file read before it
    answers (one blocking load, no reloads); yields its address. A port found free can be taken
    before TensorBoard binds it: then it starts again on another, up to ``tries`` times."""
    for attempt in range(tries):
        port = free_port()
        log = tempfile.TemporaryFile("w+")
        proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir),
                                 "--host", "127.0.0.1", "--port", str(port), "--load_fast", "false",
                                 "--reload_task", "blocking", "--reload_interval", "0"],
                                stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            url = wait_until_up(proc, port, log)
        except PortTaken:
            log.close()
            if attempt == tries - 1:
                raise RuntimeError(f"tensorboard found no free port in {tries} tries") from None
            continue
        except BaseException:
            proc.terminate()
            proc.wait(timeout=30)
            log.close()
            raise
        break
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


class PortTaken(Exception):
    pass


def wait_until_up(proc, port: int, log) -> str:
    """The server's address once it answers; PortTaken if it exited because the port was in use."""
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + WAIT_S
    while True:
        if proc.poll() is not None:
            output = tail(log)
            if "already in use" in output.lower():
                raise PortTaken(port)
            raise RuntimeError(f"tensorboard exited with {proc.returncode}: {output}")
        try:
            LOOPBACK.open(url + "/data/plugins_listing", timeout=5).read()
            return url
        except OSError as e:
            if time.time() > deadline:
                raise RuntimeError(f"tensorboard did not answer on {url} within {WAIT_S} s ({e}); "
                                   f"its output: {tail(log)}") from None
            time.sleep(0.5)


def tail(log) -> str:
    """The last lines a process wrote to the file ``log``."""
    log.flush()
    log.seek(0)
    return log.read()[-3000:]


def deep_text(frame, tag: str | None = None) -> str:
    """The text of the first ``tag`` element of ``frame`` (the whole page when None)."""
    root = frame.evaluate_handle(FIND_DEEP_JS, tag) if tag else None
    if root is not None and root.json_value() is None:
        return ""
    return frame.evaluate(DEEP_TEXT_JS, root)


def flat_text(frame) -> str:
    """The whole frame's text on one line, single spaces between its pieces."""
    return " ".join(deep_text(frame).split())


def wait_for(page, condition, what: str, timeout_s: float = WAIT_S):
    """Poll ``condition()`` until it is true; returns its value, or raises naming ``what``. The
    page's own wait lets the browser's events (new frames, answers) in between."""
    deadline = time.time() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.time() > deadline:
            raise TimeoutError(f"{what} not seen within {timeout_s:.0f} s")
        page.wait_for_timeout(500)


def check(page, view: str, condition, what: str) -> list[str]:
    """No problem when ``condition()`` comes true in time; else the one found, named by its view."""
    try:
        wait_for(page, condition, what)
        return []
    except TimeoutError as e:
        return [f"{view}: {e}"]


def settle_and_screenshot(page, png: Path) -> None:
    """The screenshot, a second after what was checked appeared (charts draw, points recolour
    then); the page back to the usual viewport."""
    page.wait_for_timeout(1000)
    page.screenshot(path=str(png))
    page.set_viewport_size(VIEWPORT)


def view_diagnostics(page, url: str, png: Path) -> list[str]:
    """The Time Series tab, filtered to the diagnostics: a card titled for each one."""
    page.set_viewport_size(TALL_VIEWPORT)  # room for every card
    page.goto(url + "/#timeseries")
    search = page.get_by_role("combobox", name="Filter tags (regex)")
    search.wait_for(timeout=WAIT_S * 1000)
    search.fill("^diagnostics/")
    search.press("Escape")  # close the list of matching tags
    # a card's title is its tag, in two parts (group and name)
    problems = check(page, "time series", lambda: all(tag in deep_text(page, "metrics-main-view").replace("\n", "")
                                                      for tag in DIAGNOSTICS), "the diagnostics cards")
    settle_and_screenshot(page, png)
    return problems


def view_axis_labels(page, url: str, png: Path) -> list[str]:
    """The Scalars tab, filtered to the diagnostics: each card carries its description, which
    names its x axis (epoch)."""
    page.set_viewport_size(TALL_VIEWPORT)
    page.goto(url + "/#scalars&tagFilter=%5Ediagnostics%2F")
    problems = check(page, "scalars", lambda: all(f"{tag} x axis: epoch. " in flat_text(page) for tag in DIAGNOSTICS),
                     "the diagnostics cards, each labelled 'x axis: epoch'")
    settle_and_screenshot(page, png)
    return problems


def view_hparams(page, url: str, png: Path, runs: list[dict]) -> list[str]:
    """The HParams table: every run's method and accuracies, and the columns they are in."""
    page.set_viewport_size(WIDE_VIEWPORT)  # room for every shown column
    page.goto(url + "/#hparams")
    # TensorBoard shows first the settings that differ between the runs
    differ = [key for key in HPARAMS_TELLING if len({r[key] for r in runs}) > 1]
    wanted = set(HPARAMS_METRICS) | {"method.name" if key == "method" else key for key in differ}
    wanted |= {r["method"] for r in runs}
    problems = []
    try:
        cells = wait_for(page, lambda: (c := deep_text(page, "tf-hparams-table-view").split("\n")) and wanted <= set(c) and c,
                         "the HParams table")
    except TimeoutError as e:
        cells = deep_text(page, "tf-hparams-table-view").split("\n")
        problems.append(f"hparams: {e}; missing: {', '.join(sorted(wanted - set(cells)))}")
    rows = sum(1 for c in cells if c in {r["trial"] for r in runs})
    if rows != len(runs):
        problems.append(f"hparams: {rows} rows, expected {len(runs)}")
    # the table prints 5 significant digits
    numbers = [float(c) for c in cells if c.replace(".", "", 1).isdigit()]
    for r in runs:
        for key in ("val_accuracy", "test_accuracy"):
            if not any(abs(x - r[key]) <= 1e-4 for x in numbers):
                problems.append(f"hparams: {r['trial']}'s {key} {r[key]:.5f} not in the table")
    settle_and_screenshot(page, png)
    return problems


def view_projector(page, url: str, png: Path, runs: list[dict]) -> list[str]:
    """The Projector on the run it opens with: the points and dimension of a run's embedding, the
    PCA view, and, coloured by label, a legend that counts each label as a run's metadata does."""
    from playwright.sync_api import Error as PlaywrightError

    page.goto(url + "/#projector")
    problems = []

    def shown(frame) -> str:  # 'N | Dimension: D', or '' before the header is there
        text = flat_text(frame)
        return " ".join(text.split("Points: ")[1].split()[:3]) if "Points: " in text else ""

    embeddings = {f"{r['points']} Dimension: {r['dimension']}" for r in runs}
    legends = [[f"{label} {count}" for label, count in sorted(r["labels"].items())] for r in runs]
    try:
        # the projector is a page in a frame in a frame; its labels and values are separate texts
        frame = wait_for(page, lambda: next((f for f in page.frames if shown(f) in embeddings), None),
                         "the points of a run's embedding")
        wait_for(page, lambda: "Total variance described" in flat_text(frame), "the PCA view")
        frame.get_by_label("Color by").first.click()
        frame.get_by_role("option").filter(has_text="label").first.click()
        wait_for(page, lambda: any(all(entry in flat_text(frame) for entry in legend) for legend in legends),
                 "a legend counting a run's labels")
    except (TimeoutError, PlaywrightError) as e:
        seen = [shown(f) for f in page.frames if shown(f)]
        problems.append(f"projector: {type(e).__name__}: {str(e).splitlines()[0]} (shown: Points: {seen})")
    settle_and_screenshot(page, png)  # the points recoloured
    return problems


def finished_runs(logdir: Path) -> list[dict]:
    """Every finished run under LOGDIR: its trial name (the folder relative to LOGDIR, as the
    HParams table names it), method, seed, accuracies, and its embedding's size and label counts."""
    runs = []
    for results in sorted(logdir.rglob("results.json")):
        folder = results.parent
        res = json.loads(results.read_text())
        method = yaml.safe_load((folder / "config.yaml").read_text())["method"]["name"]
        tsv = next(folder.glob("*/train_features/tensors.tsv"), None)
        rows = tsv.read_text().splitlines() if tsv else []
        labels = (tsv.parent / "metadata.tsv").read_text().splitlines() if tsv else []
        trial = folder.relative_to(logdir).as_posix()
        runs.append({"trial": trial, "method": method, "seed": res["seed"],
                     "val_accuracy": res["val_accuracy"], "test_accuracy": res["test_accuracy"],
                     "points": len(rows), "dimension": len(rows[0].split("\t")) if rows else 0,
                     "labels": collections.Counter(labels)})
    return runs


@contextlib.contextmanager
def browser_page(chromium: str):
    """A page of a headless Chromium (the binary at ``chromium``), driven by Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=list(CHROMIUM_ARGS))
        try:
            yield browser.new_page(viewport=VIEWPORT)
        finally:
            browser.close()


def screenshot_tensorboard(logdir: str | Path, out: str | Path, chromium: str | None = None) -> list[str]:
    """Screenshots of LOGDIR's TensorBoard in OUT (diagnostics.png, scalars.png, hparams.png,
    projector.png); returns the problems found (none when everything is there)."""
    logdir, out = Path(logdir).resolve(), Path(out)
    runs = finished_runs(logdir)
    if not runs:
        return [f"{logdir}: no finished run (results.json) under it"]
    binary = find_chromium(chromium)
    if binary is None:
        return ["no Chromium: install one (apt install chromium) or pass --chromium PATH"]
    with tensorboard(logdir) as url, browser_page(binary) as page:
        return every_view(page, url, out, runs)


def every_view(page, url: str, out: Path, runs: list[dict]) -> list[str]:
    """The four screenshots in OUT, and the problems found on them."""
    out.mkdir(parents=True, exist_ok=True)
    return (view_diagnostics(page, url, out / "diagnostics.png")
            + view_axis_labels(page, url, out / "scalars.png")
            + view_hparams(page, url, out / "hparams.png", runs)
            + view_projector(page, url, out / "projector.png", runs))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("logdir", help="a run folder, or a folder of runs")
    p.add_argument("--out", required=True, help="folder for the screenshots")
    p.add_argument("--chromium", help="the Chromium binary (default: $ADARAND_CHROMIUM, else on the PATH)")
    args = p.parse_args(argv)
    problems = screenshot_tensorboard(args.logdir, args.out, args.chromium)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not problems:
        print(f"diagnostics (labelled by axis), HParams table and embedding shown: {Path(args.out) / '*.png'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
