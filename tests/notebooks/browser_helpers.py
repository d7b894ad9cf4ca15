"""Headless-Chromium checks for the HTML reports and for JupyterLab widgets (tests/test_browser.py).

Everything runs on loopback: the reports are served by a local HTTP server, JupyterLab listens
on a free 127.0.0.1 port with a token, and Chromium (Debian's package, driven by Playwright) is
started with its background networking off, because the network of CI and clusters is closed.
Install the browser with ``scripts/install_browser.sh`` (``make test`` calls it).

The checks return lists of problems instead of asserting, so that tests/test_browser.py can
show them all at once and so that the tests of these helpers can show a deliberately broken
report or slider callback being caught.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "reports" / "screenshots"

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser",
                       "/usr/bin/google-chrome")
# Without the background-networking flags Chromium keeps dialling Google services, which the
# closed network refuses; as root it needs --no-sandbox. Playwright adds --headless and a fresh
# profile (--user-data-dir) itself.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-default-apps"]
# The provenance the pipeline's index.html states, by element id.
INDEX_IDS = ("profile", "commit", "machine", "synthetic")


def chromium_executable() -> str | None:
    """Path of a Chromium to drive: $GEOFUSION_CHROMIUM, else Debian's package."""
    override = os.environ.get("GEOFUSION_CHROMIUM")
    if override:
        return override if Path(override).is_file() else None
    for candidate in CHROMIUM_CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    return shutil.which("chromium")


def unavailable_reason() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return ("Playwright is not installed: pip install -e '.[dev]' (or make test, which "
                "installs it)")
    if chromium_executable() is None:
        return ("no Chromium found (looked for $GEOFUSION_CHROMIUM and "
                f"{', '.join(CHROMIUM_CANDIDATES)}): run scripts/install_browser.sh as root "
                "(apt-get install chromium chromium-driver)")
    return None


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (Playwright ``Browser``) on the system executable."""
    from playwright.sync_api import sync_playwright

    executable = chromium_executable()
    if executable is None:
        raise RuntimeError(unavailable_reason())
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                             args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # The browser drops connections it no longer needs (a page closed mid-load).
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextlib.contextmanager
def serve_directory(root: str | os.PathLike) -> Iterator[str]:
    """Serve ``root`` over HTTP on a free loopback port; yield its base URL (ends with /)."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------------------------------
# Reports

@dataclass
class PageCheck:
    """What one page showed in the browser; ``problems`` is empty when it is fine."""

    url: str
    problems: list[str] = field(default_factory=list)
    images: int = 0
    formulas: int = 0
    widgets: int = 0
    links: list[str] = field(default_factory=list)
    screenshot: Path | None = None
    stated: dict[str, str] = field(default_factory=dict)  # index.html: text by element id


def _is_local(url: str, base: str) -> bool:
    scheme = urllib.parse.urlsplit(url).scheme
    return url.startswith(base) or scheme in ("data", "blob", "about")


# In the browser: each <img> decoded with a size, the outputs that hold an error, MathJax state.
_PAGE_FACTS = """() => {
  const images = [...document.images].map(img => ({
      src: img.currentSrc.slice(0, 80), complete: img.complete,
      width: img.naturalWidth, height: img.naturalHeight}));
  const outputs = [...document.querySelectorAll('.jp-OutputArea-output, .output_area')];
  const errors = outputs.map(o => o.innerText)
      .filter(t => /Traceback \\(most recent call last\\)/.test(t)
                   || /^\\s*-{20,}\\s*\\n\\s*\\w+(Error|Exception)\\b/m.test(t))
      .map(t => t.slice(0, 300));
  if (document.getElementById('papermill-error-cell')) errors.push('papermill error cell');
  const mathjax = window.MathJax && window.MathJax.Hub ? {
      version: window.MathJax.version,
      typeset: document.querySelectorAll('[id^="MathJax-Element-"][id$="-Frame"]').length,
      sources: document.querySelectorAll('script[type^="math/tex"]').length,
      errors: document.querySelectorAll('.MathJax_Error, merror').length} : null;
  const markdown = [...document.querySelectorAll('.jp-MarkdownOutput, .text_cell_render')]
      .map(m => m.innerText).join('\\n');
  return {images, errors, mathjax, markdown,
          widgets: document.querySelectorAll('.widget-slider, .widget-dropdown').length,
          links: [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'))};
}"""

