"""Render executed notebooks to HTML reports that read correctly without a network.

nbconvert's HTML loads MathJax from a CDN, so on an offline or firewalled machine (common on
clusters) every formula of a report shows as raw LaTeX. Here MathJax 2.7 comes from the copy
that the ``jupyter-server-mathjax`` package ships: it is copied once next to the reports
(``<report dir>/mathjax/``, hard links where the file system allows, so many report folders
cost no extra space) and referenced with a *relative* URL, so a report folder can be moved,
archived or opened straight from disk (``file://``) and its formulas are still typeset.

Widget state: papermill (through nbclient) stores the state of every widget a notebook
displayed in the notebook metadata (``application/vnd.jupyter.widget-state+json``); nbconvert
embeds that state in the HTML. Its renderer, ``@jupyter-widgets/html-manager``, would come from
a CDN; here the standalone bundle kept in ``geofusion/resources/html_manager`` is copied next to
the reports (``<report dir>/widgets/embed.js``), so a reader sees the controls at their initial
values next to the figure drawn for them, offline too. Moving a control in a report changes
nothing (there is no kernel); the notebooks say so.

Usage::

    from geofusion.reporting.rendering import render_notebook_html
    render_notebook_html("reports/06_sparsity.ipynb", "reports/06_sparsity.html")
    # -> reports/06_sparsity.html, reports/mathjax/ (MathJax.js and its fonts) and, when the
    #    notebook displayed widgets, reports/widgets/embed.js
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from geofusion.io import atomic_path, atomic_write_text, package_resource

# Name of the folder, next to the HTML, that holds the local MathJax copy.
MATHJAX_DIRNAME = "mathjax"
# The configuration nbconvert's own template expects (TeX input, HTML-CSS/MathML output, the
# full set of TeX extensions) with the Safe extension that blocks script URLs inside formulas.
# jupyter-server-mathjax ships exactly this config file.
MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full,Safe"
# Written into the copied folder; a copy from another package version is replaced.
_VERSION_FILE = ".geofusion-mathjax-version"
# jupyter-server-mathjax ships the STIX-Web web fonts only; MathJax's defaults would request
# TeX fonts that are not there (HTTP 404s and a poor fallback). So: STIX-Web for the HTML-CSS
# output (as JupyterLab configures it), and the six @font-face rules that the MathML support
# declares for the hidden accessibility copy of each formula point at the STIX-Web
# equivalents. Read by MathJax before nbconvert's own configuration block.
_STIX = MATHJAX_DIRNAME + "/fonts/HTML-CSS/STIX-Web/woff/STIXMathJax_"
_MATHML_FONTS = [("Caligraphic-WEB", "", "Script-Regular"),
                 ("Caligraphic-WEB", "bold", "Script-BoldItalic"),
                 ("AMS-WEB", "", "Main-Regular"),
                 ("Script-WEB", "", "Script-Regular"),
                 ("Fraktur-WEB", "", "Fraktur-Regular"),
                 ("Fraktur-WEB", "bold", "Fraktur-Bold")]
_MATHML_FONT_FACES = ",\n".join(
    f'    "@font-face /*{i}*/": {{"font-family": "MathJax_{family}", '
    + (f'"font-weight": "{weight}", ' if weight else "")
    + f'src: "url(\'{_STIX}{stix}.woff\')"}}'
    for i, (family, weight, stix) in enumerate(_MATHML_FONTS, start=1))
_MATHJAX_FONT_CONFIG = f"""<script type="text/x-mathjax-config">
MathJax.Hub.Config({{
  "HTML-CSS": {{availableFonts: [], webFont: "STIX-Web", imageFont: null, preferredFont: null}},
  NativeMML: {{styles: {{
{_MATHML_FONT_FACES}
  }}}}
}});
</script>
"""

# The standalone widget renderer (see resources/html_manager/README.md) and where it goes.
HTML_MANAGER = package_resource("html_manager", "embed.js")
WIDGETS_DIRNAME = "widgets"

MATHJAX_SOURCES = ("local", "cdn")


def local_mathjax_source() -> Path:
    """The folder of MathJax 2.7 that ``jupyter-server-mathjax`` installs (holds MathJax.js)."""
    try:
        import jupyter_server_mathjax
    except ImportError as error:
        raise ImportError("rendering reports with a local MathJax needs the package "
                          "jupyter-server-mathjax; install it with `pip install "
                          "jupyter-server-mathjax` (a geofusion dependency), or render with "
                          "mathjax='cdn'") from error
    static = Path(jupyter_server_mathjax.__file__).resolve().parent / "static"
    if not (static / "MathJax.js").is_file():
        raise FileNotFoundError(f"{static} has no MathJax.js: the jupyter-server-mathjax "
                                "installation is incomplete; reinstall it with `pip install "
                                "--force-reinstall jupyter-server-mathjax`")
    return static


def _mathjax_version() -> str:
    from jupyter_server_mathjax.__version__ import __version__

    return str(__version__)


def _link_or_copy(src: str, dst: str) -> str:
    # Hard links: every report folder of a sweep shares one copy of the 12 MB of MathJax.
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def install_mathjax(report_dir: str | os.PathLike) -> Path:
    """Place the local MathJax copy in ``report_dir/mathjax`` (idempotent); return that folder.

    Skipped when a complete copy of the installed package version is already there. The copy
    is staged and moved into place (``geofusion.io.atomic_path``), so an interrupted run never
    leaves a half-copied MathJax that a report would load.
    """
    target = Path(report_dir) / MATHJAX_DIRNAME
    version = _mathjax_version()
    marker = target / _VERSION_FILE
    if marker.is_file() and marker.read_text() == version and (target / "MathJax.js").is_file():
        return target
    source = local_mathjax_source()
    with atomic_path(target, is_dir=True) as staged:
        shutil.copytree(source, staged, copy_function=_link_or_copy)
        (staged / _VERSION_FILE).write_text(version)
    return target


def mathjax_url(mathjax: str = "local") -> str:
    """The ``src`` of the MathJax script: relative to the HTML (``local``) or nbconvert's CDN."""
    if mathjax not in MATHJAX_SOURCES:
        raise ValueError(f"unknown mathjax source {mathjax!r}; choose one of {MATHJAX_SOURCES}")
    if mathjax == "cdn":
        from nbconvert import HTMLExporter

        return str(HTMLExporter.mathjax_url.default_value)
    return f"{MATHJAX_DIRNAME}/MathJax.js?config={MATHJAX_CONFIG}"


