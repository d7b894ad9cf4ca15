r"""The space the models read and reconstruct: day-of-year anomalies, scaled per variable.

The report standardises every variable with one mean and standard deviation over all days and
grid points (``space="report"``). The day-to-day weather is then a small part of each channel
(1.5 % of the 2 m temperature variance, 7 % of humidity's), so a model trained to reconstruct
such fields spends its capacity on the seasonal cycle. The default space
(``space="anomaly"``) removes what the climatology already knows:

.. math:: a_{t,c} = \frac{x_{t,c} - c_c(\mathrm{doy}_t)}{s_c}, \qquad
          s_c^2 = \overline{w\, (x_{t,c} - c_c(\mathrm{doy}_t))^2}^{\,t \in \mathrm{train},\,i,j},

with ``c`` the 15-day day-of-year climatology of the training days
(:func:`geofusion.data.climatology.climatology`) and ``s_c`` the area-weighted RMS training
anomaly of variable ``c`` (``w`` the cell-area weights, mean 1), so every variable's anomaly has
unit area-weighted variance over the training days and a latitude-weighted MSE counts the five
variables equally. The inverse adds the climatology back,
``x = c(doy) + s a`` (:meth:`geofusion.data.prepared.PreparedData.destandardise` with the days),
so every score stays in physical units. Per-variable scaling measured better than per-grid-point
scaling (which over-weights the quiet tropics): README, "Representation space".

Everything is fitted on the training days only.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from geofusion.data.climatology import climatology, day_of_year
from geofusion.data.eof import area_weights
from geofusion.data.prepared import PreparedData

__all__ = ["SPACES", "CLIMATOLOGY_WINDOW", "to_space"]

#: Representation spaces: "anomaly" (default) and "report" (the report's global
#: standardisation, kept to reproduce Table 3.1 literally).
SPACES: tuple[str, ...] = ("anomaly", "report")
#: Width in days of the climatology window the anomalies are taken from (as the baseline's).
CLIMATOLOGY_WINDOW = 15


def to_space(prepared: PreparedData, space: str, window: int = CLIMATOLOGY_WINDOW
             ) -> PreparedData:
    """``prepared`` (report space, as :func:`geofusion.data.preparation.prepare` makes it) in
    ``space``: a copy whose ``train`` / ``valid`` / ``test`` are the scaled anomalies, with
    ``mean = 0``, ``std = s`` and ``climatology = c`` (physical units, ``(366, C, H, W)``), so
    that ``destandardise(a, times)`` returns physical fields.

    Example:
        >>> import numpy as np
        >>> from geofusion.data.prepared import PreparedData
        >>> days = np.arange("2001-01-01", "2003-01-01", dtype="datetime64[D]")
        >>> days = days.astype("datetime64[ns]")
        >>> cycle = np.sin(2 * np.pi * (np.arange(len(days)) % 365) / 365)[:, None, None, None]
        >>> noise = np.random.default_rng(0).normal(size=(len(days), 1, 2, 3))
        >>> x = (cycle + 0.1 * noise).astype("float32")
        >>> p = PreparedData(x[:600], x[600:], days[:600], days[600:], ("t",),
        ...                  np.zeros(1, "float32"), np.ones(1, "float32"),
        ...                  np.array([-45.0, 45.0]), np.arange(3) * 120.0, 500, True)
        >>> a = to_space(p, "anomaly")
        >>> round(float(a.train.std()), 1), a.space
        (1.0, 'anomaly')
        >>> bool(np.allclose(a.destandardise(a.valid, a.valid_times), p.valid, atol=1e-5))
        True
    """
    if space not in SPACES:
        raise ValueError(f"unknown space {space!r}; choose one of {SPACES}")
    if prepared.space != "report":
        raise ValueError(f"prepared data is already in the {prepared.space!r} space; convert "
                         "the report-space data that prepare() returns")
    if space == "report":
        return prepared
    train_phys = prepared.destandardise(prepared.train).astype(np.float64)
    clim = climatology(train_phys, prepared.train_times, window)
    anomaly = train_phys - clim[day_of_year(prepared.train_times) - 1]
    weights = area_weights(prepared.lat)[None, None, :, None]
    scale = np.sqrt((weights * anomaly ** 2).mean(axis=(0, 2, 3)))
    if not (np.isfinite(scale).all() and (scale > 0).all()):
        raise ValueError(f"a variable has no day-to-day anomaly on the training days (scale "
                         f"{scale}); anomaly space needs varying fields, use space='report'")

    def convert(fields: np.ndarray | None, times: np.ndarray | None) -> np.ndarray | None:
        if fields is None:
            return None
        phys = prepared.destandardise(fields).astype(np.float64)
        return ((phys - clim[day_of_year(times) - 1]) / scale[:, None, None]).astype(np.float32)

    return dataclasses.replace(
        prepared, train=convert(prepared.train, prepared.train_times),
        valid=convert(prepared.valid, prepared.valid_times),
        test=convert(prepared.test, prepared.test_times),
        mean=np.zeros_like(prepared.mean), std=scale.astype(np.float32),
        space="anomaly", climatology=clim.astype(np.float32))
