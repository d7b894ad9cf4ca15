r"""Notebook 09's fusion schemes against their linear twins (issue 24, item 3).

Two comparisons, every model fitted on training days only and scored on the same days in
physical units (latitude-weighted RMSE, 95 % block-bootstrap intervals):

- **Complete input** (:func:`complete_input_twins`): beside each scheme's convolutional
  frozen decoder, the **EOF code of the same size** (``k`` = the latent size, fitted on the
  training anomalies of all the modes the schemes see) and each scheme's latent read out by
  a **ridge decoder** (a linear map to every grid point, penalty by blocked cross-validation
  on the training days, :func:`geofusion.verification.mode_regression.fit_ridge_cv`): is the
  conv decoder, rather than the latent, the limit?
- **A missing mode** (:func:`missing_mode_errors`): for each mode ``m`` every scheme encodes
  the day with ``m`` absent (its presence mask; early fusion zero-fills) and reconstructs
  ``m`` three ways: its conv decoder, its complete-input ridge decoder, and a ridge readout
  of ``m`` fitted on the training latents *with m absent*. The linear twin is
  :class:`geofusion.verification.mode_regression.MissingModeRegression` (ridge of ``m`` on
  the ``k`` leading EOF coefficients of the present modes, all training days); beside it the
  gappy fit of the all-mode EOF code to the present modes
  (:meth:`geofusion.data.eof.EOFCode.encode_channels`), the same regression fitted on the
  encoders' own training days only (a diagnostic of the training-set size) and the
  day-of-year climatology.

:func:`assess_missing_modes` picks, per mode, the best scheme row **on validation days** and
compares its test RMSE with the regression's (paired block-bootstrap ratio,
:func:`geofusion.verification.bootstrap.bootstrap_rmse_ratio`): the issue's target is a win
for at least ``required`` of the five modes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from geofusion.data.climatology import day_of_year
from geofusion.data.eof import area_weights, fit_eof
from geofusion.verification.baselines import training_climatology
from geofusion.verification.bootstrap import bootstrap_rmse, bootstrap_rmse_ratio
from geofusion.verification.metrics import lat_weighted_mse
from geofusion.verification.mode_regression import fit_missing_mode_regression, fit_ridge_cv

__all__ = ["BASELINE", "CEILING", "DECODERS", "scheme_latents", "complete_input_twins",
           "MissingModeErrors", "missing_mode_errors", "missing_mode_rmse", "versus_baseline",
           "assess_missing_modes", "assessment_summary", "results_section"]

#: The row of the linear twin every scheme is measured against.
BASELINE = "linear regression"
#: The row that *sees* the mode (the EOF code of complete days): a ceiling, not a baseline.
CEILING = "EOF code, mode present"
#: How a scheme's latent is read out, in the row names ``"<scheme> + <decoder>"``.
DECODERS: tuple[str, ...] = ("conv decoder", "ridge decoder", "ridge readout (mode absent)")


@torch.no_grad()
def scheme_latents(method: nn.Module, fields: Any, absent: int | None = None,
                   batch_size: int = 128) -> np.ndarray:
    """Latents float64 ``(N, D)`` of ``fields`` ``(N, C, H, W)`` through the method's own
    inference view, with mode ``absent`` (a channel index) marked absent in the presence mask
    of its fusion encoder (None: every mode present)."""
    encoder = method.encoder
    view = getattr(method, "inference_view", None)
    was_training = method.training
    method.eval()
    device = next(encoder.parameters()).device
    x = torch.as_tensor(np.asarray(fields), dtype=torch.float32)
    out = []
    for batch in x.split(batch_size):
        batch = batch.to(device)
        present = None
        if absent is not None:
            present = torch.ones(len(batch), batch.shape[1], dtype=torch.bool, device=device)
            present[:, absent] = False
        inputs = view(batch) if view is not None else batch
        out.append(encoder(inputs, present).double().cpu())
    method.train(was_training)
    return torch.cat(out).numpy()


def _anomalies(prepared: Any, fields: Any, times: Any) -> tuple[np.ndarray, np.ndarray]:
    clim = np.asarray(training_climatology(prepared), dtype=np.float64)
    c = clim[day_of_year(np.asarray(times, dtype="datetime64[ns]")) - 1]
    return np.asarray(fields, dtype=np.float64) - c, c


def _column_weights(prepared: Any, shape: Sequence[int]) -> np.ndarray:
    return np.broadcast_to(area_weights(np.asarray(prepared.lat))[:, None],
                           tuple(shape)).reshape(-1)


def complete_input_twins(methods: Mapping[str, nn.Module], prepared: Any,
                         train_idx: Sequence[int], fields: Any, times: Any, k: int
                         ) -> dict[str, np.ndarray]:
    """Model-space reconstructions ``(T, C, H, W)`` float32 of ``fields`` (complete input):

    - ``"EOF code (k = {k})"``: the ``k`` leading EOFs of **all** training anomalies
      (``prepared.train`` minus the training climatology), ``c + decode(encode(a))``;
    - ``"<scheme> + ridge decoder"``: the ridge decoder (every grid point, one penalty by
      blocked CV, latitude-weighted) fitted on the latents and fields of the encoders' own
      training days ``prepared.train[train_idx]``.
    """
    a_train, _ = _anomalies(prepared, prepared.train, prepared.train_times)
    a, c = _anomalies(prepared, fields, times)
    code = fit_eof(a_train, np.asarray(prepared.lat), k)
    out = {f"EOF code (k = {k})": (code.decode(code.encode(a)) + c).astype(np.float32)}
    idx = np.asarray(train_idx)
    train = np.asarray(prepared.train)[idx]
    weights = _column_weights(prepared, train.shape[1:])
    for name, method in methods.items():
        ridge = fit_ridge_cv(scheme_latents(method, train), train.reshape(len(train), -1),
                             weights)
        out[f"{name} + ridge decoder"] = ridge.predict(scheme_latents(method, fields)).reshape(
            np.shape(fields)).astype(np.float32)
    return out


@dataclasses.dataclass
class MissingModeErrors:
    """Per-day latitude-weighted MSE (physical units squared) of each reconstruction of an
    absent mode: ``mse[block][mode][row]`` float64 ``(T,)``; ``scheme_of[row]`` the scheme of
    each learned row (the others are references); ``k`` the latent / EOF size."""

    mse: dict[str, dict[str, dict[str, np.ndarray]]]
    scheme_of: dict[str, str]
    k: int


def missing_mode_errors(methods: Mapping[str, nn.Module], probes: Mapping[str, nn.Module],
                        prepared: Any, train_idx: Sequence[int],
                        blocks: Mapping[str, tuple[Any, Any]], k: int) -> MissingModeErrors:
    """Reconstruct each mode from the others, every scheme and reference (module doc).

    Args:
        methods: scheme name -> trained fusion method (``encoder`` taking ``present``).
        probes: scheme name -> its :class:`geofusion.learning.decoders.FrozenEncoderDecoder`
            (the ``decoder`` of the conv rows).
        prepared: :class:`geofusion.data.PreparedData` (``train``, ``lat``, ``channels``,
            ``destandardise``).
        train_idx: the encoders' own training days (rows of ``prepared.train``): the
            ridge readouts and the diagnostic regression are fitted on them; the baseline
            regression and the EOF codes on every training day.
        blocks: ``{"valid": (fields, times), "test": (fields, times)}`` model-space days
            to score (the valid block selects, the test block scores).
        k: the latent size of the schemes (the EOF and regression size).
    """
    channels = list(prepared.channels)
    idx = np.asarray(train_idx)
    train = np.asarray(prepared.train)
    own = dataclasses.replace(prepared, train=train[idx],
                              train_times=np.asarray(prepared.train_times)[idx])
    a_train, _ = _anomalies(prepared, train, prepared.train_times)
    code = fit_eof(a_train, np.asarray(prepared.lat), k)
    weights = _column_weights(prepared, train.shape[2:])
    complete = {name: fit_ridge_cv(scheme_latents(method, train[idx]),
                                   train[idx].reshape(len(idx), -1),
                                   _column_weights(prepared, train.shape[1:]))
                for name, method in methods.items()}
    truth = {b: np.asarray(prepared.destandardise(f, t)) for b, (f, t) in blocks.items()}
    mse: dict[str, dict[str, dict[str, np.ndarray]]] = {b: {} for b in blocks}
    scheme_of = {f"{name} + {d}": name for name in methods for d in DECODERS}
    for m, mode in enumerate(channels):
        present = [c for c in range(len(channels)) if c != m]
        regressions = {BASELINE: fit_missing_mode_regression(prepared, m, k),
                       f"{BASELINE} (encoders' {len(idx)} training days)":
                           fit_missing_mode_regression(own, m, min(k, len(idx) - 1))}
        readouts = {name: fit_ridge_cv(scheme_latents(method, train[idx], absent=m),
                                       train[idx, m].reshape(len(idx), -1), weights)
                    for name, method in methods.items()}
        for block, (fields, times) in blocks.items():
            fields = np.asarray(fields)
            a, c = _anomalies(prepared, fields, times)
            rows = {name: r.predict(fields, times) for name, r in regressions.items()}
            rows[f"gappy EOF code (k = {k})"] = (code.decode(code.encode_channels(a, present))
                                                 + c)[:, m]
            rows[f"{CEILING} (k = {k})"] = (code.decode(code.encode(a)) + c)[:, m]
            rows["day-of-year climatology"] = c[:, m]
            for name, method in methods.items():
                z = scheme_latents(method, fields, absent=m)
                with torch.no_grad():
                    decoder = probes[name].decoder
                    device = next(decoder.parameters(), torch.empty(0)).device
                    conv = decoder.eval()(torch.as_tensor(z, dtype=torch.float32,
                                                          device=device)).cpu().numpy()
                rows[f"{name} + conv decoder"] = conv[:, m]
                rows[f"{name} + ridge decoder"] = complete[name].predict(z).reshape(
                    fields.shape)[:, m]
                rows[f"{name} + ridge readout (mode absent)"] = readouts[name].predict(
                    z).reshape(fields[:, m].shape)
            mse[block][mode] = {}
            for row, prediction in rows.items():
                full = fields.copy()
                full[:, m] = prediction
                physical = np.asarray(prepared.destandardise(full, times))[:, m:m + 1]
                mse[block][mode][row] = np.asarray(lat_weighted_mse(
                    physical, truth[block][:, m:m + 1], prepared.lat), np.float64)[:, 0]
    return MissingModeErrors(mse, scheme_of, k)


def missing_mode_rmse(errors: MissingModeErrors, block: str = "test", seed: int = 0,
                      n_resamples: int = 1000) -> pd.DataFrame:
    """RMSE of every row for every absent mode on ``block``: a DataFrame indexed by
    ``(absent mode, row)`` with ``rmse``, ``low``, ``high`` (95 % block bootstrap, blocks of
    7 days, the same resamples for every row) and ``kind`` ("scheme" or "reference")."""
    if block not in errors.mse:
        raise ValueError(f"no block {block!r}; the errors hold {sorted(errors.mse)}")
    records = []
    for mode, rows in errors.mse[block].items():
        for row, per_day in rows.items():
            ci = bootstrap_rmse(per_day, n_resamples=n_resamples, seed=seed)
            records.append({"absent mode": mode, "row": row, "rmse": float(ci.estimate),
                            "low": float(ci.low), "high": float(ci.high),
                            "kind": _kind(errors, row)})
    return pd.DataFrame.from_records(records).set_index(["absent mode", "row"])


def _kind(errors: MissingModeErrors, row: str) -> str:
    if row in errors.scheme_of:
        return "scheme"
    return "ceiling" if row.startswith(CEILING) else "reference"


def versus_baseline(ranked: pd.DataFrame, baseline: str = BASELINE) -> pd.DataFrame:
    """:func:`missing_mode_rmse` as a (row x absent mode) table of ``RMSE / RMSE(baseline)``
    (< 1: better than the linear twin), rows in the order of the first mode."""
    rmse = ranked["rmse"].unstack("absent mode")
    rmse = rmse.loc[list(dict.fromkeys(ranked.index.get_level_values("row"))),
                    list(dict.fromkeys(ranked.index.get_level_values("absent mode")))]
    return rmse / rmse.loc[baseline]


def assess_missing_modes(errors: MissingModeErrors, baseline: str = BASELINE,
                         select_block: str = "valid", score_block: str = "test",
                         seed: int = 0, n_resamples: int = 1000) -> pd.DataFrame:
    """Per absent mode: the best scheme row chosen on ``select_block`` (lowest RMSE) against
    ``baseline`` on ``score_block``.

    Columns: ``best scheme`` (the row), its ``rmse`` / ``low`` / ``high``, the baseline's,
    the gappy EOF code's ``eof_rmse``, ``ratio`` = RMSE(best) / RMSE(baseline) with its paired
    block-bootstrap ``ratio_low`` / ``ratio_high``, ``beats`` (ratio < 1) and ``clear``
    (``ratio_high`` < 1: the interval excludes a tie).
    """
    for block in (select_block, score_block):
        if block not in errors.mse:
            raise ValueError(f"no block {block!r}; the errors hold {sorted(errors.mse)}")
    records = []
    for mode, rows in errors.mse[score_block].items():
        if baseline not in rows:
            raise ValueError(f"no row {baseline!r} for mode {mode}; rows: {sorted(rows)}")
        schemes = [r for r in rows if r in errors.scheme_of]
        chosen = min(schemes, key=lambda r: float(np.mean(errors.mse[select_block][mode][r])))
        best = bootstrap_rmse(rows[chosen], n_resamples=n_resamples, seed=seed)
        base = bootstrap_rmse(rows[baseline], n_resamples=n_resamples, seed=seed)
        ratio = bootstrap_rmse_ratio(rows[chosen], rows[baseline], n_resamples=n_resamples,
                                     seed=seed)
        eof = [r for r in rows if r.startswith("gappy EOF code")]
        references = {r: float(np.mean(v)) for r, v in rows.items()
                      if _kind(errors, r) == "reference"}
        best_reference = min(references, key=references.get)
        records.append({
            "absent mode": mode, "best scheme": chosen, "rmse": float(best.estimate),
            "low": float(best.low), "high": float(best.high),
            "baseline_rmse": float(base.estimate), "baseline_low": float(base.low),
            "baseline_high": float(base.high),
            "eof_rmse": float(np.sqrt(np.mean(rows[eof[0]]))) if eof else float("nan"),
            "ratio": float(ratio.estimate), "ratio_low": float(ratio.low),
            "ratio_high": float(ratio.high), "beats": bool(ratio.estimate < 1),
            "clear": bool(ratio.high < 1), "best_baseline": best_reference,
            "ratio_to_best_baseline": float(np.sqrt(np.mean(rows[chosen])
                                                    / references[best_reference]))})
    return pd.DataFrame.from_records(records).set_index("absent mode")


def assessment_summary(assessment: pd.DataFrame, required: int = 3) -> dict[str, Any]:
    """The issue's target from :func:`assess_missing_modes`: ``modes_beaten`` (point
    estimates), ``modes_clearly_beaten`` (ratio interval wholly below 1), ``required`` and
    ``met`` (``modes_clearly_beaten >= required``: a win must hold beyond the sampling
    uncertainty), plus a one-line ``verdict``."""
    beaten, clear = int(assessment["beats"].sum()), int(assessment["clear"].sum())
    met = clear >= required
    verdict = (f"the best scheme beats the {BASELINE} for {beaten} of {len(assessment)} "
               f"modes ({clear} with the 95 % interval of the RMSE ratio below 1); target "
               f"(>= {required}, interval below 1): {'met' if met else 'not met'}")
    return {"modes_beaten": beaten, "modes_clearly_beaten": clear, "required": int(required),
            "met": bool(met), "verdict": verdict}


def results_section(errors: MissingModeErrors, assessment: pd.DataFrame,
                    summary: Mapping[str, Any], seed: int = 0) -> dict[str, Any]:
    """The results-JSON entry of the missing-mode comparison: ``k``, the blocks,
    ``rmse`` / ``intervals`` ``{absent mode: {row: value or [low, high]}}`` on the test
    block, the ``assessment`` per mode and the ``target`` (:func:`assessment_summary`)."""
    ranked = missing_mode_rmse(errors, "test", seed=seed)
    rmse: dict[str, dict[str, float]] = {}
    intervals: dict[str, dict[str, list[float]]] = {}
    for (mode, row), entry in ranked.iterrows():
        rmse.setdefault(mode, {})[row] = float(entry["rmse"])
        intervals.setdefault(mode, {})[row] = [float(entry["low"]), float(entry["high"])]
    return {"k": errors.k, "selected_on": "valid", "scored_block": "test", "baseline": BASELINE,
            "rmse": rmse, "intervals": intervals,
            "assessment": assessment.to_dict(orient="index"), "target": dict(summary)}
