"""Notebook 06's study: reconstruction and latent robustness of several models under every
observation setting (mask kind x missing fraction x noise), with the tables it reports.

:class:`SparsityEvaluation` scores a set of reconstructors
(:mod:`geofusion.downstream.reconstruction`) on the same evaluation days and the same masks,
caches the scores per setting, and turns them into curves (one row per model, setting and
variable), per-model summaries and the latent cosines against the complete day.
:func:`relative_skill` and :func:`versus_best_baseline` read those curves against a reference
or the best baseline under the same observation (:mod:`geofusion.verification.baseline_comparison`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from geofusion.data.observations import Observation, make_mask
from geofusion.downstream.reconstruction import (
    ReconstructionScore,
    Reconstructor,
    observation_generator,
    physical,
    score_reconstruction,
)
from geofusion.verification import baseline_comparison

__all__ = ["SparsityEvaluation", "relative_skill", "fraction_key", "versus_best_baseline",
           "decoder_summary"]


class SparsityEvaluation:
    """Scores of several models on the same evaluation days seen through masks and noise.

    For a mask kind ``k``, missing fraction ``r`` and noise std ``s`` (standardised units,
    correlation length ``noise_length`` grid points) every day gets the same observation for
    every model: a mask of ``k`` missing exactly ``round(r H W)`` points, drawn from
    :func:`observation_generator` (nested across ``r``), then, when ``s > 0``, correlated noise
    (:func:`geofusion.data.observations.correlated_noise`) from a generator seeded ``seed + 20``.

    Args:
        models: name -> :class:`Reconstructor` (latent models and baselines).
        fields: ``(N, C, H, W)`` complete evaluation days, standardised.
        times: ``(N,)`` datetime64 of the days.
        lat: ``(H,)`` degrees ascending.
        to_physical: model-space numpy -> physical units, ``to_physical(x, times)``
            (``prepared.destandardise``: in the anomaly space the climatology of the days is
            added back).
        channels: the ``C`` variable names.
        seed: seeds the masks and the noise.
        noise_length: correlation length of the noise in grid points.
        distinct_masks: how many different masks one observation setting draws; day ``n``
            gets mask ``n mod distinct_masks`` (None: one per day). Fewer masks make
            baselines that factorise a covariance per observed pattern (optimal
            interpolation) proportionally cheaper, at the price of less mask variety; the
            masks stay nested across missing fractions.
        climatology: ``(N, C, H, W)`` physical climatology of the days for the anomaly
            metrics (in the anomaly space ``to_physical(zeros, times)``); None leaves them NaN.

    Example:
        >>> import numpy as np, torch
        >>> from geofusion.downstream.reconstruction import LatentReconstructor
        >>> from geofusion.learning.methods import build_method
        >>> _ = torch.manual_seed(0)  # the tiny network's initialisation, so the output is fixed
        >>> ae = build_method("autoencoder", grid=(8, 16), width=2, latent_dim=4)
        >>> days = torch.randn(4, 5, 8, 16)
        >>> ev = SparsityEvaluation({"ae": LatentReconstructor(ae, ae.decoder)}, days,
        ...     np.arange(4).astype("datetime64[D]"), np.linspace(-80, 80, 8), lambda x, t: x,
        ...     ["a", "b", "c", "d", "e"])
        >>> round(ev.scores("pixel", 0.0)["ae"].centred_cosine, 4)
        1.0
        >>> ev.curves(["pixel"], [0.0, 0.5]).columns.tolist()[:6]
        ['model', 'kind', 'missing_fraction', 'noise_std', 'variable', 'rmse']
    """

    def __init__(self, models: Mapping[str, Reconstructor], fields: Tensor, times: Any,
                 lat: Any, to_physical: Callable[[np.ndarray], np.ndarray],
                 channels: Sequence[str], seed: int = 0, noise_length: float = 2.0,
                 distinct_masks: int | None = None, climatology: Any = None) -> None:
        if not models:
            raise ValueError("no models given; pass a dict name -> Reconstructor")
        fields = torch.as_tensor(fields).float()
        if fields.ndim != 4 or fields.shape[1] != len(channels):
            raise ValueError(f"fields must be (N, C={len(channels)}, H, W), got "
                             f"{tuple(fields.shape)}")
        if len(np.asarray(times)) != len(fields):
            raise ValueError(f"{len(np.asarray(times))} times for {len(fields)} days; pass the "
                             "times of the evaluation days")
        if distinct_masks is not None and distinct_masks < 1:
            raise ValueError(f"distinct_masks must be >= 1 (or None for one mask per day), got "
                             f"{distinct_masks}")
        self.distinct_masks = distinct_masks
        self.models = dict(models)
        self.fields, self.times = fields, np.asarray(times)
        self.lat, self.to_physical = np.asarray(lat), to_physical
        self.channels, self.seed, self.noise_length = list(channels), seed, noise_length
        self.truth = self.physical(fields.numpy())
        self.climatology = None if climatology is None else np.asarray(climatology)
        if self.climatology is not None and self.climatology.shape != self.truth.shape:
            raise ValueError(f"climatology {self.climatology.shape} must be that of the "
                             f"evaluation days {self.truth.shape}")
        self.complete_latents = {name: model.latents(fields) for name, model in models.items()
                                 if model.has_latent}
        self.centres = {name: z.mean(dim=0) for name, z in self.complete_latents.items()}
        self._scores: dict[tuple[str, float, float], dict[str, ReconstructionScore]] = {}

    def observe(self, kind: str, ratio: float, noise_std: float = 0.0,
                days: Any = None) -> tuple[Tensor, Tensor]:
        """``(observed fields, mask)`` of the evaluation days (or the subset ``days``, the same
        observation those days get in the full set) for ``kind``, ``ratio``, ``noise_std``."""
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0 (standardised units), got {noise_std}")
        n = len(self.fields)
        k = n if self.distinct_masks is None else min(self.distinct_masks, n)
        mask = make_mask((k, *self.fields.shape[-2:]), float(ratio), kind,
                         observation_generator(self.seed, kind))[torch.arange(n) % k]
        fields = self.fields
        if noise_std > 0:
            noisy = Observation(kind=kind, min_ratio=0.0, max_ratio=0.0, noise_std=noise_std,
                                noise_length=self.noise_length)
            fields, _ = noisy(fields, torch.Generator().manual_seed(self.seed + 20))
        fields = fields * mask[:, None]
        if days is not None:
            days = np.atleast_1d(np.asarray(days, dtype=np.int64))
            return fields[days], mask[days]
        return fields, mask

    def scores(self, kind: str, ratio: float, noise_std: float = 0.0
               ) -> dict[str, ReconstructionScore]:
        """name -> :class:`ReconstructionScore` for one observation setting (memoised)."""
        key = (kind, float(ratio), float(noise_std))
        if key not in self._scores:
            fields, mask = self.observe(kind, ratio, noise_std)
            self._scores[key] = {
                name: score_reconstruction(
                    model, fields, mask, self.truth, self.lat, self.to_physical, self.channels,
                    self.times, self.complete_latents.get(name), self.centres.get(name),
                    noise_std, self.climatology)[0]
                for name, model in self.models.items()}
        return self._scores[key]

    def reconstruct_days(self, name: str, days: Any, kind: str, ratio: float,
                         noise_std: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One model's reconstruction of ``days`` from the same observation :meth:`scores`
        uses: ``(reconstruction, observation, mask)``, the first two ``(n, C, H, W)`` physical
        (the observation NaN where missing), the mask bool ``(n, H, W)``."""
        days = np.atleast_1d(np.asarray(days, dtype=np.int64))
        fields, mask = self.observe(kind, ratio, noise_std, days)
        standardised = self.models[name].reconstruct(fields, mask, self.times[days], noise_std)
        observation = np.where(mask.numpy()[:, None], self.physical(fields.numpy(), days),
                               np.nan)
        return self.physical(standardised.numpy(), days), observation, mask.numpy()

    def physical(self, x: np.ndarray, days: Any = None) -> np.ndarray:
        """Model-space fields of the evaluation ``days`` (indices; None = all of them, in
        order) in physical units: ``to_physical(x, times[days])``."""
        times = self.times if days is None else self.times[np.atleast_1d(np.asarray(days))]
        return physical(self.to_physical, x, times)

    def day_cosine(self, name: str, day: int, kind: str, ratio: float,
                   noise_std: float = 0.0) -> float:
        """Centred latent cosine of one day's observation to its complete day (NaN for a
        model without a latent)."""
        model = self.models[name]
        if not model.has_latent:
            return math.nan
        fields, mask = self.observe(kind, ratio, noise_std, [day])
        mu = self.centres[name]
        z = model.latents(fields, mask)[0]
        return float(F.cosine_similarity(z - mu, self.complete_latents[name][day] - mu, dim=0))

    def curves(self, kinds: Sequence[str], ratios: Sequence[float],
               noise_stds: Sequence[float] = (0.0,)) -> pd.DataFrame:
        """Long table of every model under every ``(kind, ratio, noise_std)``.

        Columns ``model, kind, missing_fraction, noise_std, variable, rmse`` (physical units),
        ``rmse_low, rmse_high`` (its 95 % block-bootstrap interval over the days,
        :meth:`ReconstructionScore.rmse_interval`), ``centred_cosine, centred_cosine_low,
        centred_cosine_high, cosine`` (the model's, repeated per variable; NaN for baselines),
        ``acc`` and ``anomaly_variance_explained`` (the anomaly metrics of
        :class:`ReconstructionScore`; NaN without a climatology).
        """
        rows = []
        for kind in kinds:
            for ratio in ratios:
                for std in noise_stds:
                    for name, score in self.scores(kind, ratio, std).items():
                        rmse_ci = score.rmse_interval(self.seed)
                        cos_ci = score.cosine_interval(self.seed)
                        for c, variable in enumerate(self.channels):
                            rows.append({"model": name, "kind": kind,
                                         "missing_fraction": float(ratio),
                                         "noise_std": float(std), "variable": variable,
                                         "rmse": score.rmse[variable],
                                         "rmse_low": float(rmse_ci.low[c]),
                                         "rmse_high": float(rmse_ci.high[c]),
                                         "centred_cosine": score.centred_cosine,
                                         "centred_cosine_low": float(cos_ci.low),
                                         "centred_cosine_high": float(cos_ci.high),
                                         "cosine": score.cosine,
                                         "acc": score.acc[variable],
                                         "anomaly_variance_explained":
                                             score.anomaly_variance_explained[variable]})
        table = pd.DataFrame(rows)
        table.attrs["n_days"] = len(self.fields)
        return table

    def scorecard(self, ratios: Sequence[float] = (0.0, 0.5, 0.9), kind: str = "pixel",
                  climatology: str = "climatology", scored_block: str | None = None
                  ) -> dict[str, Any]:
        """The notebook-06 part of ``reports/results.json`` (issue 13, section 4).

        ``climatology_rmse`` {variable: RMSE of the ``climatology`` model}, and
        ``reconstruction_rmse`` {model: {missing fraction ("0", "0.5", ...): {variable: RMSE}}}
        for every other model under ``kind`` masks without noise, with their 95 %
        block-bootstrap intervals under ``intervals`` in the same nesting (physical units).
        With a climatology for the anomaly metrics, ``reconstruction_acc`` holds the anomaly
        correlations in the nesting of ``reconstruction_rmse``; ``scored_block`` ("test",
        "valid") records which block of the time split the days come from.
        """
        if climatology not in self.models:
            raise ValueError(f"no model named {climatology!r} to report as the climatology; "
                             f"the models are {sorted(self.models)}")
        climatology_score = self.scores(kind, 0.0)[climatology]
        card: dict[str, Any] = {"climatology_rmse": dict(climatology_score.rmse),
                                "reconstruction_rmse": {}}
        intervals: dict[str, Any] = {
            "climatology_rmse": climatology_score.rmse_interval(self.seed).by_name(self.channels),
            "reconstruction_rmse": {}}
        for name in self.models:
            if name == climatology:
                continue
            card["reconstruction_rmse"][name] = {}
            intervals["reconstruction_rmse"][name] = {}
            for ratio in ratios:
                score = self.scores(kind, ratio)[name]
                card["reconstruction_rmse"][name][fraction_key(ratio)] = dict(score.rmse)
                intervals["reconstruction_rmse"][name][fraction_key(ratio)] = \
                    score.rmse_interval(self.seed).by_name(self.channels)
        if self.climatology is not None:
            card["reconstruction_acc"] = {
                name: {fraction_key(r): dict(self.scores(kind, r)[name].acc) for r in ratios}
                for name in self.models if name != climatology}
        if scored_block is not None:
            card["scored_block"] = str(scored_block)
        card["intervals"] = intervals
        return card

    def summary(self, curves: pd.DataFrame, kind: str, mode: str, baselines: Sequence[str],
                reference: str = "climatology") -> pd.DataFrame:
        """One row per model condensing ``curves`` (:meth:`curves`) for mask ``kind``.

        With ``first, middle, last`` the smallest, middle and largest missing fraction of the
        curves: RMSE relative to ``reference`` (mean over variables) at the three, the RMSE of
        ``mode`` at the first and last, the centred cosine at the middle and last, the raw
        cosine at the last and between different complete days, the anomaly correlation and
        the fraction of anomaly variance explained (means over variables) at the first and
        middle fraction, the centred cosine under the
        largest noise with nothing missing (NaN when the curves hold no noise), and how the
        model compares with the best of ``baselines`` at the last fraction (its name, the
        RMSE ratio and on how many variables the model wins).
        """
        clean = curves[(curves["kind"] == kind) & (curves["noise_std"] == 0)]
        ratios = sorted(set(clean["missing_fraction"]))
        if not ratios:
            raise ValueError(f"the curves hold no noise-free {kind!r} scores; pass curves of "
                             f"that kind (e.g. evaluation.curves([{kind!r}], ratios))")
        first, middle, last = ratios[0], ratios[len(ratios) // 2], ratios[-1]
        skill = relative_skill(curves, reference)
        versus = versus_best_baseline(curves, baselines, reference)
        noisy = curves[(curves["kind"] == kind) & (curves["missing_fraction"] == 0)]
        top_noise = float(noisy["noise_std"].max()) if len(noisy) else 0.0
        different = self.different_day_cosine()
        rows = {}
        for name in dict.fromkeys(curves["model"]):
            def at(r: float, column: str, std: float = 0.0, name: str = name) -> Any:
                return skill.loc[(name, kind, float(r), float(std)), column]
            def anomaly(r: float, column: str, name: str = name) -> float:
                rows_r = clean[(clean["model"] == name) & (clean["missing_fraction"] == r)]
                return float(rows_r[column].mean()) if column in rows_r else math.nan
            mode_rmse = clean[(clean["model"] == name) & (clean["variable"] == mode)] \
                .set_index("missing_fraction")["rmse"]
            best = versus.loc[(name, kind, float(last), 0.0)]
            rows[name] = {
                **{f"RMSE/{reference}, {r:g} missing": at(r, "rmse_over_reference")
                   for r in (first, middle, last)},
                **{f"{mode} RMSE, {r:g} missing": float(mode_rmse[r]) for r in (first, last)},
                f"centred cosine, {middle:g} missing": at(middle, "centred_cosine"),
                f"centred cosine, {last:g} missing": at(last, "centred_cosine"),
                f"raw cosine, {last:g} missing": at(last, "cosine"),
                "raw cosine, different days": different.get(name, math.nan),
                f"centred cosine, noise {top_noise:g}": (at(0.0, "centred_cosine", top_noise)
                                                         if top_noise > 0 else math.nan),
                **{f"anomaly correlation, {r:g} missing": anomaly(r, "acc")
                   for r in (first, middle)},
                **{f"anomaly variance explained, {r:g} missing":
                   anomaly(r, "anomaly_variance_explained") for r in (first, middle)},
                f"best baseline, {last:g} missing": best["best_baseline"],
                "RMSE / best baseline": float(best["rmse_over_best_baseline"]),
                "variables better": f"{int(best['variables_better'])} of "
                                    f"{int(best['n_variables'])}",
            }
        return pd.DataFrame(rows).T.infer_objects()

    def different_day_cosine(self) -> dict[str, float]:
        """Raw cosine between latents of different complete days (day ``n`` against day
        ``n + N/2``, circularly): the level a raw cosine must beat to mean anything."""
        return {name: float(F.cosine_similarity(z, z.roll(len(z) // 2, dims=0)).mean())
                for name, z in self.complete_latents.items()}


_SETTING = ("kind", "missing_fraction", "noise_std")


def relative_skill(curves: pd.DataFrame, reference: str = "climatology") -> pd.DataFrame:
    """One row per ``(model, kind, missing_fraction, noise_std)`` of :meth:`SparsityEvaluation
    .curves`: ``rmse_over_reference``, the mean over variables of ``RMSE_c / RMSE_c(reference)``
    under the same observation (1 = no better than the reference), and the latent cosines
    (:func:`geofusion.verification.baseline_comparison.relative_skill`).

    Example:
        >>> import pandas as pd
        >>> rows = [("m", 2.0, 0.5), ("m", 9.0, 0.5), ("climatology", 4.0, None),
        ...         ("climatology", 9.0, None)]
        >>> curves = pd.DataFrame([{"model": m, "kind": "pixel", "missing_fraction": 0.0,
        ...     "noise_std": 0.0, "variable": v, "rmse": r, "centred_cosine": c, "cosine": c}
        ...     for (m, r, c), v in zip(rows, ["a", "b", "a", "b"])])
        >>> float(relative_skill(curves).loc[("m", "pixel", 0.0, 0.0), "rmse_over_reference"])
        0.75
    """
    return baseline_comparison.relative_skill(curves, reference, _SETTING,
                                              extra=("centred_cosine", "cosine"))


def fraction_key(ratio: float) -> str:
    """The scorecard key of a missing fraction: ``"0"``, ``"0.5"``, ``"0.9"`` (``f"{r:g}"``)."""
    return f"{float(ratio):g}"


def versus_best_baseline(curves: pd.DataFrame, baselines: Sequence[str],
                         reference: str = "climatology") -> pd.DataFrame:
    """Each model against the best of ``baselines`` under the same observation ``(kind,
    missing_fraction, noise_std)`` of :meth:`SparsityEvaluation.curves`: ``best_baseline``,
    ``rmse_over_best_baseline``, ``variables_better``, ``n_variables``
    (:func:`geofusion.verification.baseline_comparison.versus_best_baseline`, best = lowest RMSE
    relative
    to ``reference``)."""
    return baseline_comparison.versus_best_baseline(curves, baselines, reference, _SETTING)


def decoder_summary(curves: pd.DataFrame, sparse_ratio: float, baselines: Sequence[str],
                    final_contrastive: dict[str, float], final_reconstruction: dict[str, float],
                    embedding: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    """Notebook 07's one-row-per-model summary from pixel-mask ``curves`` at missing fractions
    0 and ``sparse_ratio`` (:meth:`SparsityEvaluation.curves`): RMSE / climatology on complete
    and sparse input, 2 m temperature RMSE [K] with its 95 % interval, anomaly correlation and
    anomaly variance explained (means over variables, complete input), the comparison with the
    best of ``baselines`` on sparse input, the final training losses and the latent figures
    (``positive_cosine``, ``negative_cosine``, ``embedding_variance`` of ``embedding``), rows in
    ``order``."""
    skill = relative_skill(curves)["rmse_over_reference"].droplevel(["kind", "noise_std"])
    versus = versus_best_baseline(curves, baselines).droplevel(["kind", "noise_std"])
    complete = curves[curves.missing_fraction == 0]
    t2m = complete[complete.variable == "2m_temperature"].set_index("model")
    sparse_versus = versus.xs(sparse_ratio, level="missing_fraction")
    return pd.DataFrame({
        "RMSE / climatology": skill.xs(0.0, level="missing_fraction"),
        "RMSE / climatology (sparse input)": skill.xs(sparse_ratio, level="missing_fraction"),
        "2m temperature RMSE [K]": t2m.rmse,
        "2m temperature 95 % interval [K]": t2m.apply(
            lambda r: f"[{r.rmse_low:.3g}, {r.rmse_high:.3g}]", axis=1),
        "anomaly correlation": complete.groupby("model").acc.mean(),
        "anomaly variance explained": complete.groupby("model").anomaly_variance_explained.mean(),
        "vs best baseline (sparse input)": sparse_versus.apply(
            lambda r: f"{r.rmse_over_best_baseline:.3f} x {r.best_baseline} "
                      f"({r.variables_better}/{r.n_variables} better)", axis=1),
        "final contrastive loss": pd.Series(final_contrastive, dtype=float),
        "final reconstruction MSE": pd.Series(final_reconstruction, dtype=float),
        **{column: embedding[column]
           for column in ("positive_cosine", "negative_cosine", "embedding_variance")},
    }).loc[list(order)]
