"""Scoring of fusion schemes (notebook 09's library): references, intervals, transfer."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from geofusion.data import PreparedData
from geofusion.downstream import forecast_scores
from geofusion.experiments import fusion_study
from geofusion.verification import metrics
from geofusion.verification.baselines import climatology

matplotlib.use("Agg")
CHANNELS = ("2m_temperature", "geopotential")


def prepared_data() -> PreparedData:
    rng = np.random.default_rng(0)
    times = pd.date_range("2000-01-01", periods=400, freq="D").values
    season = np.sin(2 * np.pi * np.arange(400) / 365.25)[:, None, None, None]
    fields = (season + 0.3 * rng.normal(size=(400, 2, 4, 8))).astype("float32")
    return PreparedData(train=fields[:365], valid=fields[365:], train_times=times[:365],
                        valid_times=times[365:], channels=CHANNELS,
                        mean=np.array([280.0, 5000.0], dtype="float32"),
                        std=np.array([2.0, 50.0], dtype="float32"),
                        lat=np.linspace(-67.5, 67.5, 4), lon=np.arange(8) * 45.0, level=500,
                        synthetic=True)


class Identity(nn.Module):
    """A 'reconstruction' that returns its input exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x, observed=None):
        return self.w * x


def test_fusion_runs_names_and_rejects_unknown_schemes():
    runs = fusion_study.fusion_runs(["early", "late_concat"], "late_concat", 0.2,
                                     "late_cross_attention")
    assert runs == [("early", "early", 0.0, "barlow_twins"),
                    ("late_concat", "late_concat", 0.0, "barlow_twins"),
                    ("late_concat+dropout", "late_concat", 0.2, "barlow_twins"),
                    ("late_cross_attention+mode_group", "late_cross_attention", 0.0,
                     "mode_group")]
    with pytest.raises(ValueError, match="unknown fusion scheme"):
        fusion_study.fusion_runs(["middle"])


def test_reconstruction_scores_use_the_day_of_year_climatology_and_name_the_training_mean():
    prepared = prepared_data()
    clim = climatology(prepared.train, prepared.train_times)
    table = fusion_study.reconstruction_scores({"perfect": Identity()}, prepared.valid,
                                                prepared.valid_times, prepared, clim,
                                                n_resamples=200)
    assert list(table.index) == ["perfect", "day-of-year climatology", "training mean"]
    np.testing.assert_allclose(table.loc["perfect", "rmse"], 0, atol=1e-3)
    truth = prepared.destandardise(prepared.valid)
    doy = pd.DatetimeIndex(prepared.valid_times).day_of_year.to_numpy() - 1
    by_hand = metrics.lat_weighted_rmse(prepared.destandardise(clim[doy]), truth, prepared.lat,
                                        time_axis=0)
    np.testing.assert_allclose(table.loc["day-of-year climatology", "rmse"], by_hand, rtol=1e-5)
    mean = np.broadcast_to(prepared.mean[:, None, None], truth.shape)
    np.testing.assert_allclose(table.loc["training mean", "rmse"],
                               metrics.lat_weighted_rmse(mean, truth, prepared.lat, time_axis=0),
                               rtol=1e-5)
    # A seasonal signal: the day-of-year climatology beats the training mean, in kelvins.
    assert (table.loc["day-of-year climatology", "rmse"]
            < table.loc["training mean", "rmse"]).all()
    for name in ("day-of-year climatology", "training mean"):
        assert (table.loc[name, "low"] <= table.loc[name, "rmse"]).all()
        assert (table.loc[name, "rmse"] <= table.loc[name, "high"]).all()


def test_restandardise_maps_between_statistics():
    source, target = prepared_data(), prepared_data()
    target = target.__class__(**{**target.__dict__, "mean": np.array([279.0, 4900.0],
                                                                     dtype="float32"),
                                 "std": np.array([4.0, 100.0], dtype="float32")})
    x = np.ones((1, 2, 1, 1), dtype="float32")  # source: 282 K and 5050 m2/s2
    out = fusion_study.restandardise(x, source, target)
    np.testing.assert_allclose(out.ravel(), [(282 - 279) / 4, (5050 - 4900) / 100])


class MeanMethod(nn.Module):
    """Embedding = per-channel means of the inference view (a resize to a fixed grid)."""

    def __init__(self, shift: float = 0.0) -> None:
        super().__init__()
        self.encoder = nn.Sequential()  # identity; parameters below for the device lookup
        self.encoder.register_parameter("w", nn.Parameter(torch.ones(())))
        self.encoder.forward = lambda x: torch.cat([x.mean((2, 3)), x[:, :, :2, :2].flatten(1)
                                                    + shift], 1)

    def inference_view(self, x):
        return torch.nn.functional.interpolate(x, size=(4, 8), mode="area")


