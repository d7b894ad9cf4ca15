"""geofusion.reporting.rendering: reports reference MathJax and the widget renderer locally,
relatively.

The browser side (formulas typeset, controls drawn) is checked in tests/test_browser.py.
"""

from __future__ import annotations

import re

import nbformat
import pytest

from geofusion.reporting import rendering


def _executed_notebook(path, widgets: bool):
    """An 'executed' notebook: a formula, a figure-free output and, optionally, the widget
    state nbclient stores after displaying a slider."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python",
                                 "display_name": "Python 3"}
    code = nbformat.v4.new_code_cell("print('hi')")
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="hi\n")]
    nb.cells = [nbformat.v4.new_markdown_cell("Loss $\\mathcal{L} = x^2$"), code]
    if widgets:
        nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {
            "version_major": 2, "version_minor": 0, "state": {}}}
    nbformat.write(nb, path)
    return path


def _script_sources(html: str) -> list[str]:
    return re.findall(r'<script[^>]*\ssrc="([^"]*)"', html)


def test_local_rendering_references_only_files_next_to_the_report(tmp_path):
    notebook = _executed_notebook(tmp_path / "run.ipynb", widgets=True)
    html_path = rendering.render_notebook_html(notebook, tmp_path / "reports" / "run.html")
    html = html_path.read_text()
    sources = _script_sources(html)
    assert "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe" in sources
    # Nothing from a network: every script is relative (or the empty data URL).
    assert all(not re.match(r"(https?:)?//", s) for s in sources), sources
    assert "widgets/embed.js" in html  # the widget renderer, next to the report
    assert 'type="application/vnd.jupyter.widget-state+json"' in html
    # The STIX-Web font configuration comes before MathJax itself loads.
    assert html.index('webFont: "STIX-Web"') < html.index('src="mathjax/MathJax.js')
    reports = tmp_path / "reports"
    assert (reports / "mathjax" / "MathJax.js").is_file()
    assert (reports / "mathjax" / "config" / "TeX-AMS-MML_HTMLorMML-full.js").is_file()
    # Every font the configuration names exists in the copy.
    for font in re.findall(r"url\('([^']+)'\)", html):
        assert (reports / font).is_file(), font
    embed = reports / "widgets" / "embed.js"
    assert embed.read_bytes() == rendering.HTML_MANAGER.read_bytes()


def test_widget_renderer_is_copied_only_for_notebooks_with_widgets(tmp_path):
    notebook = _executed_notebook(tmp_path / "plain.ipynb", widgets=False)
    html = rendering.render_notebook_html(notebook, tmp_path / "out" / "plain.html").read_text()
    assert not (tmp_path / "out" / "widgets").exists()
    assert "widget-state+json" not in html and "embed.js" not in html


def test_mathjax_copy_is_installed_once_and_shared_by_hard_links(tmp_path):
    first = rendering.install_mathjax(tmp_path / "a")
    inode = (first / "MathJax.js").stat().st_ino
    assert rendering.install_mathjax(tmp_path / "a") == first
    assert (first / "MathJax.js").stat().st_ino == inode  # not copied again
    source = rendering.local_mathjax_source() / "MathJax.js"
    if source.stat().st_dev == (first / "MathJax.js").stat().st_dev:
        assert (first / "MathJax.js").stat().st_ino == source.stat().st_ino
    # A copy from another package version (or a half-copied one) is replaced.
    (first / ".geofusion-mathjax-version").write_text("0.0.1")
    (first / "MathJax.js").unlink()
    rendering.install_mathjax(tmp_path / "a")
    assert (first / "MathJax.js").is_file()


def test_cdn_rendering_keeps_nbconvert_urls(tmp_path):
    notebook = _executed_notebook(tmp_path / "run.ipynb", widgets=False)
    html = rendering.render_notebook_html(notebook, tmp_path / "r" / "run.html", mathjax="cdn")
    assert any(s.startswith("https://") and "mathjax" in s.lower()
               for s in _script_sources(html.read_text()))
    assert not (tmp_path / "r" / "mathjax").exists()


def test_bad_input_names_the_fix(tmp_path):
    with pytest.raises(ValueError, match="unknown mathjax source 'offline'.*'local', 'cdn'"):
        rendering.mathjax_url("offline")
    with pytest.raises(FileNotFoundError, match="execute it first"):
        rendering.render_notebook_html(tmp_path / "missing.ipynb", tmp_path / "x.html")
