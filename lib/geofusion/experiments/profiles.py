"""The notebooks' parameter profiles: what papermill injects into each numbered notebook.

:data:`PROFILES` maps a profile name (``quick``, ``full``) to ``{"common": {...}, "<notebook>":
{...}}``; a notebook receives ``common`` updated with its own entry (:func:`parameters_for`).
:data:`COMMON` lists the keys every notebook's ``parameters`` cell declares, and
:data:`REPORT_SWEEPS` the report's hyper-parameter sweeps (``make sweeps``).

Conventions:

- Every key a profile sets must be declared by the notebook's ``parameters`` cell (checked
  before a run by :func:`geofusion.reporting.notebooks.checked_parameters`), and the ``quick``
  profile equals the notebooks' own defaults (except ``device``), so a notebook opened by hand
  reuses the models a pipeline run trained.
- Notebooks that load another notebook's models (:mod:`geofusion.learning.model_cache`) get
  their settings from the same shared builders (``_BASE``, ``_SPARSE``, ``_DECODER``,
  ``_FORECAST``), so they ask for the very same model; the comments next to each builder say
  where its quick values were measured.
- ``quick``: CPU, the embedded synthetic default (2000-2010, train / validation / test
  60/20/20), width-8 networks in the anomaly space trained to a plateau; ``full``: GPU,
  WeatherBench 2 ERA5 64x32 1959-2022 (:data:`WB2_ERA5_64x32`), the report's settings, in the
  anomaly space with the same 60/20/20 split.

Plain data only: nothing here reads a notebook or runs one.
"""

from __future__ import annotations

from typing import Any

WB2_ERA5_64x32 = "gs://weatherbench2/datasets/era5/1959-2022-6h-64x32_equiangular_conservative.zarr"

# Parameters every notebook's `parameters` cell defines.
COMMON = ("data_path", "profile", "seed", "device", "limit_batches", "run_dir", "cache_dir",
          "start", "end", "level", "space", "train_fraction", "test_fraction")

# The base models. Notebooks 06-08 and 10 ask geofusion.learning.model_cache for the autoencoder
# of 02 and the Barlow Twins of 03 with these same settings, so a pipeline run trains each of
# them once.
_BASE = {
    # Measured on two CPU cores (reports/benchmarks/quick_convergence.md): native-scale views
    # (36x72 -> 32x64, 3x3 filter) instead of the report's 5x larger crops, and training to a
    # plateau (warm-up + cosine schedule, early stopping with best-weight restore) instead of
    # a fixed handful of epochs.
    # Issue 23 (benchmarks/anomaly_space.py, quick_convergence.md): the anomaly space, a
    # 64-d latent (the rank a width-8 ResNet's mean-pooled latent had anyway) whose encoder
    # starts as the EOF-64 code of the training days plus a zero-initialised ResNet residual,
    # Adam 1e-4 (1e-3 collapses the Barlow Twins latent's effective rank from 39 to 19).
    "quick": {"batch_size": 64, "width": 8, "latent_dim": 64, "proj_dim": 128,
              "ae_epochs": 12, "ae_lr": 1e-4, "encoder_epochs": 6, "encoder_lr": 1e-4,
              "lambd": 0.01, "augmentation": "native", "patience": 3,
              "lr_schedule": "cosine", "warmup_epochs": 1, "encoder": "eof_residual"},
    # The report: ResNet-18, batch 128, Adam 1e-3 at a constant rate, autoencoder 300 epochs,
    # Barlow Twins 100 epochs with lambda 0.01, its augmentation, no early stopping.
    "full": {"batch_size": 128, "width": 64, "latent_dim": 1000, "proj_dim": 128,
             "ae_epochs": 300, "ae_lr": 1e-3, "encoder_epochs": 100, "encoder_lr": 1e-3,
             "lambd": 0.01, "augmentation": "report", "patience": None,
             "lr_schedule": "constant", "warmup_epochs": 0, "encoder": "resnet"},
}
_SCHEDULE = ("patience", "lr_schedule", "warmup_epochs")