def test_resolution_transfer_goes_through_the_inference_view():
    fine = torch.randn(6, 2, 8, 16, generator=torch.Generator().manual_seed(0)).numpy()
    table = fusion_study.resolution_transfer({"area": MeanMethod()}, fine, factor=2)
    # Area resizing to 4x8 of the fine day equals its 2x2 block average: same embedding.
    assert table.loc["area", "cosine(fine, coarsened) same day"] == pytest.approx(1.0, abs=1e-6)
    assert table.loc["area", "cosine between different days"] < 0.9


def test_with_interval_and_bars():
    est = pd.DataFrame({"a": [1.0, 2.0]}, index=["m", "n"])
    text = fusion_study.with_interval(est, est - 0.5, est + 0.25)
    assert text.loc["n", "a"] == "2 [1.5, 2.25]"
    fig = fusion_study.plot_relative_bars(est, reference=pd.Series({"a": 0.8}),
                                           reference_label="persistence",
                                           errors=(est - 0.5, est + 0.25))
    ax = fig.axes[0]
    assert len(ax.containers) >= 2 and len(ax.collections) >= 1  # bars + error bars, dashes
    matplotlib.pyplot.close(fig)


def test_fine_grid_is_synthetic_only_for_synthetic_runs_and_uses_the_runs_statistics():
    from geofusion.variables import VARIABLES

    prepared = prepared_data().__class__(**{
        **prepared_data().__dict__, "channels": VARIABLES,
        "mean": np.array([280.0, 5e4, 0.0, 0.0, 3e-3], dtype="float32"),
        "std": np.array([2.0, 500.0, 10.0, 10.0, 1e-3], dtype="float32")})
    real = prepared.__class__(**{**prepared.__dict__, "synthetic": False})
    fine, reason = fusion_study.fine_grid(real, 2, "2001-01-01", "2001-01-10", 500)
    assert fine is None and "fine_data_path" in reason and "8x16" in reason
    fine, reason = fusion_study.fine_grid(prepared, 2, "2001-01-01", "2001-01-10", 500)
    assert reason is None and fine.train.shape[-2:] == (8, 16) and "SYNTHETIC" in fine.source
    # Standardised with the run's statistics, not its own: physical = x * run std + run mean.
    from geofusion.data import prepare
    from geofusion.world.synthetic import synthetic_era5

    own = prepare(synthetic_era5(start="2001-01-01", end="2001-01-10", seed=1, nlat=8, nlon=16),
                  level=500)
    physical = fine.train * prepared.std[:, None, None] + prepared.mean[:, None, None]
    np.testing.assert_allclose(physical, own.destandardise(own.train), rtol=1e-5, atol=1e-6)
    assert abs(float(fine.train[:, 0].mean())) > 0.5  # its own mean would be ~0


def anomaly_data() -> PreparedData:
    """prepared_data() in the anomaly space (issue 23): days of year of a training
    climatology, with a test block."""
    from geofusion.data.anomalies import to_space

    report = prepared_data()
    fields = np.concatenate([report.train, report.valid])
    times = np.concatenate([report.train_times, report.valid_times])
    report = PreparedData(train=fields[:365], valid=fields[365:380], test=fields[380:],
                          train_times=times[:365], valid_times=times[365:380],
                          test_times=times[380:], channels=CHANNELS, mean=report.mean,
                          std=report.std, lat=report.lat, lon=report.lon, level=500,
                          synthetic=True)
    return to_space(report, "anomaly")


def test_reconstruction_scores_are_physical_in_the_anomaly_space():
    prepared = anomaly_data()
    report = prepared_data()
    clim = np.zeros((366, *prepared.test.shape[1:]), dtype="float32")  # the zero anomaly
    table = fusion_study.reconstruction_scores({"perfect": Identity()}, prepared.test,
                                                prepared.test_times, prepared, clim,
                                                n_resamples=100)
    np.testing.assert_allclose(table.loc["perfect", "rmse"], 0, atol=1e-3)
    truth = prepared.destandardise(prepared.test, prepared.test_times)
    by_hand = metrics.lat_weighted_rmse(prepared.climatology[
        pd.DatetimeIndex(prepared.test_times).day_of_year.to_numpy() - 1], truth,
        prepared.lat, time_axis=0)
    np.testing.assert_allclose(table.loc["day-of-year climatology", "rmse"], by_hand,
                               rtol=1e-5)
    # The training mean is the physical one (the anomaly space's mean attribute is 0): the
    # mean of the physical training days, to float32 sums' precision.
    physical_train = report.destandardise(report.train)
    np.testing.assert_allclose(fusion_study.physical_training_mean(prepared),
                               physical_train.mean(axis=(0, 2, 3)), rtol=1e-5)
    assert (table.loc["day-of-year climatology", "rmse"]
            < table.loc["training mean", "rmse"]).all()


