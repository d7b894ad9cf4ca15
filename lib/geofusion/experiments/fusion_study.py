"""Comparing fusion schemes (notebook 09): training, reconstruction, forecast, robustness, transfer.

Every encoder is evaluated on its own inference view (``method.embed``, through
:class:`geofusion.learning.decoders.FrozenEncoderDecoder` and
:func:`geofusion.learning.fusion_methods.missing_mode_robustness`), every RMSE is latitude-weighted
in
physical units with a 95 % block bootstrap over the scored days (the test block in notebook
09; :mod:`geofusion.verification.bootstrap`), whatever the space the models read (every field
goes through ``prepared.destandardise(x, times)``),
and the reference called *climatology* is always the day-of-year climatology of the training
years (:func:`geofusion.verification.baselines.training_climatology`); the training mean appears
only under
its own name.

- :func:`fusion_runs`, :func:`encoder_parameters`, :func:`checkpoint_root`,
  :func:`train_fusion_methods`: the schemes to train, their encoder (the scheme alone or the
  EOF code plus the scheme as a residual) and their training.
- :func:`train_frozen_decoders`, :func:`reconstruction_scores`: a decoder on each frozen
  encoder, scored against the day-of-year climatology and the training mean.
- :func:`fit_latent_forecasters`: a latent LSTM per frozen encoder + decoder.
- :func:`missing_mode_table`, :func:`resolution_transfer`, :func:`restandardise`: missing
  modes and other grids.
- :func:`with_interval`, :func:`plot_relative_bars`: tables and figures.

Example:
    >>> fusion_runs(["early"], dropout_scheme="early", mode_group_scheme=None)
    [('early', 'early', 0.0, 'barlow_twins'), ('early+dropout', 'early', 0.3, 'barlow_twins')]
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import Dataset

from geofusion.data import FieldDataset, load, prepare
from geofusion.downstream.embeddings import embed
from geofusion.downstream.forecast_scores import ForecastSource, score_forecasts
from geofusion.downstream.forecasting import LatentForecaster, fit_latent_forecaster
from geofusion.learning.config import TrainConfig
from geofusion.learning.decoders import FrozenEncoderDecoder, reconstruct
from geofusion.learning.fusion_methods import (
    FUSION_ENCODERS,
    build_fusion_method,
    missing_mode_robustness,
)
from geofusion.learning.model_cache import data_dependent_parameters
from geofusion.learning.training import fit
from geofusion.models.fusion_encoders import parse_scheme
from geofusion.verification.baselines import climatology_forecast, training_climatology
from geofusion.verification.bootstrap import bootstrap_rmse
from geofusion.verification.metrics import lat_weighted_mse, lat_weighted_rmse
from geofusion.world.synthetic import synthetic_era5

__all__ = ["fusion_runs", "encoder_parameters", "checkpoint_root", "train_fusion_methods",
           "train_frozen_decoders",
           "reconstruction_scores", "fit_latent_forecasters", "pivot_scores",
           "missing_mode_table", "resolution_transfer", "restandardise", "FineGrid",
           "fine_grid", "fine_decoder_scores", "physical_training_mean",
           "upsampled_climatology", "score_physical_forecasts",
           "summary_table", "with_interval", "interval_pairs",
           "plot_relative_bars"]

#: ``(name, scheme, p_mode_dropout, objective)`` of one encoder to train.
FusionRun = tuple[str, str, float, str]


def fusion_runs(schemes: Sequence[str], dropout_scheme: str | None = None,
                p_mode_dropout: float = 0.3, mode_group_scheme: str | None = None
                ) -> list[FusionRun]:
    """Every scheme with Barlow Twins, plus ``<dropout_scheme>+dropout`` (mode dropout ``p``)
    and ``<mode_group_scheme>+mode_group`` (the mode-group objective) when given."""
    runs = [(s, s, 0.0, "barlow_twins") for s in schemes]
    if dropout_scheme is not None:
        runs.append((f"{dropout_scheme}+dropout", dropout_scheme, p_mode_dropout,
                     "barlow_twins"))
    if mode_group_scheme is not None:
        runs.append((f"{mode_group_scheme}+mode_group", mode_group_scheme, 0.0, "mode_group"))
    for _, scheme, _, _ in runs:
        parse_scheme(scheme)  # unknown names raise before any training
    return runs


def encoder_parameters(prepared: Any, encoder: str, latent_dim: int) -> dict[str, Any]:
    """The ``encoder`` arguments of :func:`build_fusion_method`: ``{"encoder": "resnet"}``, or
    for ``"eof_residual"`` also ``eof_basis``, the ``latent_dim`` leading all-mode EOFs
    fitted on ``prepared.train`` only (all training days, whatever subset the schemes train on;
    :func:`geofusion.learning.model_cache.data_dependent_parameters`), so that at
    initialisation every scheme is the notebook's equal-size EOF code."""
    if encoder not in FUSION_ENCODERS:
        raise ValueError(f"unknown encoder {encoder!r}; choose one of {FUSION_ENCODERS}")
    return {"encoder": encoder,
            **data_dependent_parameters(prepared, {"encoder": encoder,
                                                   "latent_dim": int(latent_dim)})}


