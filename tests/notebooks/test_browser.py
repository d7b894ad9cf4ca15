"""The interactive experience in a real (headless) browser: JupyterLab widgets and HTML reports.

Run alone with ``pytest -m browser``. The tests skip, naming the fix, where Debian's Chromium or
Playwright is missing; ``make test`` installs Chromium (scripts/install_browser.sh) first.
Screenshots for a person to look at go to reports/screenshots/ (ignored by git).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import nbformat
import papermill
import pytest

from geofusion.reporting import rendering, scheduling
from tests.notebooks import browser_helpers as bh

REASON = bh.unavailable_reason()
pytestmark = [pytest.mark.browser, pytest.mark.skipif(REASON is not None, reason=str(REASON))]

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
# Notebook 06 with tiny networks on two synthetic years (as test_notebook_06.py: the 60 %
# training block must hold every season), pixel
# masks so that the mask-kind control has something to change.
TINY_06 = dict(start="2000-01-01", end="2001-12-31", width=4, latent_dim=16, proj_dim=8,
               batch_size=16, ae_epochs=1, encoder_epochs=1, decoder_epochs=1, decoder_width=2,
               n_decoder_days=64, n_eval_days=8, mask_kind="pixel", noise_std=0.0,
               static_ratios=[0.0, 0.6], curve_ratios=[0.0, 0.9], curve_kinds=["pixel"],
               curve_noise_stds=[0.0], device="cpu")
# The report set: notebook 02 (formulas, figures, a table), the cheapest with formulas.
TINY_REPORTS = dict(start="2000-01-01", end="2001-12-31", epochs=1,
                    batch_size=16, width=4, latent_dim=16, n_embed=12)


@pytest.fixture(scope="module")
def browser():
    with bh.chromium() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    with bh.jupyterlab(root, env={"OMP_NUM_THREADS": "1"}) as server:
        yield server


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    yield page
    page.close()


# ------------------------------------------------------------------------------------------
# JupyterLab


def test_notebook_06_explorer_follows_its_controls_in_jupyterlab(lab, page, tmp_path):
    """Notebook 06, run in JupyterLab with tiny parameters: moving the missing-fraction slider
    and the mask-kind control redraws the explorer's figure with the matching grey gaps."""
    parameters = {**TINY_06, "run_dir": str(tmp_path / "runs"),
                  "cache_dir": str(tmp_path / "cache")}
    papermill.execute_notebook(str(NOTEBOOKS / "06_sparsity.ipynb"),
                               str(lab.root / "06_sparsity.ipynb"), parameters=parameters,
                               prepare_only=True, kernel_name="python3", progress_bar=False)
    bh.open_notebook(page, lab, "06_sparsity.ipynb")
    state = bh.run_all_cells(page)
    assert not state["errors"], state["errors"]
    assert state["executed"] == state["cells"] > 10
    check = bh.check_missing_fraction_explorer(
        page, screenshot=bh.SCREENSHOTS / "lab_06_sparsity_explorer.png")
    assert not check.problems, check.problems
    assert not bh.notebook_errors(page)


# The explorer of notebook 06 (geofusion.reporting.explorers.SparsityExplorer) on an untrained tiny
# autoencoder and smooth random days: seconds instead of a training run.
_EXPLORER_FIXTURE = """\
import numpy as np
import torch
from geofusion.reporting.explorers import SparsityExplorer
from geofusion.learning.methods import build_method
from geofusion.downstream.reconstruction import LatentReconstructor
from geofusion.experiments.sparsity_study import SparsityEvaluation

torch.manual_seed(0)
lat, lon = np.linspace(-87.2, 87.2, 32), np.arange(0, 360, 5.625)
waves = torch.cos(torch.linspace(0, 3, 32))[:, None] * torch.sin(torch.linspace(0, 6, 64))
fields = waves * torch.randn(4, 5, 1, 1) + 0.1 * torch.randn(4, 5, 32, 64)
autoencoder = build_method("autoencoder", grid=(32, 64), width=2, latent_dim=4)
evaluation = SparsityEvaluation({"ae": LatentReconstructor(autoencoder, autoencoder.decoder)},
                                fields, np.arange(4).astype("datetime64[D]"), lat,
                                lambda x, times: x, list("abcde"))
explorer = SparsityExplorer(evaluation, 0, lon, "day 0", synthetic=True)
working_figure = explorer.figure
widget = explorer.show(ratio=0.5, kind="pixel", noise=0.0, mode="a")
"""
# Deliberate breakage of the shown explorer's callback, run in its kernel.
_BROKEN = {
    # The slider is passed on but not used: the figure never follows it.
    "ignores_slider": ("explorer.figure = lambda ratio, kind, noise, mode: "
                       "working_figure(0.5, kind, noise, mode)"),
    # The callback fails.
    "raises": ("def broken(ratio, kind, noise, mode):\n"
               "    raise RuntimeError('explorer callback broke')\n"
               "explorer.figure = broken"),
}


