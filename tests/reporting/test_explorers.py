"""geofusion.reporting.explorers: the sparsity explorer redraws when a control moves."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from geofusion.downstream.reconstruction import FunctionReconstructor, LatentReconstructor
from geofusion.experiments.sparsity_study import SparsityEvaluation
from geofusion.learning.methods import build_method  # noqa: E402
from geofusion.reporting import explorers  # noqa: E402

CHANNELS = ["2m_temperature", "geopotential", "u_component_of_wind", "v_component_of_wind",
            "specific_humidity"]
GRID = (8, 16)


@pytest.fixture(scope="module")
def explorer():
    torch.manual_seed(0)
    ae = build_method("autoencoder", grid=GRID, width=2, latent_dim=6).eval()
    days = torch.randn(5, 5, *GRID, generator=torch.Generator().manual_seed(1))
    models = {"autoencoder": LatentReconstructor(ae, ae.decoder),
              "mean": FunctionReconstructor(lambda f, o, t, s: torch.zeros_like(f))}
    ev = SparsityEvaluation(models, days, np.arange(5).astype("datetime64[D]"),
                            np.linspace(-78.75, 78.75, 8), lambda x, times: 2.0 * x + 1.0, CHANNELS)
    return explorers.SparsityExplorer(ev, day=2, lon=np.arange(0, 360, 22.5), date="2001-01-03",
                                      labels={"autoencoder": "AE"}, synthetic=True)


def panel(fig, title_start):
    return next(ax for ax in fig.axes if ax.get_title().startswith(title_start))


def missing_points(fig):
    return int(panel(fig, "observation").collections[0].get_array().mask.sum())


def test_moving_the_controls_redraws_the_figure(explorer):
    widget = explorer.controls(ratio=0.5, kind="pixel", noise=0.0, mode="geopotential")
    assert explorer.current is None  # building the widget draws nothing (show() does)
    ratio, kind, noise, mode = widget.kwargs_widgets
    ratio.value = 0.25
    first = explorer.current
    assert "pixel mask, 25% missing" in first._suptitle.get_text()
    assert first._suptitle.get_text().endswith("(synthetic)")
    assert missing_points(first) == round(0.25 * 128)
    ratio.value = 0.75
    second = explorer.current
    assert second is not first and "75% missing" in second._suptitle.get_text()
    assert missing_points(second) == round(0.75 * 128)
    kind.value = "swath"
    assert explorer.current._suptitle.get_text().startswith("swath mask, 75% missing")
    # The colour scale follows the chosen variable of the complete day (physical units).
    mode.value = "specific_humidity"
    truth = explorer.evaluation.truth[2, CHANNELS.index("specific_humidity")]
    assert panel(explorer.current, "complete").collections[0].get_clim() == pytest.approx(
        (truth.min(), truth.max()))
    # The latent model's cosine bar and every model's reconstruction are drawn.
    titles = [ax.get_title() for ax in explorer.current.axes]
    assert "AE reconstruction" in titles and "mean reconstruction" in titles
    plt.close("all")


def test_show_draws_the_initial_state_in_the_cell_output(explorer, monkeypatch):
    shown = []
    monkeypatch.setattr(explorers, "display", shown.append)
    widget = explorer.show(ratio=0.5, kind="patch", noise=0.2, mode="2m_temperature")
    assert shown == [widget]
    assert "patch mask, 50% missing, noise std 0.2" in explorer.current._suptitle.get_text()
    assert missing_points(explorer.current) == 64
    with pytest.raises(ValueError, match="mode must be one of"):
        explorer.figure(0.5, "pixel", 0.0, "temperature")
    plt.close("all")