def checkpoint_root(run_dir: str | os.PathLike, encoder: str) -> str:
    """Where notebook 09 keeps its schemes' checkpoints: ``<run_dir>/09_fusion`` for the
    schemes alone (the directories of earlier runs), ``<run_dir>/09_fusion_<encoder>``
    otherwise, so a scheme of another encoder is never resumed from the wrong checkpoint."""
    if encoder not in FUSION_ENCODERS:
        raise ValueError(f"unknown encoder {encoder!r}; choose one of {FUSION_ENCODERS}")
    root = os.path.join(os.fspath(run_dir), "09_fusion")
    return root if encoder == "resnet" else f"{root}_{encoder}"


def train_fusion_methods(runs: Sequence[FusionRun], train_set: Dataset, config: TrainConfig,
                         run_dir: str | os.PathLike, seed: int = 0, progress: bool = True,
                         trainer: Callable[..., pd.DataFrame] | None = None,
                         **architecture: Any) -> tuple[dict[str, nn.Module],
                                                       dict[str, pd.DataFrame]]:
    """Build (:func:`geofusion.learning.fusion_methods.build_fusion_method`, initial weights seeded
    by
    ``seed``) and train each run with the same ``config``; checkpoints in
    ``<run_dir>/<name>``, so a rerun loads them. ``architecture``: ``in_channels``, ``grid``,
    ``latent_dim``, ``width``, ``mode_width``, ``token_dim``, ``proj_dim``, ..., loss
    parameters and :func:`encoder_parameters` (checkpoints of another encoder belong under
    another ``run_dir``, :func:`checkpoint_root`). ``trainer``:
    :func:`geofusion.learning.training.fit` (default) or, under torchrun,
    :func:`geofusion.learning.distributed.fit_distributed` (same checkpoints).
    Returns ``(methods, histories)`` keyed by run name."""
    methods, histories = {}, {}
    train = fit if trainer is None else trainer
    for name, scheme, p_drop, objective in runs:
        kind, operator = parse_scheme(scheme)
        torch.manual_seed(seed)
        methods[name] = build_fusion_method(objective, kind=kind, fusion=operator,
                                            p_mode_dropout=p_drop, **architecture)
        histories[name] = train(methods[name], train_set, config,
                                run_dir=os.path.join(run_dir, name), progress=progress)
    return methods, histories


def train_frozen_decoders(methods: Mapping[str, nn.Module], train_set: Dataset,
                          config: TrainConfig, run_dir: str | os.PathLike,
                          make_decoder: Callable[[], nn.Module], seed: int = 0
                          ) -> dict[str, FrozenEncoderDecoder]:
    """A decoder (``make_decoder()``, seeded) trained on each frozen method's latents of its
    own inference view (:class:`FrozenEncoderDecoder`, ``view="inference"``); checkpoints in
    ``<run_dir>/<name>/decoder``."""
    probes = {}
    for name, method in methods.items():
        torch.manual_seed(seed)
        probes[name] = FrozenEncoderDecoder(method, make_decoder())
        fit(probes[name], train_set, config, run_dir=os.path.join(run_dir, name, "decoder"),
            progress=False)
    return probes


def _per_day_mse(prediction: np.ndarray, truth: np.ndarray, lat: np.ndarray) -> np.ndarray:
    return np.asarray(lat_weighted_mse(prediction, truth, lat), dtype=np.float64)


