"""Data: WeatherBench 2 zarr stores and ERA5 files from the Climate Data Store, their preparation
into daily standardised arrays (``preparation``), out-of-core preparation (``streaming``),
torch datasets and batch samplers (``samplers``), and sparse, noisy observations of a day
(``observations``: masks and correlated noise).

Layer 3: imports ``world`` (the synthetic default) and the root modules.

The package's namespace is the one users type, ``from geofusion import data; data.load(...)``:
it re-exports the public names of :mod:`geofusion.data.preparation`.
"""

from geofusion.data.preparation import (
    BLOCK_BYTES,
    DEFAULT_GRID,
    PROGRESS_MIN_BYTES,
    REGRID_METHODS,
    SEASONS,
    SURFACE_VARIABLES,
    UNITS,
    VARIABLES,
    WB2_LEVELS,
    DataError,
    FieldDataset,
    PreparedData,
    default_store,
    load,
    mode_correlations,
    open_era5,
    point_series,
    prepare,
    season_labels,
    seasonal_cycle,
    step_bytes,
    synthetic_era5,
    time_blocks,
)

__all__ = [
    "VARIABLES", "SURFACE_VARIABLES", "WB2_LEVELS", "UNITS", "SEASONS", "DataError",
    "DEFAULT_GRID", "REGRID_METHODS", "BLOCK_BYTES", "PROGRESS_MIN_BYTES", "step_bytes",
    "time_blocks",
    "open_era5", "synthetic_era5", "default_store", "prepare", "PreparedData", "season_labels",
    "FieldDataset", "load", "seasonal_cycle", "mode_correlations", "point_series",
]