def test_explorer_check_passes_a_working_explorer_and_fails_broken_callbacks(lab, page):
    """The test of the helpers: the check that notebook 06 passes also passes the library
    explorer on a tiny fixture, and catches a slider whose callback ignores it and a callback
    that raises."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python",
                                 "display_name": "Python 3"}
    nb.cells = [nbformat.v4.new_code_cell(_EXPLORER_FIXTURE)]
    nbformat.write(nb, lab.root / "explorer.ipynb")
    bh.open_notebook(page, lab, "explorer.ipynb")
    assert not bh.run_all_cells(page)["errors"]
    working = bh.check_missing_fraction_explorer(page, timeout_ms=20_000)
    assert not working.problems, working.problems
    assert working.grey["0.9"] > working.grey["0.5"] > working.grey["0.0"]
    assert working.transitions["patch"] < 0.7 * working.transitions["0.5"]

    found = {}
    for name, breakage in _BROKEN.items():
        bh.execute_in_kernel(page, breakage)
        found[name] = bh.check_missing_fraction_explorer(page, timeout_ms=5_000).problems
        bh.execute_in_kernel(page, "explorer.figure = working_figure")
    assert any("did not change" in p for p in found["ignores_slider"]), found
    assert any("explorer callback broke" in p for p in found["raises"]), found
    # Read as an observed-fraction slider (an assimilation explorer's), the same working
    # explorer draws the gaps backwards.
    backwards = bh.check_missing_fraction_explorer(page, kind_control=None,
                                                   slider_is_observed=True, timeout_ms=20_000)
    assert any("grey share does not follow missing" in p for p in backwards.problems), backwards


# The explorer of notebook 10 (geofusion.reporting.explorers.AssimilationExplorer) on hand-made
# results of
# three observing systems: the observation panel is grey where a day is not observed.
_ASSIMILATION_FIXTURE = """\
from types import SimpleNamespace
import numpy as np
from geofusion.reporting.explorers import AssimilationExplorer

rng = np.random.default_rng(0)
fractions = [0.1, 0.5, 0.9]
truth = np.cos(np.linspace(0, 3, 32))[None, None, :, None] * np.ones((2, 1, 32, 64))
observed = np.stack([rng.random((2, 32, 64)) < f for f in fractions], axis=1)
results = SimpleNamespace(
    experiments=[(f, 0.1) for f in fractions], channels=["a"], units={"a": "K"}, truth=truth,
    observations=np.repeat(truth[:, None], 3, axis=1) * observed[:, :, None],
    observed=observed, analyses={"scheme": np.repeat(truth[:, None], 3, axis=1)},
    mse={"scheme": np.ones((2, 3, 1))}, lat=np.linspace(-87.2, 87.2, 32),
    lon=np.arange(0, 360, 5.625), times=np.arange(2).astype("datetime64[D]"), synthetic=True,
    destandardise=lambda x: x, to_physical=lambda x, day: x,
    experiment=lambda f, s: fractions.index(f))
explorer = AssimilationExplorer(results)
widget = explorer.show(0.1, 0.1, day=0, mode="a")
"""


def test_assimilation_explorer_follows_its_observed_fraction_in_jupyterlab(lab, page):
    """Notebook 10's explorer: moving the observed-fraction selection slider (keyboard, as a
    user can) redraws the figure with grey gaps in proportion to the missing fraction."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python",
                                 "display_name": "Python 3"}
    nb.cells = [nbformat.v4.new_code_cell(_ASSIMILATION_FIXTURE)]
    nbformat.write(nb, lab.root / "assimilation_explorer.ipynb")
    bh.open_notebook(page, lab, "assimilation_explorer.ipynb")
    assert not bh.run_all_cells(page)["errors"]
    handle = bh.slider_handle(page, "observed")
    previous = bh.current_widget_figure(page)
    grey = {}
    for fraction, key in [(0.5, "ArrowRight"), (0.9, "ArrowRight"), (0.1, "Home")]:
        handle.focus()
        page.keyboard.press(key)
        previous = bh.widget_figure(page, previous, timeout_ms=30_000)
        grey[fraction] = bh.grey_share(bh.png_from_src(previous))
    assert not bh.widget_output_errors(page) and not bh.notebook_errors(page)
    assert grey[0.1] > grey[0.5] > grey[0.9], grey
    # missing 0.9, 0.5, 0.1: the grey share rises linearly with the missing fraction
    measured = (grey[0.1] - grey[0.9]) / (grey[0.5] - grey[0.9])
    assert 0.7 * 2.0 < measured < 1.3 * 2.0, grey
    page.locator(".widget-interact").last.screenshot(
        path=str(bh.SCREENSHOTS / "lab_10_assimilation_explorer.png"))


# ------------------------------------------------------------------------------------------
# Reports


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    """A small report set rendered by the pipeline (notebook 02, tiny settings)."""
    work = tmp_path_factory.mktemp("pipeline")
    output = work / "reports"
    overrides = {**TINY_REPORTS, "run_dir": str(work / "runs"),
                 "cache_dir": str(work / "cache")}
    previous = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        scheduling.run_pipeline("quick", only=["02"], overrides=overrides,
                              output_dir=output)
    finally:
        if previous is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = previous
    return output