def reconstruction_scores(probes: Mapping[str, nn.Module], fields: np.ndarray, times: Any,
                          prepared: Any, climatology: np.ndarray, seed: int = 0,
                          n_resamples: int = 1000,
                          extra: Mapping[str, np.ndarray] | None = None) -> pd.DataFrame:
    """RMSE of each model's reconstruction of ``fields`` and of the two references.

    Rows: each model of ``probes`` (``reconstruct(model, fields)``), ``day-of-year
    climatology`` (``climatology`` (366, C, H, W) standardised, of the training years, at
    ``times``) and ``training mean`` (:func:`physical_training_mean`, one constant per
    variable), then each of ``extra`` (name -> model-space reconstruction ``(T, C, H, W)`` of
    ``fields``, e.g. the equal-size EOF code and ridge decoders of
    :func:`geofusion.experiments.fusion_linear_twins.complete_input_twins`), scored the same way.
    Every field is taken to physical units with ``prepared.destandardise(x, times)``.
    Columns: one per variable,
    latitude-weighted RMSE in physical units ``sqrt(mean_t MSE_t)``, and the same with
    ``low`` / ``high`` (95 % block bootstrap over the days, blocks of 7, same resamples for
    every row).

    Args:
        probes: name -> model with ``forward(fields)`` (standardised in and out).
        fields: (T, C, H, W) days of the scored block in the model space, consecutive
            for the blocks.
        times: (T,) their datetime64.
        prepared: :class:`geofusion.data.PreparedData` (``destandardise``, ``lat``,
            ``channels``).
        climatology: day-of-year climatology of the *training* days.

    Returns:
        DataFrame indexed by model with a column MultiIndex ``(statistic, variable)``,
        statistic in ``rmse``, ``low``, ``high``.
    """
    truth = np.asarray(prepared.destandardise(fields, times))
    predictions: dict[str, np.ndarray] = {
        name: np.asarray(prepared.destandardise(reconstruct(model, fields), times))
        for name, model in probes.items()}
    predictions["day-of-year climatology"] = np.asarray(
        prepared.destandardise(climatology_forecast(climatology, times), times))
    # The physical training mean, one constant per variable (in the anomaly space 0 is the
    # climatology, not the mean).
    predictions["training mean"] = np.broadcast_to(
        physical_training_mean(prepared)[:, None, None], truth.shape)
    for name, reconstruction in (extra or {}).items():
        predictions[name] = np.asarray(prepared.destandardise(np.asarray(reconstruction), times))
    rows = {}
    for name, prediction in predictions.items():
        ci = bootstrap_rmse(_per_day_mse(prediction, truth, prepared.lat),
                            n_resamples=n_resamples, seed=seed)
        rows[name] = {**{("rmse", v): e for v, e in zip(prepared.channels, ci.estimate,
                                                         strict=True)},
                      **{("low", v): e for v, e in zip(prepared.channels, ci.low, strict=True)},
                      **{("high", v): e for v, e in zip(prepared.channels, ci.high,
                                                         strict=True)}}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.columns = pd.MultiIndex.from_tuples(table.columns, names=["statistic", "variable"])
    return table


def _weights_digest(module: nn.Module) -> str:
    digest = hashlib.sha256()
    for value in module.state_dict().values():
        digest.update(value.detach().cpu().numpy().tobytes())
    return digest.hexdigest()[:10]


def fit_latent_forecasters(probes: Mapping[str, FrozenEncoderDecoder], prepared: Any,
                           run_dir: str | os.PathLike, config: TrainConfig, context: int,
                           hidden_dim: int, train_days: int | None = None, seed: int = 0,
                           tag: str = "09_fusion") -> tuple[dict[str, LatentForecaster],
                                                            dict[str, pd.DataFrame]]:
    """A latent LSTM (:func:`geofusion.downstream.forecasting.fit_latent_forecaster`) per frozen
    encoder
    and its decoder, on the latents of the encoder's inference view.

    The LSTM needs consecutive days: it trains on the last ``train_days`` consecutive training
    days (all when None) and logs its loss on the validation windows. Each is cached by the
    run tag, the name and a digest of the exact encoder + decoder weights.
    """
    data = prepared
    if train_days is not None and train_days < len(prepared.train):
        data = dataclasses.replace(prepared, train=prepared.train[-train_days:],
                                   train_times=prepared.train_times[-train_days:])
    forecasters, histories = {}, {}
    for name, probe in probes.items():
        forecasters[name], histories[name], _ = fit_latent_forecaster(
            probe, probe.decoder, data, run_dir, config,
            representation=f"{tag}/{name}@{_weights_digest(probe)}", context=context,
            hidden_dim=hidden_dim, seed=seed, progress=False)
    return forecasters, histories