def _autoencoder(base: dict[str, Any]) -> dict[str, Any]:
    return {"epochs": base["ae_epochs"], "lr": base["ae_lr"], "batch_size": base["batch_size"],
            "width": base["width"], "latent_dim": base["latent_dim"], "encoder": base["encoder"],
            "reconstruction_loss": "lat_weighted", **{key: base[key] for key in _SCHEDULE}}


def _contrastive(base: dict[str, Any], **own: Any) -> dict[str, Any]:
    return {"epochs": base["encoder_epochs"], "lr": base["encoder_lr"],
            "batch_size": base["batch_size"], "width": base["width"],
            "latent_dim": base["latent_dim"], "proj_dim": base["proj_dim"],
            "augmentation": base["augmentation"], "encoder": base["encoder"],
            **{key: base[key] for key in _SCHEDULE},
            **own}


# The sparse-view Barlow Twins of notebook 06, requested again by notebooks 08 and 10.
_SPARSE = {"mask_kind": "pixel", "min_ratio": 0.0, "max_ratio": 0.9, "noise_std": 0.1,
           "noise_length": 2.0, "both_views": False}
# Frozen-encoder decoders: notebooks 06, 07, 08 and 10 draw the same training days. 06 and 07
# train theirs with the latitude-weighted loss and share them; 08 and 10 ask for the plain-MSE
# decoder (no reconstruction_loss) and share theirs, a second model per encoder.
_DECODER = {
    "quick": {"decoder_epochs": 6, "decoder_lr": 1e-3, "decoder_width": 16},
    "full": {"decoder_epochs": 30, "decoder_lr": 1e-3, "decoder_width": 64},
}


def _assimilation(forecast: dict[str, Any], **own: Any) -> dict[str, Any]:
    """Notebook 10 asks for the sparse-view model, frozen decoder and LSTM of notebook 08 with
    08's settings (so they are loaded, not retrained), without 08's own evaluation keys."""
    skip = {"ae_epochs", "ae_lr", "n_eval_days", "max_lead", "residual_pooling",
            "residual_target", "residual_stride"}
    return {**{k: v for k, v in forecast.items() if k not in skip}, **own}


# The latent LSTM of notebook 08 (and 10). Quick, measured in
# reports/benchmarks/latent_forecasting.md: on the quick representations the LSTM fits the
# training windows after 2-3 epochs (validation loss rising), so early stopping with patience 2
# ends it; a 10-day context forecasts as well as 30 days at a third of the cost, and a
# multi-step (horizon 3) loss did not help. The damped residual's rho is fitted to the LSTM's own
# training-day forecast errors (every 4th start day). Full keeps the report's 30 days and 50 epochs.
_FORECAST = {
    "quick": {**_BASE["quick"], **_SPARSE, **_DECODER["quick"], "n_decoder_days": 512,
              "context": 10, "lstm_hidden": 128, "forecast_epochs": 8, "forecast_patience": 2,
              "forecast_horizon": 1, "residual_target": "forecast", "residual_stride": 4,
              "residual_pooling": "gridpoint", "n_eval_days": 180,
              "max_lead": 7},
    "full": {**_BASE["full"], **_SPARSE, **_DECODER["full"], "n_decoder_days": None,
             "context": 30, "lstm_hidden": 512, "forecast_epochs": 50, "forecast_patience": None,
             "forecast_horizon": 1, "residual_target": "forecast", "residual_stride": 4,
             "residual_pooling": "gridpoint", "n_eval_days": None,
             "max_lead": 10},
}


