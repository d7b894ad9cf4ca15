"""geofusion.downstream.reconstruction: scores against independent per-day loops, nested masks."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from geofusion.data.observations import apply_mask, make_mask
from geofusion.downstream.reconstruction import (
    FunctionReconstructor,
    LatentReconstructor,
    score_reconstruction,
)
from geofusion.experiments.scorecard import validate_scorecard
from geofusion.experiments.sparsity_study import SparsityEvaluation
from geofusion.learning.methods import build_method

CHANNELS = ["2m_temperature", "geopotential", "u_component_of_wind", "v_component_of_wind",
            "specific_humidity"]
GRID = (8, 16)
LAT = np.linspace(-78.75, 78.75, GRID[0])
SCALE = np.array([10.0, 500.0, 5.0, 4.0, 0.002])[:, None, None]
OFFSET = np.array([280.0, 5.5e4, 0.0, 0.0, 0.004])[:, None, None]


def to_physical(x, times=None):
    return x * SCALE + OFFSET


@pytest.fixture(scope="module")
def autoencoder():
    torch.manual_seed(0)
    method = build_method("autoencoder", grid=GRID, width=2, latent_dim=6)
    return method.eval()


@pytest.fixture(scope="module")
def days():
    return torch.randn(6, 5, *GRID, generator=torch.Generator().manual_seed(1))


def loop_reference(method, fields, observed, truth):
    """Per-day loop: embed the masked day, decode, area-weighted squared error per variable."""
    weights = np.cos(np.deg2rad(LAT))
    weights = weights / weights.mean()
    daily, centred, raw = [], [], []
    with torch.no_grad():
        full = [method.encoder(fields[n:n + 1])[0].numpy() for n in range(len(fields))]
        mu = np.mean(full, axis=0)
        for n in range(len(fields)):
            x = apply_mask(fields[n:n + 1], observed[n:n + 1])
            z = method.encoder(x)[0]
            recon = to_physical(method.decoder(z[None])[0].numpy().astype(np.float64))
            err = (recon - truth[n]) ** 2 * weights[None, :, None]
            daily.append(err.mean(axis=(1, 2)))
            a, b = z.numpy() - mu, full[n] - mu
            centred.append(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
            raw.append(z.numpy() @ full[n] / np.linalg.norm(z.numpy()) / np.linalg.norm(full[n]))
    return np.array(daily), np.mean(centred), np.mean(raw)


def test_scores_match_a_per_day_loop(autoencoder, days):
    observed = make_mask((len(days), *GRID), 0.5, "patch", torch.Generator().manual_seed(3))
    truth = to_physical(days.numpy().astype(np.float64))
    fields = days * observed[:, None]
    model = LatentReconstructor(autoencoder, autoencoder.decoder, batch_size=4)
    with pytest.raises(ValueError, match="pass model.latents\\(complete_fields\\)"):
        score_reconstruction(model, fields, observed, truth, LAT, to_physical, CHANNELS)
    score, reconstruction = score_reconstruction(model, fields, observed, truth, LAT,
                                                 to_physical, CHANNELS,
                                                 complete_latents=model.latents(days))
    daily, centred, raw = loop_reference(autoencoder, days, observed, truth)
    np.testing.assert_allclose(score.daily_mse, daily, rtol=1e-4)
    expected = np.sqrt(daily.mean(axis=0))
    np.testing.assert_allclose([score.rmse[c] for c in CHANNELS], expected, rtol=1e-4)
    assert score.centred_cosine == pytest.approx(centred, abs=1e-5)
    assert score.cosine == pytest.approx(raw, abs=1e-5)
    assert reconstruction.shape == days.shape


def test_baseline_without_latent_is_scored_on_its_fields(days):
    truth = to_physical(days.numpy().astype(np.float64))
    perfect = FunctionReconstructor(lambda fields, observed, times, noise_std: days.clone())
    shifted = FunctionReconstructor(lambda fields, observed, times, noise_std: days + 1.0)
    observed = make_mask((len(days), *GRID), 0.9, "pixel", torch.Generator().manual_seed(0))
    score, _ = score_reconstruction(perfect, days * observed[:, None], observed, truth, LAT,
                                    to_physical, CHANNELS)
    assert max(score.rmse.values()) < 1e-3 and math.isnan(score.centred_cosine)
    score, _ = score_reconstruction(shifted, days, None, truth, LAT, to_physical, CHANNELS)
    # A shift of one standardised unit is one training std of each variable.
    np.testing.assert_allclose([score.rmse[c] for c in CHANNELS], SCALE.ravel(), rtol=1e-5)
    with pytest.raises(ValueError, match="same \\(N, C, H, W\\) shape"):
        bad = FunctionReconstructor(lambda fields, observed, times, noise_std: fields[:, :2])
        score_reconstruction(bad, days, None, truth, LAT, to_physical, CHANNELS)


def test_evaluation_masks_are_nested_and_shared_by_day_subsets(autoencoder, days):
    times = np.arange("2001-01-01", "2001-01-07", dtype="datetime64[D]")
    ev = SparsityEvaluation({"ae": LatentReconstructor(autoencoder, autoencoder.decoder)},
                            days, times, LAT, to_physical, CHANNELS, seed=4)
    for kind in ("pixel", "patch", "swath"):
        _, low = ev.observe(kind, 0.3)
        _, high = ev.observe(kind, 0.6)
        assert bool((high <= low).all()) and int((~high[0]).sum()) == round(0.6 * 128)
    full, mask = ev.observe("swath", 0.5, noise_std=0.3)
    part, part_mask = ev.observe("swath", 0.5, noise_std=0.3, days=[2])
    torch.testing.assert_close(part[0], full[2])
    assert torch.equal(part_mask[0], mask[2])
    assert float(full[~mask[:, None].expand_as(full)].abs().max()) == 0.0  # missing = 0
    # Nothing missing and no noise: the complete day, cosine 1.
    assert ev.scores("pixel", 0.0)["ae"].centred_cosine == pytest.approx(1.0, abs=1e-5)
    # Scores are those of score_reconstruction on the same observation.
    direct, _ = score_reconstruction(ev.models["ae"], *ev.observe("patch", 0.6), ev.truth, LAT,
                                     to_physical, CHANNELS,
                                     complete_latents=ev.models["ae"].latents(days))
    assert ev.scores("patch", 0.6)["ae"].rmse == pytest.approx(direct.rmse)
    table = ev.curves(["pixel", "patch"], [0.0, 0.6], [0.0, 0.3])
    assert len(table) == 2 * 2 * 2 * 5
    row = table[(table.kind == "patch") & (table.missing_fraction == 0.6)
                & (table.noise_std == 0.0) & (table.variable == "geopotential")]
    assert float(row.rmse.iloc[0]) == pytest.approx(direct.rmse["geopotential"])
    recon, observation, day_mask = ev.reconstruct_days("ae", [1], "patch", 0.6)
    assert np.isnan(observation[0][:, ~day_mask[0]]).all()
    assert ev.day_cosine("ae", 1, "patch", 0.6) == pytest.approx(
        float(ev.scores("patch", 0.6)["ae"].daily_centred_cosine[1]), abs=1e-5)


def test_distinct_masks_cycle_over_days_and_stay_nested(autoencoder, days):
    times = np.arange(6).astype("datetime64[D]")
    model = {"ae": LatentReconstructor(autoencoder, autoencoder.decoder)}
    cycled = SparsityEvaluation(model, days, times, LAT, to_physical, CHANNELS, seed=1,
                                distinct_masks=2)
    _, masks = cycled.observe("patch", 0.5)
    assert torch.equal(masks[0], masks[2]) and torch.equal(masks[1], masks[5])
    assert not torch.equal(masks[0], masks[1])
    assert bool((cycled.observe("patch", 0.7)[1] <= masks).all())
    with pytest.raises(ValueError, match="distinct_masks must be >= 1"):
        SparsityEvaluation(model, days, times, LAT, to_physical, CHANNELS, distinct_masks=0)


def test_bad_inputs_say_what_to_pass(autoencoder, days):
    model = {"ae": LatentReconstructor(autoencoder, autoencoder.decoder)}
    times = np.arange(6).astype("datetime64[D]")
    with pytest.raises(ValueError, match="times of the evaluation days"):
        SparsityEvaluation(model, days, times[:3], LAT, to_physical, CHANNELS)
    with pytest.raises(ValueError, match="no models"):
        SparsityEvaluation({}, days, times, LAT, to_physical, CHANNELS)
    ev = SparsityEvaluation(model, days, times, LAT, to_physical, CHANNELS)
    with pytest.raises(ValueError, match="mask kind must be one of"):
        ev.observe("stripes", 0.5)


def test_intervals_scorecard_and_best_baseline(autoencoder, days):
    from geofusion.experiments.sparsity_study import versus_best_baseline
    from geofusion.verification.bootstrap import bootstrap_rmse

    times = np.arange("2001-01-01", "2001-01-07", dtype="datetime64[D]")
    noise_seen = []

    def shrunk(fields, observed, times, noise_std):  # a baseline that records the noise std
        noise_seen.append(noise_std)
        return 0.5 * fields

    models = {"ae": LatentReconstructor(autoencoder, autoencoder.decoder),
              "half": FunctionReconstructor(shrunk),
              "climatology": FunctionReconstructor(lambda f, o, t, s: torch.zeros_like(f))}
    ev = SparsityEvaluation(models, days, times, LAT, to_physical, CHANNELS, seed=2)
    curves = ev.curves(["pixel"], [0.0, 0.5], [0.0, 0.25])
    assert sorted(set(noise_seen)) == [0.0, 0.25]
    score = ev.scores("pixel", 0.5)["ae"]
    expected = bootstrap_rmse(score.daily_mse, block=6, seed=2)
    row = curves[(curves.model == "ae") & (curves.missing_fraction == 0.5)
                 & (curves.noise_std == 0) & (curves.variable == "geopotential")].iloc[0]
    assert row.rmse_low == pytest.approx(expected.low[1])
    assert row.rmse_high == pytest.approx(expected.high[1])
    assert (curves.rmse_low <= curves.rmse + 1e-9).all()
    assert (curves.rmse <= curves.rmse_high + 1e-9).all()
    # Best baseline, against a loop over settings and variables.
    table = versus_best_baseline(curves, ["half", "climatology"])
    for (model, kind, ratio, std), got in table.iterrows():
        rows = curves[(curves.kind == kind) & (curves.missing_fraction == ratio)
                      & (curves.noise_std == std)].set_index(["model", "variable"])["rmse"]
        relative = {b: np.mean([rows[(b, v)] / rows[("climatology", v)] for v in CHANNELS])
                    for b in ("half", "climatology")}
        best = min(relative, key=relative.get)
        ratios = [rows[(model, v)] / rows[(best, v)] for v in CHANNELS]
        assert got.best_baseline == best
        assert got.rmse_over_best_baseline == pytest.approx(np.mean(ratios))
        assert got.variables_better == sum(r < 1 for r in ratios)
    card = ev.scorecard([0.0, 0.5])
    assert validate_scorecard(card) is card  # the schema of reports/results.json
    assert sorted(card["reconstruction_rmse"]) == ["ae", "half"]
    assert sorted(card["reconstruction_rmse"]["ae"]) == ["0", "0.5"]
    assert card["reconstruction_rmse"]["ae"]["0.5"] == pytest.approx(score.rmse)
    assert card["climatology_rmse"] == pytest.approx(ev.scores("pixel", 0.0)["climatology"].rmse)
    low, high = card["intervals"]["reconstruction_rmse"]["ae"]["0.5"]["geopotential"]
    assert (low, high) == pytest.approx((expected.low[1], expected.high[1]))
    assert sorted(card["intervals"]["climatology_rmse"]) == sorted(CHANNELS)


# ------------------------------------------------------------------ issue 23: EOF baselines,
# masked ridge decoder, anomaly metrics


class _TrainOnly:
    """A prepared-data stand-in whose validation and test blocks raise when read: a fit that
    touches them fails."""

    def __init__(self, train: np.ndarray, lat: np.ndarray) -> None:
        self.train, self.lat = train, lat

    def __getattr__(self, name: str):
        raise AssertionError(f"the fit read prepared.{name}; only training days may be read")


def _low_rank_days(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 4)) @ rng.normal(size=(4, 5 * GRID[0] * GRID[1]))) \
        .reshape(n, 5, *GRID).astype(np.float32)


def test_eof_reconstructors_fit_on_training_days_only_and_recover_low_rank_days():
    from geofusion.downstream.reconstruction import (
        eof_reconstructor,
        fit_eof_code,
        gappy_eof_reconstructor,
    )
    days = _low_rank_days(60)
    code = fit_eof_code(_TrainOnly(days[:40], LAT), k=4)
    held = torch.from_numpy(days[40:])
    full = eof_reconstructor(code).reconstruct(held, None, None)
    torch.testing.assert_close(full, held, rtol=0, atol=1e-3)  # rank 4 data, 4 modes
    observed = make_mask((20, *GRID), 0.5, "pixel", torch.Generator().manual_seed(0))
    sparse = apply_mask(held, observed)
    gappy = gappy_eof_reconstructor(code).reconstruct(sparse, observed, None)
    projected = eof_reconstructor(code).reconstruct(sparse, observed, None)
    gappy_err = float((gappy - held).pow(2).mean())
    # The gappy fit uses the observed points only: far better than projecting zero-filled days.
    assert gappy_err < 1e-3 < float((projected - held).pow(2).mean())


def test_masked_ridge_decoder_reads_training_days_only_and_decodes_masked_latents():
    from geofusion.downstream.reconstruction import fit_masked_ridge_decoder
    days = _low_rank_days(48, seed=1)
    torch.manual_seed(0)
    method = build_method("barlow_twins", in_channels=5, grid=GRID, latent_dim=8, width=2,
                          proj_dim=4, proj_hidden_dim=8,
                          observation={"kind": "pixel", "min_ratio": 0.5, "max_ratio": 0.5})
    observation = {"kind": "pixel", "min_ratio": 0.5, "max_ratio": 0.5}
    decoder = fit_masked_ridge_decoder(method, _TrainOnly(days, LAT), observation, seed=3)
    again = fit_masked_ridge_decoder(method, _TrainOnly(days, LAT), observation, seed=3)
    assert torch.equal(decoder.weight, again.weight)  # same days, same masks: same fit
    complete = fit_masked_ridge_decoder(method, _TrainOnly(days, LAT),
                                        {"kind": "pixel", "min_ratio": 0.0, "max_ratio": 0.0},
                                        seed=3)
    assert not torch.allclose(decoder.weight, complete.weight)  # the masks changed the latents
    assert decoder(torch.zeros(2, 8)).shape == (2, 5, *GRID)


def test_anomaly_metrics_match_their_definitions():
    days = torch.from_numpy(_low_rank_days(10, seed=2))
    times = np.arange(10).astype("datetime64[D]")
    truth = to_physical(days.numpy().astype(np.float64))
    climatology = to_physical(np.zeros_like(truth))
    half = FunctionReconstructor(lambda fields, observed, t, s: 0.5 * fields)
    score, _ = score_reconstruction(half, days, None, truth, LAT, to_physical, CHANNELS, times,
                                    climatology=climatology)
    # The forecast anomaly is half the true anomaly: perfectly correlated ...
    assert all(abs(v - 1.0) < 1e-9 for v in score.acc.values())
    # ... and explains 1 - 0.25 = 0.75 of the anomaly variance.
    for value in score.anomaly_variance_explained.values():
        assert value == pytest.approx(0.75, abs=1e-9)
    clim = FunctionReconstructor(lambda fields, observed, t, s: 0 * fields)
    score, _ = score_reconstruction(clim, days, None, truth, LAT, to_physical, CHANNELS, times,
                                    climatology=climatology)
    assert all(abs(v) < 1e-12 for v in score.anomaly_variance_explained.values())
    ev = SparsityEvaluation({"half": half}, days, times, LAT, to_physical, CHANNELS,
                            climatology=climatology)
    curves = ev.curves(["pixel"], [0.0])
    assert np.allclose(curves["anomaly_variance_explained"], 0.75)


def test_scorecard_records_the_block_and_anomaly_correlation():
    days = torch.from_numpy(_low_rank_days(8, seed=3))
    times = np.arange(8).astype("datetime64[D]")
    climatology = to_physical(np.zeros(days.shape))
    models = {"climatology": FunctionReconstructor(lambda f, o, t, s: 0 * f),
              "half": FunctionReconstructor(lambda f, o, t, s: 0.5 * f)}
    ev = SparsityEvaluation(models, days, times, LAT, to_physical, CHANNELS,
                            climatology=climatology)
    card = validate_scorecard(ev.scorecard((0.0, 0.5), scored_block="test"))
    assert card["scored_block"] == "test"
    assert set(card["reconstruction_acc"]["half"]) == {"0", "0.5"}
    assert card["reconstruction_acc"]["half"]["0"]["geopotential"] == pytest.approx(1.0)


def test_fit_joint_decoder_fits_its_eof_basis_and_weights_on_training_days_only(monkeypatch):
    from geofusion.data.eof import area_weights, fit_eof
    from geofusion.downstream import reconstruction
    from geofusion.learning import model_cache

    class Prepared(_TrainOnly):
        def season_labels(self, split):
            assert split == "train", f"the fit read the {split} labels"
            return np.arange(len(self.train)) % 4

    days = _low_rank_days(30, seed=2)
    captured = {}

    def cached_fit(make, description, train_set, config, run_dir, progress=True):
        captured["description"], captured["days"] = description, len(train_set)
        return make(), None, None

    monkeypatch.setattr(model_cache, "cached_fit", cached_fit)
    monkeypatch.setattr(model_cache, "data_fingerprint", lambda prepared: {"train": "stub"})
    architecture = dict(in_channels=5, grid=list(GRID), latent_dim=4, width=2, proj_dim=4,
                        proj_hidden_dim=8, decoder_width=2, augmentation="native",
                        encoder="eof_residual", reconstruction_loss="lat_weighted")
    model, _ = reconstruction.fit_joint_decoder("quetin", {}, architecture,
                                                Prepared(days, LAT), "unused", None, n_days=20)
    assert captured["days"] == 20
    params = captured["description"]["params"]
    assert params["encoder"] == "eof_residual" and params["reconstruction_loss"] == "lat_weighted"
    code = fit_eof(days, LAT, 4)  # every training day, no other block
    np.testing.assert_allclose(model.encoder.basis.detach().numpy(), code.components, atol=1e-6)
    np.testing.assert_allclose(model.latitude_weights.numpy(), area_weights(LAT), rtol=1e-6)


class _NoTestBlock:
    """Train and validation days of an anomaly-space PreparedData stand-in; reading the test
    block fails."""

    space = "anomaly"
    channels = CHANNELS
    lat = LAT

    def __init__(self, days: np.ndarray) -> None:
        start = np.datetime64("2001-01-01", "ns")
        self.train, self.valid = days[:30], days[30:]
        self.train_times = start + np.arange(30).astype("timedelta64[D]")
        self.valid_times = start + np.arange(30, len(days)).astype("timedelta64[D]")

    def destandardise(self, x, times):
        return to_physical(np.asarray(x, dtype=np.float64))

    def __getattr__(self, name: str):
        raise AssertionError(f"choose_decoder read prepared.{name}; it may read train and valid")


@pytest.mark.parametrize("missing", [0.0, 0.5])
def test_choose_decoder_picks_the_better_decoder_on_validation_days(autoencoder, missing):
    from geofusion.downstream.reconstruction import choose_decoder
    prepared = _NoTestBlock(_low_rank_days(40, seed=4))
    zero = torch.nn.Module()
    zero.forward = lambda z: torch.zeros(len(z), 5, *GRID)     # decodes the climatology
    scaled = torch.nn.Module()
    scaled.forward = lambda z: 10.0 * autoencoder.decoder(z)   # much worse than zero
    days = np.arange(6)
    name, table = choose_decoder(autoencoder, {"scaled": scaled, "climatology": zero},
                                 prepared, days, missing=missing, seed=2)
    assert name == "climatology"
    # The climatology decoder scores exactly 1 against the climatology, by definition.
    assert table.loc["climatology", "mean RMSE / climatology"] == pytest.approx(1.0, abs=1e-9)
    assert table.loc["scaled", "mean RMSE / climatology"] > 1
    # Its t2m RMSE is the area-weighted RMSE of the validation days' anomalies, by hand.
    weights = np.cos(np.deg2rad(LAT)) / np.cos(np.deg2rad(LAT)).mean()
    anomaly = prepared.valid[days, 0].astype(np.float64) * SCALE[0]
    by_hand = np.sqrt((anomaly ** 2 * weights[None, :, None]).mean())
    assert table.loc["climatology", "2m_temperature"] == pytest.approx(by_hand, rel=1e-5)


def test_choose_decoder_rejects_bad_settings(autoencoder):
    from geofusion.downstream.reconstruction import choose_decoder
    prepared = _NoTestBlock(_low_rank_days(40, seed=4))
    with pytest.raises(ValueError, match="at least one candidate"):
        choose_decoder(autoencoder, {}, prepared, np.arange(3))
    with pytest.raises(ValueError, match=r"missing must be a fraction in \[0, 1\)"):
        choose_decoder(autoencoder, {"a": autoencoder.decoder}, prepared, np.arange(3),
                       missing=1.0)


def test_build_frozen_decoder_is_seeded_weighted_and_frozen():
    from geofusion.downstream.reconstruction import build_frozen_decoder
    lat = np.linspace(-87.1875, 87.1875, 32)
    method = build_method("autoencoder", latent_dim=8, width=2)
    first = build_frozen_decoder(method, 8, 5, (32, 64), width=2, seed=3,
                                 reconstruction_loss="lat_weighted", lat=lat)
    again = build_frozen_decoder(method, 8, 5, (32, 64), width=2, seed=3)
    for a, b in zip(first.decoder.parameters(), again.decoder.parameters(), strict=True):
        assert torch.equal(a, b)
    weights = np.cos(np.deg2rad(lat)) / np.cos(np.deg2rad(lat)).mean()
    np.testing.assert_allclose(first.latitude_weights.numpy(), weights, rtol=1e-5)
    assert again.latitude_weights is None
    assert not any(p.requires_grad for p in first.method.parameters())
    with pytest.raises(ValueError, match="needs the grid's latitudes"):
        build_frozen_decoder(method, 8, 5, (32, 64), reconstruction_loss="lat_weighted")
    with pytest.raises(ValueError, match="unknown reconstruction_loss"):
        build_frozen_decoder(method, 8, 5, (32, 64), reconstruction_loss="l1")


def test_decoder_summary_against_the_curves(autoencoder, days):
    from geofusion.experiments.sparsity_study import decoder_summary

    times = np.arange("2001-01-01", "2001-01-07", dtype="datetime64[D]")
    models = {"ae": LatentReconstructor(autoencoder, autoencoder.decoder),
              "half": FunctionReconstructor(lambda f, o, t, s: 0.5 * f),
              "climatology": FunctionReconstructor(lambda f, o, t, s: torch.zeros_like(f))}
    curves = SparsityEvaluation(models, days, times, LAT, to_physical, CHANNELS,
                                seed=2).curves(["pixel"], [0.0, 0.5])
    embedding = pd.DataFrame({"positive_cosine": [0.9], "negative_cosine": [0.1],
                              "embedding_variance": [2.0]}, index=["ae"])
    table = decoder_summary(curves, 0.5, ["half", "climatology"], {"ae": 1.5}, {"ae": 0.25},
                            embedding, ["half", "ae"])
    assert list(table.index) == ["half", "ae"]
    for ratio, column in ((0.0, "RMSE / climatology"), (0.5, "RMSE / climatology (sparse input)")):
        rows = curves[curves.missing_fraction == ratio].set_index(["model", "variable"])["rmse"]
        expected = np.mean([rows[("ae", v)] / rows[("climatology", v)] for v in CHANNELS])
        assert table.loc["ae", column] == pytest.approx(expected)
    assert table.loc["ae", "final contrastive loss"] == 1.5
    assert np.isnan(table.loc["half", "final reconstruction MSE"])
    assert table.loc["ae", "positive_cosine"] == 0.9
    assert table.loc["ae", "vs best baseline (sparse input)"].endswith("better)")