def pivot_scores(scores: pd.DataFrame, rows: Sequence[str], channels: Sequence[str]
                 ) -> dict[str, pd.DataFrame]:
    """:func:`geofusion.downstream.forecast_scores.score_forecasts` of one lead as one (forecaster x
    variable) table per statistic (``rmse``, ``acc`` and, when computed, ``rmse_low``,
    ``rmse_high``, ``acc_low``, ``acc_high``), rows in the order of ``rows``."""
    if scores["lead"].nunique() != 1:
        raise ValueError("pivot_scores takes the scores of one lead; select it first, e.g. "
                         "scores[scores.lead == 1]")
    statistics = [c for c in ("rmse", "rmse_low", "rmse_high", "acc", "acc_low", "acc_high")
                  if c in scores]
    return {k: scores.pivot(index="forecaster", columns="variable", values=k).loc[
        list(rows), list(channels)] for k in statistics}


def missing_mode_table(methods: Mapping[str, nn.Module], fields: np.ndarray, seed: int,
                       mode_names: Sequence[str]) -> pd.DataFrame:
    """Mean cosine between each day's full embedding and its embedding with one mode absent,
    per method (columns) and absent mode (rows; last row: two different days), each method
    on its own inference view (:func:`missing_mode_robustness`)."""
    return pd.DataFrame({
        name: missing_mode_robustness(method, fields, torch.Generator().manual_seed(seed),
                                      mode_names=mode_names)["cosine_mean"]
        for name, method in methods.items()})