# Raw LaTeX left in the rendered text: $...$ with a backslash command or ^/_ inside.
_RAW_LATEX = re.compile(r"\$[^$\n]*(\\[a-zA-Z]+|[\^_])[^$\n]*\$")


def _mathjax_done(page: Any, timeout_ms: int) -> bool:
    try:
        page.wait_for_function(
            "() => !window.MathJax || !window.MathJax.Hub || (window.MathJax.isReady && "
            "window.MathJax.Hub.queue.pending === 0 && !window.MathJax.Hub.queue.running)",
            timeout=timeout_ms)
    except Exception:  # noqa: BLE001 - Playwright's TimeoutError; reported as a problem
        return False
    return True


def check_report_page(page: Any, url: str, base: str, screenshot: Path | None = None,
                      expect_formulas: bool | None = None, timeout_ms: int = 30_000
                      ) -> PageCheck:
    """Open ``url`` in ``page`` and list what a reader would find broken.

    Problems: a request that failed or answered >= 400, any request outside ``base`` (a report
    must read offline), a JavaScript error, an image that did not decode or has no size, an
    output holding a traceback or papermill's error cell, formulas left as raw LaTeX or shown
    as MathJax errors. ``expect_formulas``: True demands typeset formulas, None demands them
    only when the page loads MathJax.
    """
    check = PageCheck(url)
    failures: list[str] = []
    # about:blank is no request (a frame some scripts create); everything else must load.
    page.on("requestfailed", lambda r: failures.append(f"request failed: {r.url[:120]} "
                                                       f"({r.failure})")
            if not r.url.startswith("about:") else None)
    page.on("response", lambda r: failures.append(f"HTTP {r.status}: {r.url[:120]}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
    page.on("request", lambda r: failures.append(f"request outside the report: {r.url[:120]}")
            if not _is_local(r.url, base) else None)
    page.on("pageerror", lambda e: failures.append(f"JavaScript error: {e}"))
    response = page.goto(url, wait_until="load", timeout=timeout_ms)
    if response is None or not response.ok:
        check.problems.append(f"{url} did not load ({response.status if response else 'none'})")
        return check
    mathjax_finished = _mathjax_done(page, timeout_ms)
    facts = page.evaluate(_PAGE_FACTS)
    check.images = len(facts["images"])
    check.widgets = facts["widgets"]
    check.links = facts["links"]
    for image in facts["images"]:
        if not image["complete"] or image["width"] == 0 or image["height"] == 0:
            check.problems.append(f"image did not decode: {image['src']} "
                                  f"({image['width']}x{image['height']})")
    check.problems += [f"error output: {text}" for text in facts["errors"]]
    mathjax = facts["mathjax"]
    if mathjax is not None and not mathjax_finished:
        check.problems.append("MathJax did not finish typesetting")
    if mathjax is not None:
        check.formulas = mathjax["typeset"]
        if mathjax["errors"]:
            check.problems.append(f"{mathjax['errors']} formulas show MathJax errors")
        if mathjax["sources"] and mathjax["typeset"] < mathjax["sources"]:
            check.problems.append(f"only {mathjax['typeset']} of {mathjax['sources']} formulas "
                                  "typeset")
    raw = _RAW_LATEX.findall(facts["markdown"])
    if raw:
        check.problems.append(f"{len(raw)} formulas left as raw LaTeX (MathJax missing?)")
    if expect_formulas and check.formulas == 0:
        check.problems.append("no typeset formula on a page that should have some")
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
        check.screenshot = screenshot
    check.problems += failures
    return check


def check_index(browser: Any, base: str, screenshot_dir: Path | None = None,
                expect_formulas: bool | None = None) -> dict[str, PageCheck]:
    """Open ``<base>index.html`` and every report it links; return a check per page.

    The index must state the run's provenance in elements with ids ``profile``, ``commit``,
    ``machine`` and ``synthetic``, each non-empty. Every relative link must resolve; linked
    ``.html`` pages are opened and checked like the index.
    """
    checks: dict[str, PageCheck] = {}
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    index = check_report_page(page, base + "index.html", base,
                              screenshot_dir / "index.png" if screenshot_dir else None)
    for element_id in INDEX_IDS:
        node = page.query_selector(f"#{element_id}")
        if node is None:
            index.problems.append(f"index.html has no element with id {element_id!r}")
        elif not node.inner_text().strip():
            index.problems.append(f"index.html element #{element_id} is empty")
        else:
            index.stated[element_id] = node.inner_text().strip()
    page.close()
    checks["index.html"] = index
    relative = [link for link in index.links
                if not urllib.parse.urlsplit(link).scheme and not link.startswith("#")]
    if not relative:
        index.problems.append("index.html links no report")
    for link in relative:
        target = urllib.parse.urljoin(base + "index.html", link)
        try:
            with urllib.request.urlopen(target, timeout=10) as answer:
                status = answer.status
        except urllib.error.HTTPError as error:
            status = error.code
        except urllib.error.URLError as error:
            status = f"unreachable ({error.reason})"
        if status != 200:
            index.problems.append(f"link {link} does not resolve: {status}")
            continue
        if link.endswith(".html"):
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            shot = screenshot_dir / (Path(link).stem + ".png") if screenshot_dir else None
            checks[link] = check_report_page(page, target, base, shot, expect_formulas)
            page.close()
    return checks


def problems(checks: dict[str, PageCheck]) -> list[str]:
    """All problems of ``check_index``'s pages, each prefixed by its page."""
    return [f"{name}: {problem}" for name, check in checks.items() for problem in check.problems]


# ------------------------------------------------------------------------------------------
# JupyterLab

# Every cell stays in the DOM (JupyterLab 4 otherwise renders only the cells in view), and no
# news or update check is fetched (the network is closed).
_LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false",
                                                      "checkForUpdates": False},
}