def test_physical_forecasts_and_persistence_in_the_anomaly_space():
    prepared = anomaly_data()
    times = prepared.test_times
    physical = prepared.destandardise(prepared.test, times)
    persistence = forecast_scores.persistence_source(prepared.test, times, prepared.as_valid_at)
    # Persistence is yesterday's physical field (not yesterday's anomaly) for every lead.
    inits = np.array([0, 3, 5])
    valid = times[inits[:, None] + np.arange(1, 3)]
    out = forecast_scores.physical_at(prepared.destandardise, persistence(inits, 2), valid)
    for lead in (0, 1):
        np.testing.assert_allclose(out[:, lead].numpy(), physical[inits], rtol=1e-5, atol=1e-3)
    scores = fusion_study.score_physical_forecasts({"persistence": persistence}, prepared,
                                                   "test", context=1)
    rmse = scores.pivot(index="forecaster", columns="variable", values="rmse")
    # In physical units: every init 0..T-2 against the next physical day.
    by_hand = metrics.lat_weighted_rmse(physical[:-1], physical[1:], prepared.lat, time_axis=0)
    np.testing.assert_allclose(rmse.loc["persistence", list(CHANNELS)], by_hand, rtol=1e-4)


def test_fine_grid_in_the_anomaly_space_keeps_the_runs_climatology():
    from geofusion.data import prepare
    from geofusion.variables import VARIABLES
    from geofusion.world.synthetic import synthetic_era5

    rng = np.random.default_rng(1)
    mean = np.array([280.0, 5e4, 0.0, 0.0, 3e-3], dtype="float32")
    std = np.array([2.0, 500.0, 10.0, 10.0, 1e-3], dtype="float32")
    clim = (mean[None, :, None, None] + std[None, :, None, None]
            * rng.normal(size=(366, 5, 4, 8))).astype("float32")
    base = prepared_data()
    prepared = PreparedData(**{**base.__dict__, "channels": VARIABLES,
                               "train": np.zeros((10, 5, 4, 8), "float32"),
                               "mean": np.zeros(5, "float32"), "std": std,
                               "space": "anomaly", "climatology": clim})
    fine, reason = fusion_study.fine_grid(prepared, 2, "2001-01-01", "2001-01-10", 500)
    assert reason is None and fine.climatology.shape == (366, 5, 8, 16)
    own = prepare(synthetic_era5(start="2001-01-01", end="2001-01-10", seed=1, nlat=8, nlon=16),
                  level=500)
    # Back to physical units through the run's (interpolated) climatology and std.
    np.testing.assert_allclose(fine.physical(fine.train, fine.train_times),
                               own.destandardise(own.train), rtol=1e-5, atol=1e-3)
    with pytest.raises(ValueError, match="times"):
        fusion_study.restandardise(own.train, own, prepared)