# Notebook 11's ablation (issue 15): its own sparse-view Barlow Twins per variant. Quick: tiny
# models on native-scale views, two epochs, each addition alone (the "all" row only in full);
# the latents decoded by the closed-form ridge decoder (a two-epoch convolutional decoder
# scored worse than the training mean), the DDPMs trained on 1024 training days (480 Adam
# steps) and sampled in 100 steps: the old 160 training steps and 50 sampling steps gave
# ensembles 10-50x worse than the climatological one (reports/benchmarks/ablation_scoring.md).
_BEYOND = {
    "quick": {"epochs": 2, "batch_size": 64, "width": 4, "latent_dim": 64, "proj_dim": 32,
              "proj_hidden_dim": 128, "augmentation": "native", "easy_min": 1000,
              "decoder": "ridge", "n_eval_days": 64, "members": 8, "diffusion_steps": 100,
              "diffusion_epochs": 120, "diffusion_batch_size": 256, "diffusion_lr": 3e-3,
              "diffusion_hidden": 128, "diffusion_train_days": 1024, "probe_hidden": [64],
              "probe_iterations": 100,
              "variants": ["baseline", "temporal_positives", "smoothness", "time_aware_batches"]},
    "full": {"epochs": 100, "batch_size": 128, "width": 64, "latent_dim": 1000,
             "proj_dim": 128, "proj_hidden_dim": 1024, "augmentation": "report",
             "easy_min": 1000, "decoder": "conv", "decoder_epochs": 30, "decoder_width": 64,
             "n_decoder_days": None, "n_eval_days": 512, "members": 16, "diffusion_steps": 100,
             "diffusion_epochs": 100, "diffusion_batch_size": 128, "diffusion_lr": 1e-3,
             "diffusion_hidden": 1024, "diffusion_train_days": 8192,
             "probe_hidden": [128], "probe_iterations": 300,
             "variants": ["baseline", "temporal_positives", "smoothness", "time_aware_batches",
                          "all"]},
}


PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "quick": {
        "common": {"data_path": None, "profile": "quick", "seed": 0, "device": "cpu",
                   "limit_batches": None, "run_dir": "runs/quick",
                   "cache_dir": "runs/cache", "start": "2000-01-01",
                   # 11 years: a 60/20/20 split keeps the training block (2,410 days) as long
                   # as the old 80/20 split of 8 years (2,338)
                   "end": "2010-12-31", "level": 500, "space": "anomaly",
                   "train_fraction": 0.6, "test_fraction": 0.2},
        # The twin experiment saturates by day ~25 (error doubling ~2 days from 1e-7 s^-1).
        "01_data_loading": {"twin_days": 40},
        "02_autoencoder": _autoencoder(_BASE["quick"]),
        "03_barlow_twins": _contrastive(_BASE["quick"], lambd=_BASE["quick"]["lambd"]),
        # SimCLR's own head (no final batch norm), as in the SimCLR paper; full follows the
        # report's Barlow Twins head.
        "04_simclr": _contrastive(_BASE["quick"], temperature=0.3, proj_final_batchnorm=False),
        "05_supervised_contrastive": _contrastive(_BASE["quick"], temperature=0.1,
                                                  proj_final_batchnorm=False),
        "06_sparsity": {**_BASE["quick"], **_SPARSE, **_DECODER["quick"],
                        "n_decoder_days": 512, "n_eval_days": 256, "distinct_masks": 8},
        "07_decoder": {**_BASE["quick"], **_DECODER["quick"], "joint_epochs": 3,
                       "joint_lr": 1e-4, "n_train_days": 512, "n_eval": 256, "distinct_masks": 8},
        "08_forecasting": _FORECAST["quick"],
        # Every fusion scheme = the all-mode EOF code of the zero-filled input plus the scheme
        # as a residual starting at zero (issue 24): the schemes alone kept nothing of the
        # day's anomaly in 128 numbers (reports/benchmarks/fusion_linear_twins.md).
        "09_fusion": {"encoder": "eof_residual"},
        "10_assimilation": _assimilation(_FORECAST["quick"], cycle_days=60,
                                         observed_fractions=[0.02, 0.1, 0.5],
                                         obs_noise_stds=[0.1, 0.5], b_rank=10,
                                         var_iterations=8, n_stat_days=512,
                                         distinct_masks=8),
        "11_beyond": _BEYOND["quick"],
    },
    "full": {
        "common": {"data_path": WB2_ERA5_64x32, "profile": "full", "seed": 0,
                   "device": "cuda", "limit_batches": None, "run_dir": "runs/full",
                   "cache_dir": "runs/cache",
                   "start": "1959-01-01", "end": "2022-12-31", "level": None,
                   "space": "anomaly", "train_fraction": 0.6, "test_fraction": 0.2},
        "01_data_loading": {"twin_days": 60},  # used when data_path is the synthetic default
        "02_autoencoder": _autoencoder(_BASE["full"]),
        "03_barlow_twins": _contrastive(_BASE["full"], lambd=_BASE["full"]["lambd"]),
        # The report trains SimCLR and SupCon at lr 1e-4 with "the same projection network as
        # in Barlow Twins" (3.3.2), i.e. ending in batch norm.
        "04_simclr": {**_contrastive(_BASE["full"], temperature=0.3,
                                     proj_final_batchnorm=True), "lr": 1e-4},
        "05_supervised_contrastive": {**_contrastive(_BASE["full"], temperature=0.1,
                                                     proj_final_batchnorm=True), "lr": 1e-4},
        "06_sparsity": {**_BASE["full"], **_SPARSE, **_DECODER["full"],
                        "n_decoder_days": None, "n_eval_days": 512, "distinct_masks": 64},
        "07_decoder": {**_BASE["full"], **_DECODER["full"], "joint_epochs": 100,
                       "joint_lr": 1e-3, "n_train_days": None, "n_eval": None,
                       "distinct_masks": 64},
        "08_forecasting": _FORECAST["full"],
        "09_fusion": {"epochs": 100, "batch_size": 128, "width": 64, "mode_width": 32,
                      "token_dim": 256, "latent_dim": 1000, "proj_dim": 128,
                      "proj_hidden_dim": 1024, "n_train_days": None, "n_eval": 2048,
                      "decoder_epochs": 30, "decoder_width": 64, "context": 30,
                      "lstm_hidden": 512, "forecast_epochs": 50, "forecast_lr": 1e-3,
                      "forecast_train_days": None, "encoder": "eof_residual"},
        "10_assimilation": _assimilation(_FORECAST["full"], cycle_days=365,
                                         observed_fractions=[0.02, 0.1, 0.5],
                                         obs_noise_stds=[0.1, 0.5], b_rank=50,
                                         var_iterations=50, n_stat_days=4096,
                                         distinct_masks=32),
        "11_beyond": _BEYOND["full"],
    },
}

# The report's sweeps (section 3.3), one documented command: `make sweeps PROFILE=full`.
REPORT_SWEEPS: dict[str, dict[str, list[Any]]] = {
    "03_barlow_twins": {"lambd": [0.001, 0.01, 0.1]},
    "04_simclr": {"temperature": [0.01, 0.03, 0.05, 0.07, 0.08, 0.1, 0.3]},
    "05_supervised_contrastive": {"temperature": [0.01, 0.03, 0.05, 0.07, 0.08, 0.1, 0.3]},
}