@dataclass
class JupyterLab:
    url: str
    token: str
    root: Path
    process: subprocess.Popen


@contextlib.contextmanager
def jupyterlab(root: str | os.PathLike, env: dict[str, str] | None = None,
               timeout_s: float = 90) -> Iterator[JupyterLab]:
    """JupyterLab from this interpreter's environment, serving ``root`` on loopback with a
    random token; stopped (kernels too) on exit."""
    token = base64.b32encode(os.urandom(15)).decode().lower()
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="jupyterlab-", suffix=".log", delete=False)
    # A private runtime dir and config: no user setting, workspace or running server leaks in.
    home = Path(tempfile.mkdtemp(prefix="jupyter-home-"))
    settings = home / "settings"
    for plugin, values in _LAB_SETTINGS.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    environment = {**os.environ, **(env or {}), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
                   "JUPYTER_CONFIG_DIR": str(home / "config"),
                   "JUPYTERLAB_SETTINGS_DIR": str(settings),
                   "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces")}
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
               f"--port={port}", "--port-retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={root}", "--ServerApp.disable_check_xsrf=False",
               "--LabApp.news_url=", "--LabApp.collaborative=False",
               "--LabApp.expose_app_in_browser=True", "--ServerApp.terminals_enabled=False"]
    if os.geteuid() == 0:  # CI runs as root; the server refuses to without this flag
        command.append("--allow-root")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment,
                               cwd=str(root))
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited ({process.returncode}): "
                                   f"{Path(log.name).read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}api/status?token={token}", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not answer within {timeout_s} s: "
                                       f"{Path(log.name).read_text()[-2000:]}") from None
                time.sleep(0.3)
        yield JupyterLab(url, token, Path(root), process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(home, ignore_errors=True)
        log.close()
        os.unlink(log.name)


def png_from_src(src: str) -> bytes:
    """The PNG bytes of an ``<img>`` whose ``src`` is a data URL (JupyterLab inline figures)."""
    prefix = "data:image/png;base64,"
    if not src.startswith(prefix):
        raise ValueError(f"expected an inline PNG figure, got src {src[:60]!r}")
    return base64.b64decode(src[len(prefix):])


def grey_share(png: bytes, grey: float = 0.8, tolerance: float = 0.02) -> float:
    """Fraction of a figure's pixels in the missing-data grey (matplotlib colour "0.8")."""
    import matplotlib.image as mpimg
    import numpy as np

    rgb = mpimg.imread(io.BytesIO(png), format="png")[..., :3]
    close = np.all(np.abs(rgb - grey) <= tolerance, axis=-1)
    return float(close.mean())


# In the browser (JupyterLab exposes its app as window.jupyterapp with expose_app_in_browser):
# the state of the current notebook's cells from the notebook model, so nothing depends on
# which cells are scrolled into view.
_NOTEBOOK_STATE = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  if (!panel || !panel.content || !panel.sessionContext) return null;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  const cells = panel.content.widgets.filter(c => c.model.type === 'code');
  return {
    kernel: kernel ? kernel.status : 'none',
    executed: cells.filter(c => c.model.executionCount !== null).length,
    cells: cells.length,
    errors: cells.flatMap(c => c.model.outputs.toJSON())
                 .filter(o => o.output_type === 'error')
                 .map(o => o.ename + ': ' + o.evalue),
  };
}"""


def open_notebook(page: Any, lab: JupyterLab, relative_path: str, timeout_ms: int = 60_000
                  ) -> None:
    """Open ``relative_path`` (below the server root) in JupyterLab and wait for its kernel."""
    # reset: start from an empty workspace, so that no notebook opened before stays in a tab
    # whose (hidden) widgets the checks would find.
    page.goto(f"{lab.url}lab/tree/{relative_path}?token={lab.token}&reset",
              timeout=timeout_ms)
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget "
                           "&& window.jupyterapp.shell.currentWidget.sessionContext "
                           "&& window.jupyterapp.shell.currentWidget.sessionContext.session "
                           "&& window.jupyterapp.shell.currentWidget.sessionContext.session"
                           ".kernel && window.jupyterapp.shell.currentWidget.sessionContext"
                           ".session.kernel.status === 'idle'", timeout=timeout_ms)


def run_all_cells(page: Any, timeout_ms: int = 300_000) -> dict[str, Any]:
    """Run every cell of the open notebook; return the final state (``errors`` lists any).

    Stops waiting at the first error output: JupyterLab's run-all stops there too.
    """
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function(
        f"() => {{ const s = ({_NOTEBOOK_STATE})(); return s && (s.errors.length > 0 || "
        "(s.executed === s.cells && s.kernel === 'idle')); }", timeout=timeout_ms,
        polling=250)
    return page.evaluate(_NOTEBOOK_STATE)


def execute_in_kernel(page: Any, code: str) -> None:
    """Run ``code`` in the open notebook's kernel (as an unseen cell); raise if it fails."""
    status = page.evaluate(
        "async (code) => { const panel = window.jupyterapp.shell.currentWidget; "
        "const future = panel.sessionContext.session.kernel.requestExecute({code}); "
        "const reply = await future.done; return reply.content.status; }", code)
    if status != "ok":
        raise RuntimeError(f"the kernel answered {status!r} to {code!r}")