def test_summary_table_ratios_are_means_of_per_variable_ratios():
    variables = ["a", "b"]
    rmse = pd.DataFrame({"a": [2.0, 1.0, 4.0, 3.0, 10.0], "b": [2.0, 4.0, 4.0, 1.0, 10.0]},
                        index=["s", "s + ridge decoder", "day-of-year climatology",
                               "EOF code (k = 2)", "training mean"])
    recon = pd.concat({"rmse": rmse}, axis=1)
    forecast = pd.DataFrame({"a": [1.0, 2.0, 4.0], "b": [3.0, 1.0, 2.0]},
                            index=["s", "persistence", "climatology"])[variables]
    table = fusion_study.summary_table(
        ["s"], ["persistence"], pd.DataFrame({"parameters": [10], "MFLOPs/sample": [1.234]},
                                             index=["s"]),
        pd.DataFrame({"positive_cosine": [0.9], "negative_cosine": [0.1],
                      "embedding_variance": [0.5]}, index=["s"]),
        recon, forecast, pd.DataFrame({"season_accuracy": [0.7],
                                       "latent_second_difference": [0.2]}, index=["s"]),
        pd.DataFrame({"s": [0.9, 0.5, 0.1]}, index=["a", "b", "(different day)"]),
        pd.DataFrame(columns=["cosine(fine, coarsened) same day"]), "EOF code (k = 2)")
    row = table.loc["s"]
    assert row["recon RMSE / climatology"] == pytest.approx((2 / 4 + 2 / 4) / 2)
    assert row["recon RMSE / climatology (ridge decoder)"] == pytest.approx((1 / 4 + 4 / 4) / 2)
    # best decoder (1, 2) over the best of climatology and EOF code (3, 1) per variable
    assert row["recon RMSE / best baseline"] == pytest.approx((1 / 3 + 2 / 1) / 2)
    assert row["forecast RMSE / climatology (1 day)"] == pytest.approx((1 / 4 + 3 / 2) / 2)
    assert row["forecast RMSE / best baseline (1 day)"] == pytest.approx((1 / 2 + 3 / 1) / 2)
    assert row["missing-mode cosine (worst)"] == 0.5 and np.isnan(row["fine/coarse cosine"])
    assert list(table.index) == ["s", "persistence"]
    assert np.isnan(table.loc["persistence", "recon RMSE / climatology"])


def test_eof_residual_schemes_start_as_the_eof_code_of_the_training_days_only(tmp_path):
    """Issue 24: the basis of encoder="eof_residual" is fitted on training days only (changing
    the validation / test days changes nothing), every scheme built with it starts as the EOF
    code of the zero-filled input, and its checkpoints live apart from the schemes alone."""
    import dataclasses

    from geofusion.data.eof import fit_eof
    from geofusion.learning.config import TrainConfig

    prepared = prepared_data()
    params = fusion_study.encoder_parameters(prepared, "eof_residual", 6)
    other = dataclasses.replace(prepared, valid=prepared.valid[::-1] * 3.0 + 1.0)
    again = fusion_study.encoder_parameters(other, "eof_residual", 6)
    for key, value in params["eof_basis"].items():
        torch.testing.assert_close(again["eof_basis"][key], value, rtol=0, atol=0)
    code = fit_eof(prepared.train, prepared.lat, 6)
    np.testing.assert_allclose(params["eof_basis"]["components"].numpy(), code.components)
    assert fusion_study.encoder_parameters(prepared, "resnet", 6) == {"encoder": "resnet"}
    with pytest.raises(ValueError, match="unknown encoder"):
        fusion_study.encoder_parameters(prepared, "eof", 6)

    assert fusion_study.checkpoint_root(tmp_path, "resnet") == str(tmp_path / "09_fusion")
    root = fusion_study.checkpoint_root(tmp_path, "eof_residual")
    assert root == str(tmp_path / "09_fusion_eof_residual")
    runs = fusion_study.fusion_runs(["early", "hybrid_self_attention"], "early", 0.3,
                                    "late_concat")
    train_set = fusion_study.FieldDataset(prepared.train[:16], np.zeros(16, dtype=int))
    config = TrainConfig(epochs=1, batch_size=8, lr=1e-3, device="cpu")
    # Every scheme as built (untrained) is the EOF code of the zero-filled input.
    from geofusion.learning.fusion_methods import build_fusion_method
    x = torch.from_numpy(prepared.valid[:3])
    for _, scheme, p_drop, objective in runs:
        kind, operator = fusion_study.parse_scheme(scheme)
        method = build_fusion_method(objective, kind=kind, fusion=operator, in_channels=2,
                                     grid=(4, 8), latent_dim=6, width=2, mode_width=2,
                                     token_dim=4, heads=2, proj_dim=4, proj_hidden_dim=8,
                                     p_mode_dropout=p_drop, groups=((0,), (1,)),
                                     **params).eval()
        present = torch.tensor([[True, False], [False, True], [True, True]])
        filled = x.numpy() * present.numpy()[:, :, None, None]
        with torch.no_grad():
            z = method.encoder(x, present)
        np.testing.assert_allclose(z.numpy(), code.encode(filled), rtol=1e-4, atol=1e-4)
    methods, _ = fusion_study.train_fusion_methods(
        runs[:1], train_set, config, root, in_channels=2, grid=(4, 8), latent_dim=6, width=2,
        proj_dim=4, proj_hidden_dim=8, augmentation="native", **params)
    assert (tmp_path / "09_fusion_eof_residual" / "early" / "checkpoint.pt").exists()
    assert type(methods["early"].encoder).__name__ == "EOFResidualFusionEncoder"
