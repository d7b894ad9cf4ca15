"""The error geofusion raises for input data it cannot use.

:class:`DataError` is a ``ValueError`` whose message names what is wrong with the data and how to
fix it (CONTRIBUTING: errors). It lives in its own module so that every data module
(:mod:`geofusion.data`, :mod:`geofusion.data.era5_files`, :mod:`geofusion.grids`,
:mod:`geofusion.data.streaming`) raises the same type without importing one another;
``geofusion.data.DataError`` is the same class.
"""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """Input data that geofusion cannot use; the message names the problem and the fix."""