def notebook_errors(page: Any) -> list[str]:
    """Error outputs of the open notebook's cells (``ename: evalue``)."""
    return list(page.evaluate(_NOTEBOOK_STATE)["errors"])


def _control(page: Any, kind: str, description: str) -> Any:
    control = page.locator(f".jupyter-widgets.{kind}").filter(
        has=page.locator(".widget-label", has_text=re.compile(f"^{re.escape(description)}$"))
    ).filter(visible=True)
    if control.count() != 1:
        raise LookupError(f"expected one {kind} labelled {description!r}, found "
                          f"{control.count()}")
    return control


def set_slider(page: Any, description: str, value: float) -> None:
    """Type ``value`` into the readout of the slider labelled ``description`` (as a user can)."""
    readout = _control(page, "widget-slider", description).locator(".widget-readout")
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(f"{value:g}")
    page.keyboard.press("Enter")


def slider_handle(page: Any, description: str) -> Any:
    """The draggable handle of the slider labelled ``description``: focus it and press arrow
    keys, Home or End to move a selection slider (whose readout cannot be typed into)."""
    label = page.locator(".widget-label", has_text=re.compile(f"^{re.escape(description)}$"))
    handle = page.locator(".widget-inline-hbox").filter(has=label).filter(visible=True) \
        .locator(".noUi-handle")
    if handle.count() != 1:
        raise LookupError(f"expected one slider handle labelled {description!r}, found "
                          f"{handle.count()}")
    return handle