def resolution_transfer(methods: Mapping[str, nn.Module], fine_fields: np.ndarray,
                        factor: int) -> pd.DataFrame:
    """Does an encoder give a fine-grid day the embedding of its coarsened version?

    Each fine day (N, C, f H, f W) is coarsened by ``factor`` x ``factor`` block averaging; both
    go through the method's inference view (``method.embed``). Columns: the mean cosine
    between the fine and the coarsened embedding of the same day, and between the coarsened
    embeddings of days half the period apart (different days: the reference).
    """
    coarse = torch.nn.functional.avg_pool2d(torch.as_tensor(fine_fields), factor).numpy()

    def unit(e: np.ndarray) -> np.ndarray:
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    rows = {}
    for name, method in methods.items():
        e_fine = unit(embed(method.encoder, fine_fields, transform=method.inference_view))
        e_coarse = unit(embed(method.encoder, coarse, transform=method.inference_view))
        other = np.roll(e_coarse, len(e_coarse) // 2, axis=0)
        rows[name] = {"cosine(fine, coarsened) same day": float((e_fine * e_coarse).sum(1).mean()),
                      "cosine between different days": float((e_coarse * other).sum(1).mean())}
    return pd.DataFrame.from_dict(rows, orient="index")


def _day_index(times: Any) -> np.ndarray:
    return pd.DatetimeIndex(np.asarray(times, dtype="datetime64[ns]").reshape(-1)
                            ).day_of_year.to_numpy() - 1


def physical_training_mean(prepared: Any) -> np.ndarray:
    """The mean of every variable over the training days and grid points in physical units
    ``(C,)`` float32: ``prepared.mean`` in the report space; in the anomaly space (where
    ``mean`` is 0) ``std * mean(a) + mean over training days of c(doy)``."""
    if prepared.climatology is None:
        return np.asarray(prepared.mean, dtype=np.float32)
    counts = np.bincount(_day_index(prepared.train_times), minlength=366).astype(np.float64)
    clim = np.asarray(prepared.climatology, np.float64).mean(axis=(2, 3))  # (366, C)
    anomaly = np.asarray(prepared.train, np.float64).mean(axis=(0, 2, 3))
    return (counts @ clim / counts.sum() + np.asarray(prepared.std, np.float64) * anomaly
            ).astype(np.float32)


def upsampled_climatology(prepared: Any, factor: int) -> np.ndarray | None:
    """``prepared.climatology`` (366, C, H, W, physical) interpolated bilinearly to the grid
    ``factor`` times finer (366, C, fH, fW); None in the report space (no climatology)."""
    if prepared.climatology is None:
        return None
    clim = torch.from_numpy(np.asarray(prepared.climatology, dtype=np.float32))
    size = tuple(int(n) * factor for n in clim.shape[-2:])
    return torch.nn.functional.interpolate(clim, size=size, mode="bilinear",
                                           align_corners=False).numpy()


def restandardise(fields: np.ndarray, source: Any, target: Any, times: Any = None,
                  climatology: np.ndarray | None = None) -> np.ndarray:
    """Fields in ``source``'s space, re-expressed in ``target``'s space (the training
    statistics of the run, never their own): ``(x_phys - target.mean) / target.std`` in the
    report space, ``(x_phys - c(doy)) / target.std`` in the anomaly space with ``c`` the
    run's physical training climatology on the fields' grid (``climatology`` (366, C, H, W),
    default ``target.climatology``; :func:`upsampled_climatology` for a finer grid) and
    ``x_phys = source.destandardise(x, times)``. ``times``: the day of each field (needed
    when either space is the anomaly space)."""
    physical = np.asarray(source.destandardise(np.asarray(fields), times), dtype=np.float64)
    std = np.asarray(target.std, dtype=np.float64)[:, None, None]
    if getattr(target, "climatology", None) is None:
        mean = np.asarray(target.mean, dtype=np.float64)[:, None, None]
        return ((physical - mean) / std).astype(np.float32)
    if times is None:
        raise ValueError("the target is in the anomaly space: pass the day of each field "
                         "(times) to subtract its climatology")
    clim = target.climatology if climatology is None else climatology
    return ((physical - np.asarray(clim, np.float64)[_day_index(times)]) / std
            ).astype(np.float32)


@dataclasses.dataclass
class FineGrid:
    """Days on a grid ``factor`` times finer than the run's, in the run's space (its training
    statistics, and in the anomaly space its training climatology interpolated to the fine
    grid): ``train`` / ``valid`` (T, C, fH, fW), ``lat`` (fH,), ``source``, the days
    ``train_times`` / ``valid_times``, and what :meth:`physical` needs (``mean``, ``std``,
    ``climatology`` (366, C, fH, fW) physical or None)."""

    train: np.ndarray
    valid: np.ndarray
    lat: np.ndarray
    source: str
    train_times: np.ndarray | None = None
    valid_times: np.ndarray | None = None
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    climatology: np.ndarray | None = None

    def physical(self, x: np.ndarray, times: Any) -> np.ndarray:
        """Fine-grid fields of this space ``(T, C, fH, fW)`` in physical units."""
        x = np.asarray(x)
        std = np.asarray(self.std)[:, None, None]
        if self.climatology is None:
            return x * std + np.asarray(self.mean)[:, None, None]
        return x * std + self.climatology[_day_index(times)]


def fine_grid(prepared: Any, factor: int, start: str, end: str, level: int | None,
              path: str | None = None, seed: int = 0, cache_dir: str | None = None
              ) -> tuple[FineGrid | None, str | None]:
    """The fine-grid data for the resolution transfer, or why there is none.

    Synthetic runs get the synthetic model on the fine grid (labelled synthetic); a ``path``
    is loaded as ERA5 on that grid (:func:`geofusion.data.load`, regridded conservatively if
    finer still); a real-data run without ``path`` gets ``(None, reason)``: encoders trained
    on real ERA5 are never shown synthetic fields. Either way the fields are put in
    ``prepared``'s space with its training statistics (:func:`restandardise`; in the anomaly
    space its training climatology interpolated to the fine grid), never their own.
    """
    nlat, nlon = (int(n) * factor for n in prepared.train.shape[-2:])
    if path is None and not prepared.synthetic:
        return None, (f"skipped: the encoders were trained on real ERA5 and no real {nlat}x{nlon}"
                      " ERA5 was given (set fine_data_path, e.g. WeatherBench 2's "
                      f"{nlon}x{nlat} store); synthetic fine fields would not test them")
    if path is None:
        levels = (500 if level is None else level,)
        fine = prepare(synthetic_era5(start=start, end=end, seed=seed + 1, nlat=nlat, nlon=nlon,
                                      levels=levels), level=level)
        source = f"SYNTHETIC {nlat}x{nlon}"
    else:
        fine = load(path, level=level, start=start, end=end, cache_dir=cache_dir, seed=seed,
                    grid=(nlat, nlon))
        source = f"ERA5 {nlat}x{nlon} from {path}"
    clim = upsampled_climatology(prepared, factor)
    return FineGrid(restandardise(fine.train, fine, prepared, fine.train_times, clim),
                    restandardise(fine.valid, fine, prepared, fine.valid_times, clim),
                    np.asarray(fine.lat), source, np.asarray(fine.train_times),
                    np.asarray(fine.valid_times), np.asarray(prepared.mean),
                    np.asarray(prepared.std), clim), None


def fine_decoder_scores(method: nn.Module, probe: nn.Module, fine: FineGrid, factor: int,
                        prepared: Any, config: TrainConfig, run_dir: str | os.PathLike,
                        make_decoder: Callable[[], nn.Module], seed: int = 0) -> pd.DataFrame:
    """A new decoder for the fine grid on the frozen ``method`` (inference view), trained on
    ``fine.train``, against the training-grid ``probe``'s reconstruction of the coarsened day
    upsampled bilinearly, and the training mean; latitude-weighted RMSE on ``fine.valid`` per
    variable in physical units (:meth:`FineGrid.physical`; rows: the three, columns:
    ``prepared.channels``)."""
    torch.manual_seed(seed)
    fine_probe = FrozenEncoderDecoder(method, make_decoder())
    fit(fine_probe, FieldDataset(fine.train), config, run_dir=run_dir, progress=False)
    coarse = torch.nn.functional.avg_pool2d(torch.from_numpy(fine.valid), factor).numpy()
    upsampled = torch.nn.functional.interpolate(
        torch.from_numpy(reconstruct(probe, coarse)), size=fine.valid.shape[-2:],
        mode="bilinear", align_corners=False).numpy()
    times = fine.valid_times
    truth = fine.physical(fine.valid, times)
    candidates = {"new fine-grid decoder": fine.physical(reconstruct(fine_probe, fine.valid),
                                                         times),
                  "training-grid decoder, upsampled": fine.physical(upsampled, times),
                  "training mean": np.broadcast_to(
                      physical_training_mean(prepared)[:, None, None], truth.shape)}
    return pd.DataFrame({name: lat_weighted_rmse(x, truth, fine.lat, time_axis=0)
                         for name, x in candidates.items()}, index=list(prepared.channels)).T


def score_physical_forecasts(sources: Mapping[str, ForecastSource], prepared: Any,
                             split: str, context: int, seed: int = 0) -> pd.DataFrame:
    """1-day RMSE and ACC with intervals of model-space ``sources`` on the ``split`` block
    ("test" for the scorecard), in physical units:
    :func:`geofusion.downstream.forecast_scores.score_forecasts` with
    ``prepared.destandardise`` (each forecast with the day it verifies) and the training
    climatology as the ACC's reference. Persistence is
    ``forecast_scores.persistence_source(fields, times, prepared.as_valid_at)``."""
    return score_forecasts(sources, prepared.fields(split), prepared.times(split), prepared.lat,
                           training_climatology(prepared), prepared.destandardise,
                           list(prepared.channels), context=context, steps=1, intervals=True,
                           seed=seed)


def summary_table(methods: Sequence[str], baseline_rows: Sequence[str], cost: pd.DataFrame,
                  table_3_1: pd.DataFrame, recon: pd.DataFrame, forecast_rmse: pd.DataFrame,
                  diagnostics: pd.DataFrame, robustness: pd.DataFrame,
                  transfer: pd.DataFrame, eof_row: str) -> pd.DataFrame:
    """Notebook 09's summary: one row per scheme of ``methods`` then the forecast
    ``baseline_rows``; every ratio is a mean over the variables of per-variable ratios.

    Columns: ``parameters``, ``MFLOPs/sample`` (``cost``), the three Table 3.1 figures,
    ``recon RMSE / climatology`` (conv decoder; ``recon`` from :func:`reconstruction_scores`
    with the ``"day-of-year climatology"`` row), ``recon RMSE / climatology (ridge
    decoder)`` (row ``"<scheme> + ridge decoder"``), ``recon RMSE / best baseline`` (the
    better of the conv and ridge decoders over ``min(climatology, eof_row)`` per variable),
    ``forecast RMSE / climatology (1 day)`` and ``forecast RMSE / best baseline (1 day)``
    (``forecast_rmse``: rows ``methods``, ``baseline_rows`` and ``"climatology"``; best of
    the baselines and the climatology per variable), ``season accuracy``, ``latent second
    difference``, ``missing-mode cosine (mean)`` / ``(worst)`` (``robustness`` without its
    ``"(different day)"`` row) and ``fine/coarse cosine`` (``transfer``).
    """
    methods, baseline_rows = list(methods), list(baseline_rows)
    rmse = recon["rmse"]
    clim = rmse.loc["day-of-year climatology"]
    ridge = rmse.loc[[f"{m} + ridge decoder" for m in methods]].set_axis(methods)
    best_reference = rmse.loc[["day-of-year climatology", eof_row]].min()
    best_decoder = np.minimum(rmse.loc[methods], ridge)
    forecast_clim = forecast_rmse.loc["climatology"]
    moved = robustness.drop(index="(different day)")
    return pd.DataFrame({
        "parameters": cost["parameters"].astype(int),
        "MFLOPs/sample": cost["MFLOPs/sample"].round(2),
        **{k: table_3_1[k] for k in ("positive_cosine", "negative_cosine",
                                     "embedding_variance")},
        "recon RMSE / climatology": (rmse.loc[methods] / clim).mean(axis=1),
        "recon RMSE / climatology (ridge decoder)": (ridge / clim).mean(axis=1),
        "recon RMSE / best baseline": (best_decoder / best_reference).mean(axis=1),
        "forecast RMSE / climatology (1 day)": (forecast_rmse.loc[[*methods, *baseline_rows]]
                                                / forecast_clim).mean(axis=1),
        "forecast RMSE / best baseline (1 day)": (
            forecast_rmse.loc[methods]
            / forecast_rmse.loc[[*baseline_rows, "climatology"]].min()).mean(axis=1),
        "season accuracy": diagnostics["season_accuracy"],
        "latent second difference": diagnostics["latent_second_difference"],
        "missing-mode cosine (mean)": moved.mean(),
        "missing-mode cosine (worst)": moved.min(),
        "fine/coarse cosine": transfer["cosine(fine, coarsened) same day"]
        if "cosine(fine, coarsened) same day" in transfer else np.nan,
    }).reindex([*methods, *baseline_rows])


def with_interval(estimate: pd.DataFrame, low: pd.DataFrame, high: pd.DataFrame,
                  digits: int = 3) -> pd.DataFrame:
    """``"estimate [low, high]"`` strings, cell by cell, for display."""
    fmt = f"{{:.{digits}g}}"
    return estimate.combine(low, lambda e, lo: e.map(fmt.format) + " [" + lo.map(fmt.format)
                            ).combine(high, lambda el, hi: el + ", " + hi.map(fmt.format) + "]")


def interval_pairs(low: pd.DataFrame, high: pd.DataFrame) -> dict[str, dict[str, list[float]]]:
    """``{row: {column: [low, high]}}`` (the scorecard's ``intervals`` nesting)."""
    return {str(r): {str(c): [float(low.loc[r, c]), float(high.loc[r, c])] for c in low.columns}
            for r in low.index}


def plot_relative_bars(ratios: pd.DataFrame, reference: pd.Series | None = None,
                       reference_label: str = "", ylabel: str = "", title: str = "",
                       errors: tuple[pd.DataFrame, pd.DataFrame] | None = None) -> Figure:
    """Grouped bars of ``ratios`` (rows = models, columns = variables), an optional dashed
    per-variable ``reference`` (e.g. persistence), error bars from ``errors = (low, high)``
    (same shape as ``ratios``), and a grey line at 1."""
    fig, ax = plt.subplots(figsize=(9, 3.8))
    n = len(ratios)
    width = 0.85 / max(n, 1)
    x = np.arange(ratios.shape[1])
    for i, (name, row) in enumerate(ratios.iterrows()):
        yerr = None
        if errors is not None:
            low, high = errors[0].loc[name].to_numpy(), errors[1].loc[name].to_numpy()
            yerr = np.stack([row.to_numpy() - low, high - row.to_numpy()]).clip(min=0)
        ax.bar(x - 0.425 + (i + 0.5) * width, row.to_numpy(), width, label=str(name),
               yerr=yerr, capsize=2)
    if reference is not None:
        for i, value in enumerate(reference.to_numpy()):
            ax.hlines(value, i - 0.45, i + 0.45, colors="k", linestyles="--",
                      label=reference_label if i == 0 else None)
    ax.axhline(1, color="gray", lw=0.8)
    ax.set_xticks(x, list(ratios.columns), rotation=20)
    ax.set(ylabel=ylabel, title=title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig
