"""geofusion.reporting.score_plots: robustness curves with interval bands, tables with intervals."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from geofusion.reporting import score_plots  # noqa: E402


def curves():
    rows = []
    for model, scale in (("ae", 1.0), ("climatology", 2.0)):
        for kind in ("pixel", "swath"):
            for ratio in (0.0, 0.5, 0.9):
                for variable in ("t", "z"):
                    rmse = scale * (1 + ratio)
                    cos = np.nan if model == "climatology" else 1 - ratio
                    rows.append({"model": model, "kind": kind, "missing_fraction": ratio,
                                 "noise_std": 0.0, "variable": variable, "rmse": rmse,
                                 "rmse_low": rmse - 0.1, "rmse_high": rmse + 0.1,
                                 "centred_cosine": cos, "centred_cosine_low": cos - 0.05,
                                 "centred_cosine_high": cos + 0.05, "cosine": cos})
    return pd.DataFrame(rows)


def test_robustness_figure_draws_skill_relative_to_the_reference_and_bands():
    fig = score_plots.plot_robustness_curves(curves(), "t", "K", training_kind="pixel",
                                             synthetic=True)
    skill, rmse, cosine, _ = fig.axes[:4]
    pixel = next(line for line in skill.lines if line.get_label() == "ae, pixel")
    np.testing.assert_allclose(pixel.get_ydata(), 0.5)  # ae RMSE is half the climatology's
    assert pixel.get_linewidth() > next(
        line for line in skill.lines if line.get_label() == "ae, swath").get_linewidth()
    assert len(rmse.collections) == 1 and len(cosine.collections) == 1  # training kind bands
    assert fig._suptitle.get_text().endswith("(synthetic)")
    plt.close(fig)


def test_with_intervals_formats_and_names_missing_columns():
    table = score_plots.with_intervals(curves(), ["model", "missing_fraction"], "variable")
    assert table.loc[("ae", 0.5), "t"] == "1.5 [1.4, 1.6]"
    with pytest.raises(ValueError, match="no column 'acc_low'"):
        score_plots.with_intervals(curves().assign(acc=1.0), "model", "variable", value="acc")


def test_lead_curves_have_interval_error_bars_and_skip_undefined_acc():
    rows = [{"forecaster": f, "lead": k, "variable": "t", "rmse": k * s, "rmse_low": k * s - 0.5,
             "rmse_high": k * s + 0.5, "acc": np.nan if f == "climatology" else 1 - 0.1 * k,
             "acc_low": 0.0, "acc_high": 1.0}
            for f, s in (("lstm", 1.0), ("climatology", 2.0)) for k in (1, 2, 3)]
    fig = score_plots.plot_lead_curves(pd.DataFrame(rows), ["t"], {"t": "K"})
    rmse_ax, acc_ax = fig.axes[:2]
    assert len(rmse_ax.containers) == 2 and len(acc_ax.containers) == 1  # no NaN ACC line
    segments = rmse_ax.containers[0].lines[2][0].get_segments()
    np.testing.assert_allclose([s[:, 1] for s in segments], [[0.5, 1.5], [1.5, 2.5],
                                                             [2.5, 3.5]])
    plt.close(fig)
    robust = pd.DataFrame([{"forecaster": "lstm", "ratio": r, "variable": "t", "rmse": 1 + r}
                           for r in (0.0, 0.5)])
    fig = score_plots.plot_mask_ratio_curves(robust, ["t"], {"t": 1.2})
    assert fig.axes[0].lines[-1].get_ydata()[0] == 1.2
    plt.close(fig)


def test_plot_convergence_draws_the_reference_losses_at_their_values():
    import pandas as pd

    from geofusion.reporting.score_plots import plot_convergence

    history = pd.DataFrame({"epoch": [1, 2, 3], "loss": [3.0, 2.0, 1.5],
                            "valid_loss": [2.5, 2.0, 2.2]})
    fig = plot_convergence(history, {"EOF code": {"loss": 1.25, "valid_loss": 1.75}}, "ae")
    lines = {line.get_label(): line for line in fig.axes[0].lines}
    assert list(lines["EOF code, loss"].get_ydata()) == [1.25, 1.25]
    assert list(lines["EOF code, valid_loss"].get_ydata()) == [1.75, 1.75]
    assert "ae, loss" in lines
