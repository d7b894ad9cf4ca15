r"""Spherical-harmonic transforms on a Gauss-Legendre grid, fast on CPU for small grids.

The Legendre functions, Gauss nodes and quadrature weights come from ``torch-harmonics``
(``RealSHT``, ``InverseRealSHT``, ``InverseRealVectorSHT``, orthonormal, no Condon-Shortley
phase); this module only re-arranges their precomputed tensors into batched real matrix products
over zonal wavenumber ``m`` in numpy. Why: on a 32 x 64 grid one torch-harmonics call costs
1-5 ms on one CPU thread (einsum overhead), the same contraction as one ``np.matmul`` of
``(M, K, L) @ (M, L, columns)`` costs tens of microseconds, and a time integration makes
hundreds of thousands of them. ``tests/test_world.py`` checks every operator against the
torch-harmonics modules it is built from.

Conventions: grid arrays ``(nlon, nlat, B)`` (longitude, latitude, field; latitude rows
**north to south** as in torch-harmonics, :attr:`GaussianGrid.lat` gives them; longitude
``2 pi i / nlon`` from 0); spectral arrays real ``(M, L, 2, B)`` (order ``m``, degree ``l``,
real/imaginary part, field) of torch-harmonics' orthonormal basis, triangularly truncated at
``l <= truncation`` (:meth:`to_complex` gives torch-harmonics' complex ``(B, L, M)``). These
layouts make each transform two matrix products without transposes. With :math:`a` the radius:

- :meth:`synthesis` / :meth:`analysis`: grid <-> coefficients (exact for band-limited fields).
- :meth:`ddx` = :math:`\frac{1}{a\cos\varphi}\partial_\lambda`, :meth:`ddy` =
  :math:`\frac{1}{a}\partial_\varphi` of the field with the given coefficients, on the grid.
- :meth:`laplacian_eigenvalues`: :math:`-l(l+1)/a^2`.

Example:
    >>> import numpy as np
    >>> g = GaussianGrid(32, 64, truncation=21)
    >>> field = (np.cos(g.lon_rad)[:, None] * np.cos(np.deg2rad(g.lat))[None, :])[..., None]
    >>> bool(np.allclose(g.synthesis(g.analysis(field)), field))
    True
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch_harmonics as th

__all__ = ["GaussianGrid"]


class GaussianGrid:
    """Gauss-Legendre grid and its triangularly truncated spherical-harmonic operators.

    Args:
        nlat: Gauss latitudes (rows, north to south).
        nlon: equally spaced longitudes from 0.
        truncation: largest degree kept (``T``); alias-free quadratic products need
            ``nlat >= (3T + 1) / 2`` and ``nlon >= 3T + 1`` (T21 on 32 x 64).
        radius: sphere radius in metres (derivatives are per metre).
    """

    def __init__(self, nlat: int = 32, nlon: int = 64, truncation: int = 21,
                 radius: float = 6.371e6) -> None:
        if not (0 < truncation < nlat and nlon >= 2 * truncation + 2):
            raise ValueError(f"truncation T{truncation} does not fit a {nlat} x {nlon} grid; "
                             f"use truncation < nlat and nlon >= 2 T + 2 (e.g. T21 on 32 x 64)")
        self.nlat, self.nlon, self.truncation, self.radius = nlat, nlon, truncation, radius
        n = truncation + 1
        self.L = self.M = n
        fwd = th.RealSHT(nlat, nlon, grid="legendre-gauss", csphase=False).double()
        inv = th.InverseRealSHT(nlat, nlon, grid="legendre-gauss", csphase=False).double()
        vinv = th.InverseRealVectorSHT(nlat, nlon, grid="legendre-gauss",
                                       csphase=False).double()
        # (M, L, K) tensors; transposed once into matmul-ready layouts.
        self._w_fwd = np.ascontiguousarray(fwd.weights.numpy()[:n, :n, :])  # (M, L, K)
        self._p_inv = np.ascontiguousarray(inv.pct.numpy()[:n, :n, :].transpose(0, 2, 1))
        dpct = vinv.dpct.numpy()[:, :n, :n, :]
        self._d0 = np.ascontiguousarray(dpct[0].transpose(0, 2, 1))  # (M, K, L)
        self._d1 = np.ascontiguousarray(dpct[1].transpose(0, 2, 1))
        cost, quad = th.quadrature.legendre_gauss_weights(nlat, -1, 1)
        # torch-harmonics orders rows by colatitude ascending: north first.
        self.lat = np.rad2deg(np.arcsin(-np.asarray(cost)))  # (nlat,) deg, descending
        self.quad_weights = np.asarray(quad, dtype=np.float64)  # sums to 2 (in sin(lat))
        self.lon_rad = 2 * np.pi * np.arange(nlon) / nlon
        self.lon = np.rad2deg(self.lon_rad)
        ll = np.arange(n, dtype=np.float64)[:, None] * np.ones((1, n))
        mm = np.ones((n, 1)) * np.arange(n, dtype=np.float64)[None, :]
        # Degree, order and existence (m <= l) in the spectral layout (M, L, 1, 1).
        self.degree = ll.T[:, :, None, None].copy()
        self.order = mm.T[:, :, None, None].copy()
        self.valid = self.order <= self.degree
        self._valid_real = self.valid.astype(np.float64)
        self._setup()

    # ---- layouts ----------------------------------------------------------------------
    # Spectral arrays are real ``(M, L, 2, B)`` (order, degree, real/imaginary, field) and grid
    # arrays ``(N, K, B)`` (longitude, latitude row, field): then the Legendre sums are one
    # batched ``(M, K, L) @ (M, L, 2B)`` product and the longitude sums one ``(N, 2M) @
    # (2M, K B)`` product with no FFT call (for 64 points a numpy FFT costs ~50 us of overhead).
    def _setup(self) -> None:
        m, lam = np.arange(self.M), self.lon_rad
        weight = np.where(m == 0, 1.0, 2.0)  # real inverse DFT: X_0 + 2 sum Re(X_m e^{im lam})
        cos = weight[:, None] * np.cos(m[:, None] * lam[None])  # (M, N)
        sin = weight[:, None] * np.sin(m[:, None] * lam[None])
        # Synthesis from (re, im) stacked along the order axis: Re(X e^{i m lam}).
        f_val = np.concatenate([cos, -sin]).T  # (N, 2M)
        # d/dx multiplies the coefficients by i: Re(i X e^{i m lam}) = -im cos - re sin.
        f_ddx = np.concatenate([-sin, -cos]).T
        self._f3 = np.ascontiguousarray(np.stack([f_val, f_ddx, f_val]))  # (3, N, 2M)
        self._f_val = np.ascontiguousarray(f_val)
        # Forward: 2 pi / N sum_n x_n e^{-i m lam_n} (torch-harmonics' normalisation).
        self._f_fwd = (2 * np.pi / self.nlon) * np.concatenate(
            [np.cos(m[:, None] * lam[None]), -np.sin(m[:, None] * lam[None])])  # (2M, N)
        # Value, northward and eastward derivative Legendre matrices, 1/a folded in.
        self._stack = np.ascontiguousarray(np.concatenate(
            [self._p_inv, -self._d0 / self.radius, self._d1 / self.radius], axis=1))

    def _to_grid(self, legendre: np.ndarray, f: np.ndarray, n_ops: int, b: int) -> np.ndarray:
        """``(n_ops, N, K, B)`` grids from Legendre sums ``(M, n_ops K, 2B)``."""
        k = self.nlat
        a = legendre.reshape(self.M, n_ops, k, 2, b).transpose(1, 3, 0, 2, 4)
        a = np.ascontiguousarray(a).reshape(n_ops, 2 * self.M, k * b)
        return np.matmul(f, a).reshape(n_ops, self.nlon, k, b)

    def synthesis(self, spec: np.ndarray) -> np.ndarray:
        """Grid ``(N, K, B)`` of the coefficients ``(M, L, 2, B)``."""
        b = spec.shape[-1]
        out = np.matmul(self._p_inv, spec.reshape(self.M, self.L, 2 * b))
        return self._to_grid(out, self._f_val[None], 1, b)[0]

    def fields(self, spec: np.ndarray) -> np.ndarray:
        """Value, :meth:`ddx` and :meth:`ddy` at once: ``(3, N, K, B)``."""
        b = spec.shape[-1]
        out = np.matmul(self._stack, spec.reshape(self.M, self.L, 2 * b))
        # Operator order in ``_stack``: value, ddy, ddx; ``_f3``: value, ddx, value.
        grids = self._to_grid(out, self._f3[[0, 2, 1]], 3, b)
        return grids[[0, 2, 1]]

    def analysis(self, grid: np.ndarray) -> np.ndarray:
        """Coefficients ``(M, L, 2, B)`` (truncated at T) of the grid ``(N, K, B)``."""
        n, k, b = grid.shape
        f = self._f_fwd @ grid.reshape(n, k * b)  # (2M, K B)
        f = np.ascontiguousarray(f.reshape(2, self.M, k, b).transpose(1, 2, 0, 3))
        out = np.matmul(self._w_fwd, f.reshape(self.M, k, 2 * b))  # (M, L, 2B)
        return out.reshape(self.M, self.L, 2, b) * self._valid_real

    def ddx(self, spec: np.ndarray) -> np.ndarray:
        """Eastward derivative ``(1 / (a cos(lat))) d/dlon`` on the grid ``(N, K, B)``."""
        return self.fields(spec)[1]

    def ddy(self, spec: np.ndarray) -> np.ndarray:
        """Northward derivative ``(1 / a) d/dlat`` on the grid ``(N, K, B)``."""
        return self.fields(spec)[2]

    def with_dtype(self, dtype: type) -> GaussianGrid:
        """A copy whose operators compute in ``dtype`` (e.g. ``np.float32``: about twice as
        fast; the float64 operators stay the reference)."""
        new = copy.copy(self)
        for name in ("_w_fwd", "_p_inv", "_d0", "_d1", "_f3", "_f_val", "_f_fwd", "_stack",
                     "_valid_real"):
            setattr(new, name, getattr(self, name).astype(dtype))
        return new

    # ---- conversions ------------------------------------------------------------------
    def to_complex(self, spec: np.ndarray) -> np.ndarray:
        """``(B, L, M)`` complex coefficients (torch-harmonics' order) of ``(M, L, 2, B)``."""
        return (spec[:, :, 0] + 1j * spec[:, :, 1]).transpose(2, 1, 0)

    def from_complex(self, coeffs: np.ndarray) -> np.ndarray:
        """``(M, L, 2, B)`` real layout of complex ``(B, L, M)`` coefficients."""
        c = np.asarray(coeffs).transpose(2, 1, 0)
        return np.ascontiguousarray(np.stack([c.real, c.imag], axis=2)) * self._valid_real

    def grid_from_latlon(self, field: np.ndarray) -> np.ndarray:
        """``(N, K, B)`` layout of fields ``(B, K, N)`` (rows north to south)."""
        return np.ascontiguousarray(np.asarray(field).transpose(2, 1, 0))

    def grid_to_latlon(self, grid: np.ndarray) -> np.ndarray:
        """``(B, K, N)`` fields (rows north to south) of the ``(N, K, B)`` layout."""
        return grid.transpose(2, 1, 0)

    def laplacian_eigenvalues(self) -> np.ndarray:
        """``-l (l + 1) / a^2`` as ``(M, L, 1, 1)`` (broadcasts against spectral arrays)."""
        return -self.degree * (self.degree + 1) / self.radius**2

    def cell_bounds_sin_lat(self) -> np.ndarray:
        """Cell edges in sin(latitude), ``(nlat + 1,)`` descending from 1 to -1 (rows' order).

        Each Gauss weight is the width in sin(latitude) of its row's cell (they sum to 2)."""
        return 1.0 - np.concatenate([[0.0], np.cumsum(self.quad_weights)])

    def to_torch_harmonics(self, coeffs: np.ndarray) -> torch.Tensor:
        """Coefficients padded to torch-harmonics' full ``(nlat, nlon // 2 + 1)`` layout."""
        full = np.zeros((*coeffs.shape[:-2], self.nlat, self.nlon // 2 + 1), np.complex128)
        full[..., : self.L, : self.M] = coeffs
        return torch.from_numpy(full)
