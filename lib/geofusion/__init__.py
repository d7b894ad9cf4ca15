"""geofusion: multi-modal fusion of weather reanalysis data through contrastive learning.

Modules, one concept each:

- ``data``: WeatherBench 2 ERA5 zarr stores, the synthetic ERA5-like default, preparation
  (daily means, 80/20 split by time, standardisation) and torch datasets.
- ``era5_files``: ERA5 netCDF / GRIB files from the Climate Data Store in the WB2 layout.
- ``grids``: the one orientation (latitude ascending, longitude 0..360), conservative regridding.
- ``errors``: ``DataError``, raised for input data geofusion cannot use.
- ``plotting``: maps on a cartopy projection with offline coastlines.
- ``models``: ResNet-18 encoder, decoder, projection heads.
- ``losses``: Barlow Twins, NT-Xent (SimCLR), supervised contrastive.
- ``augment``: the report's batched augmentations (resize, random crop, mean filter).
- ``methods``: each training objective as a module with a ``loss(batch, generator)``.
- ``training``: the shared loop (progress, logs, atomic checkpoints, resume).
- ``evaluation``: embedding figures of the report's Table 3.1 and 2-D views.
- ``metrics``: latitude-weighted RMSE and anomaly correlation (WeatherBench 2).
- ``sparsity``: observation masks and spatially correlated noise.
- ``forecasting``: latent sequence-to-sequence LSTM and reference baselines.
- ``fusion``: early, late and hybrid fusion of the modes.
- ``pipeline``: runs the numbered notebooks with papermill and renders reports.

Array layout everywhere: ``(time or batch, channel, lat, lon)``, float32, channels in
``geofusion.data.VARIABLES`` order, latitude ascending (south to north), longitude 0..360 east.
"""

__version__ = "0.1.0"