def install_widget_renderer(report_dir: str | os.PathLike) -> Path:
    """Place the widget renderer at ``report_dir/widgets/embed.js`` (idempotent); return it."""
    if not HTML_MANAGER.is_file():
        raise FileNotFoundError(f"{HTML_MANAGER} is missing: the geofusion installation is "
                                "incomplete; reinstall it (pip install -e .)")
    target = Path(report_dir) / WIDGETS_DIRNAME / HTML_MANAGER.name
    if target.is_file() and target.stat().st_size == HTML_MANAGER.stat().st_size \
            and target.read_bytes() == HTML_MANAGER.read_bytes():
        return target
    with atomic_path(target) as staged:
        shutil.copy2(HTML_MANAGER, staged)
    return target


def notebook_to_html(notebook_path: str | os.PathLike, mathjax: str = "local") -> str:
    """The HTML text of an executed notebook (nbconvert's lab template).

    With ``mathjax="local"`` the page loads ``mathjax/MathJax.js`` relative to itself, and, when
    the notebook stores widget state, ``widgets/embed.js``: write it into a folder prepared by
    ``install_mathjax`` and ``install_widget_renderer`` (``render_notebook_html`` does all).
    With ``mathjax="cdn"`` both come from nbconvert's default CDN URLs.
    """
    import nbformat
    from nbconvert import HTMLExporter

    path = Path(notebook_path)
    if not path.is_file():
        raise FileNotFoundError(f"no notebook at {path}; execute it first "
                                "(python -m geofusion.pipeline)")
    url = mathjax_url(mathjax)
    options: dict[str, Any] = {"template_name": "lab", "mathjax_url": url}
    if mathjax == "local":
        # The standalone renderer needs no require.js: an empty data URL stands in for it, so
        # the page makes no request outside its folder.
        options.update(widget_renderer_url=f"{WIDGETS_DIRNAME}/{HTML_MANAGER.name}",
                       require_js_url="data:text/javascript,")
    body, _ = HTMLExporter(**options).from_notebook_node(nbformat.read(path, as_version=4))
    if mathjax == "local":
        script = f'<script src="{url}">'
        if body.count(script) != 1:
            raise RuntimeError(f"nbconvert's template no longer loads MathJax as {script!r}; "
                               "update geofusion.reporting.rendering for this nbconvert version")
        body = body.replace(script, _MATHJAX_FONT_CONFIG + script)
    return body


def render_notebook_html(notebook_path: str | os.PathLike, html_path: str | os.PathLike,
                         mathjax: str = "local") -> Path:
    """Render ``notebook_path`` to ``html_path`` (atomic) with its scripts next to it.

    ``mathjax``: ``"local"`` (default; copies MathJax into ``<html dir>/mathjax`` and, for a
    notebook with widgets, the renderer into ``<html dir>/widgets``, once) or ``"cdn"``
    (nbconvert's default URLs: formulas and controls need a network when the page is read).
    """
    html_path = Path(html_path)
    body = notebook_to_html(notebook_path, mathjax)
    if mathjax == "local":
        install_mathjax(html_path.parent)
        # nbconvert embeds the state in this script tag only when the notebook stores some.
        if '<script type="application/vnd.jupyter.widget-state+json">' in body:
            install_widget_renderer(html_path.parent)
    atomic_write_text(html_path, body)
    return html_path
