"""Data: WeatherBench 2 zarr stores and ERA5 files from the Climate Data Store (``stores``,
``era5_files``), their preparation into daily standardised arrays split by time
(``preparation``, ``prepared``), out-of-core preparation (``streaming``), torch datasets and
batch samplers (``datasets``, ``samplers``), summaries for notebook 01 (``summaries``), and
sparse, noisy observations of a day (``observations``: masks and correlated noise).

Layer 3: imports ``world`` (the synthetic default) and the root modules.

The package's namespace is the one users type, ``from geofusion import data; data.load(...)``:
it re-exports the public names below (and the variable names of :mod:`geofusion.variables`).
"""

from geofusion.data.datasets import FieldDataset
from geofusion.data.preparation import (
    BLOCK_BYTES,
    DEFAULT_GRID,
    PROGRESS_MIN_BYTES,
    REGRID_METHODS,
    load,
    prepare,
    step_bytes,
    time_blocks,
)
from geofusion.data.prepared import PreparedData
from geofusion.data.stores import WB2_ERA5_64x32, default_store, open_era5
from geofusion.data.summaries import mode_correlations, point_series, seasonal_cycle
from geofusion.errors import DataError
from geofusion.variables import (
    SEASONS,
    SURFACE_VARIABLES,
    UNITS,
    VARIABLES,
    WB2_LEVELS,
    season_labels,
)
from geofusion.world.synthetic import synthetic_era5

__all__ = [
    "VARIABLES", "SURFACE_VARIABLES", "WB2_LEVELS", "UNITS", "SEASONS", "DataError",
    "DEFAULT_GRID", "REGRID_METHODS", "BLOCK_BYTES", "PROGRESS_MIN_BYTES", "WB2_ERA5_64x32",
    "step_bytes", "time_blocks",
    "open_era5", "synthetic_era5", "default_store", "prepare", "PreparedData", "season_labels",
    "FieldDataset", "load", "seasonal_cycle", "mode_correlations", "point_series",
]