def parameters_for(profile: str, name: str, overrides: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    """The papermill parameters of notebook ``name`` under ``profile`` plus ``overrides``.

    Not checked against the notebook (see
    :func:`geofusion.reporting.notebooks.checked_parameters`).

    Example:
        >>> parameters_for("quick", "03_barlow_twins")["lambd"]
        0.01
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    settings = PROFILES[profile]
    return {**settings["common"], **settings.get(name, {}), **(overrides or {})}


# The full profile on a tiny slice (issue 25): every architecture, width, batch, latent size,
# augmentation and decoder / LSTM / fusion / assimilation / diffusion size of ``full``, but five
# synthetic years (the fewest whose 60 % training block holds more than the 1000 days that the
# 1000 EOFs of the EOF-residual encoder and of the equal-size EOF twins need), one epoch of one
# batch for every model, a handful of evaluation days, on the CPU. It runs the code path of
# ``full`` end to end in minutes (`make smoke-full`), so a shape, memory or path error surfaces
# before hours of GPU time; its numbers mean nothing. Where the time went was measured with
# py-spy on a first smoke run (reports/benchmarks/full_smoke.md): encoding every training and
# test day through the width-64 networks, the latent 3D-Var's iterations and the inflation
# choice's cycles, 06's grid of observation settings.
SMOKE_COMMON = {"data_path": None, "profile": "smoke", "device": "cpu", "run_dir": "runs/smoke",
                "start": "2000-01-01", "end": "2004-12-31", "level": 500,
                # one batch per epoch and validation pass of every model (Lightning's
                # fast_dev_run): the full-size networks' code paths at a fraction of an epoch
                "limit_batches": 1}
#: What the slice shrinks besides the epochs (every ``*epochs`` key but ``warmup_epochs`` is 1)
#: and the batches (:data:`SMOKE_COMMON`'s ``limit_batches``): evaluation days, iterations, the
#: training days of decoders, joint schemes, fusion schemes and LSTMs (the encoders of 02-06
#: and 11 see all 1096 training days, one batch of them), the days between the residual-damping
#: fits' start days, the cycle's days and the statistics' days of 10.
SMOKE_SIZES = {"n_eval_days": 16, "n_eval": 16, "n_stat_days": 128,
               # two 7-day blocks of the bootstrap intervals
               "cycle_days": 14,
               "var_iterations": 3, "probe_iterations": 20, "residual_stride": 32,
               # one batch of 128: all a one-batch epoch sees
               "diffusion_train_days": 512, "n_train_days": 128, "n_decoder_days": 128,
               "forecast_train_days": 96,
               # 11's easy negatives: 1000 days apart leave few anchors in 1096 training days.
               "easy_min": 365}
#: Notebook settings the full profile leaves at the notebooks' defaults, made smaller for the
#: smoke run: 06's grid of observation settings (three missing fractions, one noise level, two
#: fractions in the figure, 16 validation days for the decoder choice) and 11's variants (the
#: baseline and "all", which runs every addition's code path at once).
SMOKE_NOTEBOOK_SETTINGS = {
    "06_sparsity": {"n_select_days": 16, "curve_ratios": [0.0, 0.5, 0.9],
                    "curve_noise_stds": [0.0, 0.5], "static_ratios": [0.0, 0.9]},
    "11_beyond": {"variants": ["baseline", "all"]},
}


def smoke_profile(full: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """``full`` (default ``PROFILES["full"]``) on the smoke slice: :data:`SMOKE_COMMON`, one
    epoch per model, the sizes of :data:`SMOKE_SIZES` and :data:`SMOKE_NOTEBOOK_SETTINGS`;
    every other value (architecture, batch, augmentation, decoder and diffusion sizes) is the
    full profile's.

    Example:
        >>> smoke = smoke_profile()
        >>> smoke["03_barlow_twins"]["width"], smoke["03_barlow_twins"]["epochs"]
        (64, 1)
    """
    full = PROFILES["full"] if full is None else full
    smoke: dict[str, dict[str, Any]] = {"common": {**full["common"], **SMOKE_COMMON}}
    for name, settings in full.items():
        if name == "common":
            continue
        smoke[name] = {key: (1 if key.endswith("epochs") and key != "warmup_epochs"
                             else SMOKE_SIZES.get(key, value))
                       for key, value in settings.items()}
        smoke[name].update(SMOKE_NOTEBOOK_SETTINGS.get(name, {}))
        if "n_eval_days" in settings and {"context", "max_lead"} <= set(settings):
            # 08's forecasts start after `context` days and need `max_lead` days after them.
            smoke[name]["n_eval_days"] = (settings["context"] + settings["max_lead"]
                                          + SMOKE_SIZES["n_eval_days"])
    return smoke


PROFILES["smoke"] = smoke_profile()