def slider_value(page: Any, description: str) -> float:
    """The value the slider labelled ``description`` shows in its readout."""
    return float(_control(page, "widget-slider", description).locator(".widget-readout")
                 .inner_text())


def select_option(page: Any, description: str, option: str) -> None:
    """Choose ``option`` in the drop-down labelled ``description``."""
    _control(page, "widget-dropdown", description).locator("select").select_option(option)


_LAST_WIDGET_FIGURE = """() => { const imgs = [...document.querySelectorAll(
    '.widget-interact .jp-OutputArea-output img')];
    return imgs.length ? imgs[imgs.length - 1].src : null; }"""


def current_widget_figure(page: Any) -> str | None:
    """The ``src`` of the figure the interactive widget shows now (None: none yet)."""
    return page.evaluate(_LAST_WIDGET_FIGURE)


def widget_figure(page: Any, previous: str | None, timeout_ms: int = 60_000) -> str:
    """The ``src`` of the figure inside the interactive widget's output, once it differs from
    ``previous`` (None: once there is one). Raises TimeoutError if it never changes."""
    script = (f"(previous) => {{ const src = ({_LAST_WIDGET_FIGURE})(); "
              "return src && src !== previous ? src : null; }")
    try:
        handle = page.wait_for_function(script, arg=previous, timeout=timeout_ms, polling=200)
    except Exception as error:  # noqa: BLE001 - Playwright's TimeoutError
        raise TimeoutError("the widget's figure did not change after moving a control") \
            from error
    return str(handle.json_value())


def widget_output_errors(page: Any) -> list[str]:
    """Tracebacks shown inside interactive widgets (a failing callback prints there)."""
    texts = page.evaluate("() => [...document.querySelectorAll('.widget-interact "
                          ".jp-OutputArea-output')].map(o => o.innerText)")
    # The last lines of a traceback name the exception.
    return [t[-300:] for t in texts if "Traceback" in t or re.search(r"\w+Error\b", t)]


def mask_transitions(png: bytes, grey: float = 0.8, tolerance: float = 0.02) -> float:
    """Grey/non-grey changes along rows per grey pixel: high for scattered pixel masks, low for
    contiguous patches or swaths of missing data."""
    import matplotlib.image as mpimg
    import numpy as np

    rgb = mpimg.imread(io.BytesIO(png), format="png")[..., :3]
    close = np.all(np.abs(rgb - grey) <= tolerance, axis=-1)
    changes = np.count_nonzero(close[:, 1:] != close[:, :-1])
    return float(changes / max(int(close.sum()), 1))


@dataclass
class ExplorerCheck:
    """Figures drawn by an explorer as its controls moved; ``problems`` empty when it follows."""

    problems: list[str] = field(default_factory=list)
    grey: dict[str, float] = field(default_factory=dict)
    transitions: dict[str, float] = field(default_factory=dict)


