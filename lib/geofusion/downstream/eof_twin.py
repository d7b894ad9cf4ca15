r"""The EOF code as a frozen "representation": the equal-size linear twin of a learned latent.

:class:`~geofusion.downstream.forecasting.LatentForecaster` needs a frozen *method* (anything
with ``embed``, read through :func:`geofusion.learning.methods.embed_observed`) and a decoder
``(B, D) -> (B, C, H, W)``. :func:`eof_twin` gives the ``k`` leading EOFs of the training days
(:mod:`geofusion.data.eof`) that interface, so the very same LSTM, training path
(:func:`~geofusion.downstream.forecasting.fit_latent_forecaster`), residual damping and
scoring run on the EOF coefficients instead of a learned latent:

.. math:: e(a) = V\,(\sqrt{w} \odot (a - \bar a)), \qquad
          d(z) = \bar a + (V^\top z) / \sqrt{w},

(``V`` ``(k, C H W)`` the orthonormal EOFs in the sqrt-area-weighted space, ``\bar a`` the
training mean). ``d(e(a))`` is the EOF reconstruction, so the forecaster's decoder ceiling
(:meth:`~geofusion.downstream.forecasting.LatentForecaster.ceiling_source`) is the best
reconstruction any linear code of size ``k`` achieves on the training days (Eckart-Young).

The fields are those of the model space (:mod:`geofusion.data.anomalies`): day-of-year
anomalies in the anomaly space (the default), the globally standardised fields in the report
space, i.e. what the learned encoders read. A missing point (masked context,
:func:`geofusion.downstream.forecast_scores.skill_vs_mask_ratio`) is 0 in the projection, as
for the learned encoders without a mask channel.

Example:
    >>> import numpy as np, torch
    >>> from geofusion.data.eof import fit_eof
    >>> a = np.random.default_rng(0).normal(size=(40, 2, 4, 6)).astype("float32")
    >>> method, decoder = eof_twin(fit_eof(a, np.linspace(-60, 60, 4), k=5))
    >>> z = method.embed(torch.from_numpy(a[:3]))
    >>> z.shape, decoder(z).shape
    (torch.Size([3, 5]), torch.Size([3, 2, 4, 6]))
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from geofusion.data.eof import EOFCode

__all__ = ["EOFEmbedding", "EOFDecoder", "eof_twin"]


def _frozen(array: object) -> nn.Parameter:
    # Parameters (not buffers) so that callers that find the device from
    # next(module.parameters()) work; frozen, nothing trains them.
    return nn.Parameter(torch.as_tensor(array, dtype=torch.float32).clone(),
                        requires_grad=False)


class EOFEmbedding(nn.Module):
    """``(B, C, H, W)`` model-space fields -> ``(B, k)`` EOF coefficients, as a frozen method.

    ``embed(a) = V (sqrt(w) (a - mean))`` flattened (:meth:`geofusion.data.eof.EOFCode.encode`
    in float32). ``mask_channel`` is False: an observed-only input reaches it with the missing
    points at 0, like the learned encoders without a mask channel.

    Attributes:
        code: the :class:`~geofusion.data.eof.EOFCode`.
        latent_dim: ``k``.
    """

    mask_channel = False

    def __init__(self, code: EOFCode) -> None:
        super().__init__()
        self.code = code
        self.latent_dim = code.k
        self.components = _frozen(code.components)
        self.mean = _frozen(code.mean)
        self.sqrt_weights = _frozen(code.sqrt_weights)

    def embed(self, fields: Tensor) -> Tensor:
        """``(B, C, H, W)`` -> ``(B, k)`` float32 coefficients."""
        if fields.ndim != 4 or tuple(fields.shape[1:]) != tuple(self.mean.shape):
            raise ValueError(f"fields must be (B, {', '.join(map(str, self.mean.shape))}) on "
                             f"the EOFs' grid, got {tuple(fields.shape)}")
        y = ((fields.float() - self.mean) * self.sqrt_weights).reshape(len(fields), -1)
        return y @ self.components.T

    def forward(self, fields: Tensor) -> Tensor:
        return self.embed(fields)


class EOFDecoder(nn.Module):
    """``(B, k)`` EOF coefficients -> ``(B, C, H, W)`` model-space fields:
    ``mean + (V^T z) / sqrt(w)`` (:meth:`geofusion.data.eof.EOFCode.decode` in float32)."""

    def __init__(self, code: EOFCode) -> None:
        super().__init__()
        self.components = _frozen(code.components)
        self.mean = _frozen(code.mean)
        self.sqrt_weights = _frozen(code.sqrt_weights)

    def forward(self, latents: Tensor) -> Tensor:
        if latents.ndim != 2 or latents.shape[1] != self.components.shape[0]:
            raise ValueError(f"latents must be (B, k={self.components.shape[0]}) EOF "
                             f"coefficients, got {tuple(latents.shape)}")
        y = latents.float() @ self.components
        return y.reshape(len(latents), *self.mean.shape) / self.sqrt_weights + self.mean


def eof_twin(code: EOFCode) -> tuple[EOFEmbedding, EOFDecoder]:
    """``(method, decoder)`` of the EOF code for
    :func:`~geofusion.downstream.forecasting.fit_latent_forecaster` (module docstring). Fit
    the code on the training days only (e.g.
    :func:`geofusion.downstream.reconstruction.fit_eof_code` with ``k`` = the latent size)."""
    return EOFEmbedding(code).eval(), EOFDecoder(code).eval()