def test_reports_read_correctly_in_a_browser_offline(browser, report_dir):
    """index.html and every linked report: links resolve, figures decode, no traceback,
    formulas typeset from the local MathJax, provenance stated; nothing loaded from outside."""
    with bh.serve_directory(report_dir) as base:
        checks = bh.check_index(browser, base, bh.SCREENSHOTS)
    assert not bh.problems(checks), bh.problems(checks)
    assert sorted(checks) == ["02_autoencoder.html", "index.html"]
    assert checks["02_autoencoder.html"].images >= 2  # training curves, PCA of embeddings
    assert checks["02_autoencoder.html"].formulas >= 2  # the loss and the learning rate
    stated = checks["index.html"].stated
    assert "quick" in stated["profile"] and "synthetic" in stated["synthetic"].lower()
    assert re.search(r"[0-9a-f]{7}", stated["commit"]), stated
    for name in checks:
        assert (bh.SCREENSHOTS / (Path(name).stem + ".png")).stat().st_size > 0


@pytest.fixture(scope="module")
def widget_report(tmp_path_factory) -> Path:
    """A notebook with formulas, a slider and a figure, executed and rendered; its HTML."""
    directory = tmp_path_factory.mktemp("rendering")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python",
                                 "display_name": "Python 3"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("The loss $\\mathcal{L} = \\sum_i (1 - C_{ii})^2$ and\n"
                                      "$$\\lambda \\sum_{i \\neq j} C_{ij}^2$$"),
        nbformat.v4.new_code_cell("import ipywidgets as widgets\n"
                                  "widgets.FloatSlider(value=0.3, min=0, max=0.9, "
                                  "description='missing')"),
        nbformat.v4.new_code_cell("import matplotlib.pyplot as plt\n"
                                  "plt.plot([0, 1], [1, 0]); plt.show()"),
    ]
    source, executed = directory / "widgets.ipynb", directory / "executed.ipynb"
    nbformat.write(nb, source)
    papermill.execute_notebook(str(source), str(executed), kernel_name="python3",
                               progress_bar=False)
    return rendering.render_notebook_html(executed, directory / "report" / "widgets.html")


def test_rendered_report_shows_formulas_and_controls_at_initial_values_offline(
        browser, widget_report):
    html = widget_report
    page = browser.new_page()
    with bh.serve_directory(html.parent) as base:
        check = bh.check_report_page(page, base + html.name, base, expect_formulas=True,
                                     screenshot=bh.SCREENSHOTS / "rendering_widgets.png")
        readout = page.locator(".widget-slider .widget-readout").inner_text()
    assert not check.problems, check.problems
    assert check.formulas == 2 and check.images == 1 and check.widgets == 1
    assert readout == "0.30"
    # Straight from disk too (a report folder copied to a laptop): formulas still typeset.
    check = bh.check_report_page(page, html.as_uri(), html.parent.as_uri() + "/",
                                 expect_formulas=True)
    page.close()
    assert not check.problems, check.problems
    assert check.formulas == 2


def test_report_checks_catch_a_missing_figure_a_traceback_and_a_dead_link(browser,
                                                                           widget_report,
                                                                           tmp_path):
    """The test of the helpers: breaking a good report set makes the checks fail."""
    reports = tmp_path / "reports"
    shutil.copytree(widget_report.parent, reports)
    html = reports / widget_report.name
    (reports / "index.html").write_text(
        "<html><body><span id=profile>quick</span><span id=commit>abc</span>"
        "<span id=machine>here</span><span id=synthetic>synthetic data</span>"
        '<a href="widgets.html">widgets</a></body></html>')
    with bh.serve_directory(reports) as base:
        assert not bh.problems(bh.check_index(browser, base))

        # A figure that is missing: the <img> points at a file that is not there.
        text = html.read_text()
        shutil.copy(html, reports / "good.html")
        start = text.index('src="data:image/png')
        html.write_text(text[:start] + 'src="figure_1.png"'
                        + text[text.index('"', start + 5) + 1:])
        found = bh.problems(bh.check_index(browser, base))
        assert any("image did not decode: " in p for p in found), found
        assert any("HTTP 404" in p and "figure_1.png" in p for p in found), found

        # An error output (the report of a failed cell) and a dead link in the index.
        shutil.copy(reports / "good.html", html)
        html.write_text(html.read_text().replace(
            "</body>", '<div class="jp-OutputArea-output"><pre>Traceback (most recent call '
            "last):\nValueError: broken</pre></div></body>"))
        index = (reports / "index.html").read_text()
        (reports / "index.html").write_text(index.replace(
            "<span id=machine>here</span>", '<a href="08_forecasting.html">08</a>'))
        found = bh.problems(bh.check_index(browser, base))
        assert any("error output: Traceback" in p for p in found), found
        assert any("link 08_forecasting.html does not resolve: 404" in p for p in found), found
        assert any("no element with id 'machine'" in p for p in found), found

        # MathJax gone: the formulas stay raw LaTeX.
        shutil.copy(reports / "good.html", html)
        shutil.rmtree(reports / "mathjax")
        found = bh.problems(bh.check_index(browser, base, expect_formulas=True))
        assert any("raw LaTeX" in p for p in found), found