def check_missing_fraction_explorer(page: Any, slider: str = "missing",
                                    kind_control: str | None = "mask kind",
                                    ratios: tuple[float, float, float] = (0.0, 0.9, 0.5),
                                    kinds: tuple[str, str] = ("pixel", "patch"),
                                    slider_is_observed: bool = False,
                                    timeout_ms: int = 60_000,
                                    screenshot: Path | None = None) -> ExplorerCheck:
    """Move the missing-fraction slider and the mask-kind control of the open notebook's
    explorer; check that its figure follows.

    Missing points are drawn in grey ("0.8"), so the figure's grey share must grow with the
    missing fraction ``m``, in proportion: ``(g(m2) - g(m0)) / (g(m1) - g(m0))`` near
    ``(m2 - m0) / (m1 - m0)`` for the three slider positions ``ratios`` sorted by ``m``.
    Switching ``kind_control`` from scattered pixels to contiguous patches at the same
    fraction must keep the grey share and cut the grey/non-grey transitions per grey pixel
    (checked at the last of ``ratios``; ``kind_control=None`` skips this). Any traceback
    inside the widget is a problem. ``slider_is_observed``: the slider sets the observed
    fraction (``m = 1 - value``), as an assimilation explorer's would.
    """
    check = ExplorerCheck()
    figures: dict[float | str, str] = {}
    previous = current_widget_figure(page)
    if kind_control is not None and _control(page, "widget-dropdown", kind_control).locator(
            "select").input_value() != kinds[0]:
        select_option(page, kind_control, kinds[0])
        try:
            previous = widget_figure(page, previous, timeout_ms)
        except TimeoutError as error:
            check.problems.append(f"{kind_control}={kinds[0]}: {error}")
            check.problems += widget_output_errors(page)
            return check
    # Every move must change the value, or the widget sends nothing.
    if abs(slider_value(page, slider) - ratios[0]) < 1e-9:
        ratios = (ratios[1], ratios[0], *ratios[2:])
    for ratio in ratios:
        set_slider(page, slider, ratio)
        try:
            previous = figures[ratio] = widget_figure(page, previous, timeout_ms)
        except TimeoutError as error:
            check.problems.append(f"{slider}={ratio:g}: {error}")
        check.problems += widget_output_errors(page)
        if check.problems:
            return check
    if kind_control is not None:
        select_option(page, kind_control, kinds[1])
        try:
            figures[kinds[1]] = widget_figure(page, previous, timeout_ms)
        except TimeoutError as error:
            check.problems.append(f"{kind_control}={kinds[1]}: {error}")
        check.problems += widget_output_errors(page)
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.locator(".widget-interact").last.screenshot(path=str(screenshot))
    if check.problems:
        return check
    pngs = {key: png_from_src(src) for key, src in figures.items()}
    grey = {key: grey_share(png) for key, png in pngs.items()}
    transitions = {key: mask_transitions(png) for key, png in pngs.items()}
    check.grey = {str(key): value for key, value in grey.items()}
    check.transitions = {str(key): value for key, value in transitions.items()}

    def missing(value: float) -> float:
        return 1.0 - value if slider_is_observed else value

    low, mid, high = sorted(ratios, key=missing)
    if not grey[low] < grey[mid] < grey[high]:
        check.problems.append(f"grey share does not follow {slider}: {check.grey}")
    else:
        expected = (missing(high) - missing(low)) / (missing(mid) - missing(low))
        measured = (grey[high] - grey[low]) / (grey[mid] - grey[low])
        if not 0.7 * expected < measured < 1.3 * expected:
            check.problems.append(f"grey share not proportional to the missing fraction: "
                                  f"increase ratio {measured:.2f}, expected {expected:.2f} "
                                  f"({check.grey})")
    if kind_control is None:
        return check
    last = ratios[-1]
    if abs(grey[kinds[1]] - grey[last]) > 0.25 * (grey[last] - grey[low]):
        check.problems.append(f"{kind_control} changed the missing share: {check.grey}")
    if not transitions[kinds[1]] < 0.7 * transitions[last]:
        check.problems.append(f"{kind_control}={kinds[1]} did not give contiguous gaps: "
                              f"transitions per grey pixel {check.transitions}")
    return check
