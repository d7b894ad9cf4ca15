"""geofusion: multi-modal fusion of weather reanalysis data through contrastive learning.

Modules, one concept each (README, "Library", has the same map):

- data and grids: ``data`` (WeatherBench 2 zarr, preparation, datasets), ``era5_files`` (CDS
  netCDF / GRIB), ``grids`` (orientation, conservative regridding), ``errors``, ``streaming``
  (out-of-core preparation), ``io`` (atomic writes).
- the simulated world behind the synthetic default: ``synthetic``, ``atmosphere``,
  ``spherical``, ``regrid``, ``geography``, ``world_calibration``.
- models and training: ``models``, ``losses``, ``augment``, ``methods``, ``decoders``,
  ``fusion_operators``, ``fusion_encoders``, ``fusion_methods``, ``training``, ``runs``,
  ``distributed``, ``reproducibility``.
- evaluation: ``metrics`` (WeatherBench 2 scores), ``bootstrap`` (intervals), ``baselines``,
  ``baseline_comparison``, ``evaluation`` (Table 3.1, 2-D views), ``sparsity``,
  ``reconstruction_scores``, ``forecasting``, ``forecast_scores``, ``forecast_scorecard``,
  ``fusion_scores``.
- assimilation: ``assimilation``, ``assimilation_experiment``.
- beyond the report (building blocks): ``samplers``, ``smoothness``, ``diffusion``,
  ``ensembles``, ``probes``.
- presentation: ``plotting``, ``score_plots``, ``explorers``, ``rendering``, ``results``,
  ``pipeline``.

Array layout everywhere: ``(time or batch, channel, lat, lon)``, float32, channels in
``geofusion.variables.VARIABLES`` order, latitude ascending (south to north), longitude 0..360 east.
"""

__version__ = "0.1.0"
