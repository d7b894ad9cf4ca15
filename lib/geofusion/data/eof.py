r"""Empirical orthogonal functions (EOFs) of anomaly fields: the linear code of a given size.

One code for all variables: the fields ``a`` ``(T, C, H, W)`` (anomalies in the model space,
:mod:`geofusion.data.anomalies`) are centred and weighted by :math:`\sqrt{w_i}` (``w_i`` the
cell-area weight of latitude ``i``, mean 1, :func:`area_weights`), flattened to ``D = C H W``
and decomposed on the training days (PCA):

.. math:: y_t = \sqrt{w} \odot (a_t - \bar a), \qquad z_t = V y_t, \qquad
          \hat a_t = \bar a + (V^\top z_t) / \sqrt{w},

with ``V`` ``(k, D)`` the ``k`` leading right singular vectors. In this weighting the squared
Euclidean error is the area-weighted MSE the scores use, so for ``k`` components the EOF code
is the best linear code of the training days (Eckart-Young): the *equal-size linear twin* every
learned latent of rank ``k`` is measured against.

**Gappy EOF** (:meth:`EOFCode.encode_observed`, Everson & Sirovich 1995): with only the grid
points ``M`` observed, the coefficients are fitted by ridge-regularised least squares to the
observed values,

.. math:: z = \arg\min_z \lVert M (V^\top z - y) \rVert^2 + \lambda \lVert z / \sigma \rVert^2,

``sigma`` the training standard deviation of each coefficient and ``lambda`` the mean squared
truncation error per weighted element (the posterior mean of a Gaussian prior on ``z`` with
white truncation noise).

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> lat = np.linspace(-80, 80, 4)
    >>> a = rng.normal(size=(50, 2, 4, 6)).astype("float32")
    >>> code = fit_eof(a, lat, k=5)
    >>> code.encode(a).shape, code.decode(code.encode(a)).shape
    ((50, 5), (50, 2, 4, 6))
    >>> full = fit_eof(a, lat, k=48)                       # as many modes as the data's rank
    >>> bool(np.allclose(full.decode(full.encode(a)), a, atol=1e-4))
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["area_weights", "EOFCode", "fit_eof"]


def area_weights(lat: np.ndarray) -> np.ndarray:
    """``(H,)`` cell-area weights of latitudes (degrees): ``cos(lat)``, normalised to mean 1
    (WeatherBench 2's latitude weights)."""
    w = np.cos(np.deg2rad(np.asarray(lat, dtype=np.float64)))
    return w / w.mean()


@dataclass
class EOFCode:
    """The ``k`` leading EOFs of training anomalies and what encoding / decoding needs.

    Attributes:
        components: float32 ``(k, C*H*W)``, orthonormal rows in the sqrt-area-weighted space.
        coefficient_std: float32 ``(k,)``, training standard deviation of each coefficient.
        mean: float32 ``(C, H, W)``, training mean of the anomalies (about 0).
        sqrt_weights: float32 ``(C, H, W)``, ``sqrt(area_weights(lat))`` broadcast.
        truncation_mse: training mean squared residual per weighted element after ``k``
            modes (the ``lambda`` of the gappy fit).
        explained_variance: fraction of the training (weighted) variance the ``k`` modes hold.
    """

    components: np.ndarray
    coefficient_std: np.ndarray
    mean: np.ndarray
    sqrt_weights: np.ndarray
    truncation_mse: float
    explained_variance: float

    @property
    def k(self) -> int:
        """Number of components."""
        return int(self.components.shape[0])

    def _weighted(self, a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.float64)
        if a.shape[1:] != self.mean.shape:
            raise ValueError(f"fields of shape {a.shape[1:]} do not match the EOFs' "
                             f"{self.mean.shape}; fit the EOFs on fields of the same grid")
        return ((a - self.mean) * self.sqrt_weights).reshape(len(a), -1)

    def encode(self, a: np.ndarray) -> np.ndarray:
        """Anomalies ``(T, C, H, W)`` -> coefficients float32 ``(T, k)``."""
        return (self._weighted(a) @ self.components.T.astype(np.float64)).astype(np.float32)

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Coefficients ``(T, k)`` -> anomalies float32 ``(T, C, H, W)``."""
        y = np.asarray(z, dtype=np.float64) @ self.components.astype(np.float64)
        out = y.reshape((len(y),) + self.mean.shape) / self.sqrt_weights + self.mean
        return out.astype(np.float32)

    def encode_observed(self, a: np.ndarray, observed: np.ndarray, chunk: int = 32
                        ) -> np.ndarray:
        """Gappy-EOF coefficients ``(T, k)`` fitted to the observed grid points only.

        Args:
            a: anomalies ``(T, C, H, W)``; values at missing points are ignored.
            observed: bool ``(T, H, W)`` (True = observed), shared by the variables, as
                :func:`geofusion.data.observations.make_mask` draws them.
            chunk: days solved at once.
        """
        observed = np.asarray(observed, dtype=bool)
        if observed.shape != (len(a),) + self.mean.shape[1:]:
            raise ValueError(f"observed must be (T, H, W) = {(len(a),) + self.mean.shape[1:]}, "
                             f"got {observed.shape}")
        v = torch.from_numpy(self.components.astype(np.float64))
        prior = torch.from_numpy(1.0 / np.maximum(self.coefficient_std.astype(np.float64),
                                                  1e-12) ** 2)
        y_all = torch.from_numpy(np.where(np.repeat(observed[:, None], a.shape[1], axis=1)
                                          .reshape(len(a), -1), self._weighted(a), 0.0))
        m_all = torch.from_numpy(np.repeat(observed[:, None], a.shape[1], axis=1)
                                 .reshape(len(a), -1).astype(np.float64))
        out = np.empty((len(a), self.k), dtype=np.float32)
        for start in range(0, len(a), chunk):
            m, y = m_all[start:start + chunk], y_all[start:start + chunk]
            vm = v[None] * m[:, None, :]
            gram = vm @ v.T + self.truncation_mse * torch.diag_embed(prior.expand(len(m), -1))
            out[start:start + chunk] = torch.linalg.solve(gram, vm @ y[:, :, None])[..., 0] \
                .float().numpy()
        return out

    def encode_channels(self, a: np.ndarray, present: Sequence[int]) -> np.ndarray:
        """Gappy-EOF coefficients ``(T, k)`` fitted to the channels ``present`` only (a
        *mode* absent: its values in ``a`` are ignored), the fit of :meth:`encode_observed`
        with the mask ``M`` = every grid point of the present channels, the same for every
        day: ``z = (V_p V_p^T + lambda diag(1 / sigma^2))^{-1} V_p y_p``."""
        columns = np.zeros(self.mean.shape, dtype=bool)
        present = [int(c) for c in present]
        if not present or not set(present) <= set(range(self.mean.shape[0])):
            raise ValueError(f"present must name channels in 0..{self.mean.shape[0] - 1}, "
                             f"got {present}")
        columns[present] = True
        columns = columns.reshape(-1)
        v = self.components.astype(np.float64)[:, columns]
        prior = 1.0 / np.maximum(self.coefficient_std.astype(np.float64), 1e-12) ** 2
        gram = v @ v.T + self.truncation_mse * np.diag(prior)
        y = self._weighted(np.where(np.isfinite(a), a, 0.0))[:, columns]
        return np.linalg.solve(gram, v @ y.T).T.astype(np.float32)

    def truncate(self, k: int) -> EOFCode:
        """The leading ``k`` modes (``truncation_mse`` and ``explained_variance`` unknown:
        NaN); refit with :func:`fit_eof` for a gappy fit."""
        return EOFCode(self.components[:k], self.coefficient_std[:k], self.mean,
                       self.sqrt_weights, float("nan"), float("nan"))


def fit_eof(a_train: np.ndarray, lat: np.ndarray, k: int) -> EOFCode:
    """The ``k`` leading area-weighted EOFs of the training anomalies ``(T, C, H, W)``.

    Computed from the ``(T, T)`` Gram matrix in float64 (``T`` < ``D`` days here), so it is
    exact up to rounding; deterministic up to the sign of each component, which is fixed so
    that each component's largest-magnitude loading is positive.

    The anomalies minus their mean span at most ``min(T - 1, C*H*W)`` directions, so ``k``
    may not exceed that, and each of the ``k`` EOFs must carry variance (an eigenvalue above
    1e-10 of the largest): a component of zero variance has no direction to normalise and
    would turn every code into inf.
    """
    a = np.asarray(a_train, dtype=np.float64)
    if a.ndim != 4:
        raise ValueError(f"a_train must be (T, C, H, W), got shape {a.shape}")
    most = min(len(a) - 1, int(np.prod(a.shape[1:])))
    if not 1 <= k <= most:
        raise ValueError(f"k must be in [1, min(T - 1, C*H*W)] = [1, {most}] for {len(a)} "
                         f"training days (their anomalies about the mean span at most T - 1 "
                         f"directions), got {k}; use more training days or fewer EOFs")
    if not np.isfinite(a).all():
        raise ValueError("a_train holds NaN or inf; fill missing values before fitting EOFs")
    mean = a.mean(axis=0)
    sqrt_w = np.broadcast_to(np.sqrt(area_weights(lat))[None, :, None], a.shape[1:]).copy()
    y = ((a - mean) * sqrt_w).reshape(len(a), -1)
    evals, evecs = np.linalg.eigh(y @ y.T)
    order = np.argsort(evals)[::-1]
    evals, evecs = np.clip(evals[order], 0.0, None), evecs[:, order]
    if not evals[k - 1] > 1e-10 * evals[0]:
        rank = int((evals > 1e-10 * evals[0]).sum())
        raise ValueError(f"the training anomalies span {rank} directions, fewer than the {k} "
                         "EOFs asked for (repeated or constant days?); ask for at most "
                         f"{rank} EOFs or use more distinct training days")
    s = np.sqrt(evals[:k])
    components = (evecs[:, :k].T @ y) / s[:, None]
    signs = np.sign(components[np.arange(k), np.abs(components).argmax(axis=1)])
    components *= np.where(signs == 0, 1.0, signs)[:, None]
    total = evals.sum()
    return EOFCode(components=components.astype(np.float32),
                   coefficient_std=(s / np.sqrt(len(a))).astype(np.float32),
                   mean=mean.astype(np.float32), sqrt_weights=sqrt_w.astype(np.float32),
                   truncation_mse=float(evals[k:].sum() / y.size),
                   explained_variance=float(evals[:k].sum() / total) if total > 0 else 1.0)
