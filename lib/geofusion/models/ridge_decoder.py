"""A closed-form (ridge) decoder of frozen latents: converged by construction.

A decoder trained by gradient descent for a few epochs on a CPU budget is not converged, and
what it scores then says more about its training than about the latent (notebook 11's quick
ablation measured a two-epoch convolutional decoder *worse than the training mean*). The
ridge decoder is the exact minimiser of its objective, so the only thing that differs between
two encoders decoded this way is what their latents hold (linearly):

``x_hat = W^T [s(z); 1]``, ``s(z) = (z - mu) / sigma`` the per-dimension standardisation of
the training latents, and

``W = argmin_W sum_n ||x_n - W^T [s(z_n); 1]||^2 + ridge ||W_{1..D}||^2``

over training days ``n`` (the intercept unpenalised), with ``x_n`` the flattened standardised
fields ``(C H W,)``. Solved by the normal equations in float64:
``W = (X^T X + ridge P)^{-1} X^T Y``, ``P = diag(1, .., 1, 0)``, ``X = [s(Z), 1]``.

With ``n_components = K`` the targets are instead the ``K`` leading principal-component scores
of the training fields (the same ridge onto ``Y V_K``, then ``x_hat = mean + scores V_K^T``):
the decoder cannot produce structure outside the leading patterns (a smaller model and a
smoother output; ``None`` keeps every grid point, the exact ridge onto the fields).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["RidgeDecoder", "fit_ridge_decoder"]


class RidgeDecoder(nn.Module):
    """``(B, D)`` latents -> ``(B, C, H, W)`` standardised fields, a fixed linear map.

    Build it with :func:`fit_ridge_decoder`. Buffers (float32): ``latent_mean``,
    ``latent_scale`` ``(D,)``; ``weight`` ``(D + 1, K)`` (last row the intercept); ``basis``
    ``(K, C H W)`` (identity when decoding to the fields: then it is not stored, ``K = C H W``)
    and ``field_mean`` ``(C H W,)`` (zero when decoding to the fields).
    """

    def __init__(self, latent_mean: Tensor, latent_scale: Tensor, weight: Tensor,
                 field_shape: tuple[int, int, int], basis: Tensor | None = None,
                 field_mean: Tensor | None = None) -> None:
        super().__init__()
        size = int(np.prod(field_shape))
        outputs = weight.shape[1]
        if weight.shape[0] != len(latent_mean) + 1 or latent_mean.shape != latent_scale.shape:
            raise ValueError(f"weight {tuple(weight.shape)} must be (D + 1, K) for latents of "
                             f"size D = {len(latent_mean)}")
        if basis is None and outputs != size:
            raise ValueError(f"without a basis the weight must map to the {size} field values, "
                             f"got {outputs}")
        if basis is not None and tuple(basis.shape) != (outputs, size):
            raise ValueError(f"basis must be ({outputs}, {size}), got {tuple(basis.shape)}")
        self.field_shape = tuple(int(s) for s in field_shape)
        self.register_buffer("latent_mean", latent_mean.float())
        self.register_buffer("latent_scale", latent_scale.float())
        self.register_buffer("weight", weight.float())
        self.register_buffer("basis", None if basis is None else basis.float())
        self.register_buffer("field_mean", torch.zeros(size) if field_mean is None
                             else field_mean.float())

    def forward(self, latents: Tensor) -> Tensor:
        z = (latents.float() - self.latent_mean) / self.latent_scale
        out = z @ self.weight[:-1] + self.weight[-1]
        if self.basis is not None:
            out = out @ self.basis
        return (out + self.field_mean).reshape(len(latents), *self.field_shape)


def fit_ridge_decoder(latents: Tensor | np.ndarray, fields: Tensor | np.ndarray,
                      ridge: float = 1.0, n_components: int | None = None) -> RidgeDecoder:
    """The ridge decoder (module doc) of ``latents`` ``(N, D)`` to ``fields`` ``(N, C, H, W)``
    (standardised), fitted in closed form on these ``N`` (training) days.

    Args:
        ridge: the penalty on the standardised-latent weights (in units of squared
            standardised field values; small against ``N`` means nearly least squares).
        n_components: None to decode to every grid point, else the number ``K`` of leading
            principal components of ``fields`` to decode to.

    Example:
        >>> z = torch.randn(50, 3)
        >>> x = (z @ torch.randn(3, 8)).reshape(50, 2, 2, 2) + 1.0
        >>> decoder = fit_ridge_decoder(z, x, ridge=1e-8)
        >>> bool(torch.allclose(decoder(z), x, atol=1e-4))
        True
    """
    z = np.asarray(latents.detach().cpu() if isinstance(latents, Tensor) else latents,
                   dtype=np.float64)
    x = np.asarray(fields.detach().cpu() if isinstance(fields, Tensor) else fields,
                   dtype=np.float64)
    if z.ndim != 2 or x.ndim != 4 or len(z) != len(x):
        raise ValueError(f"need latents (N, D) and fields (N, C, H, W) of the same N, got "
                         f"{z.shape} and {x.shape}")
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    y = x.reshape(len(x), -1)
    basis = field_mean = None
    if n_components is not None:
        if not 1 <= n_components <= min(y.shape):
            raise ValueError(f"n_components must be in [1, {min(y.shape)}], got {n_components}")
        field_mean = y.mean(axis=0)
        # Leading right singular vectors of the centred fields: the principal components.
        _, _, vt = np.linalg.svd(y - field_mean, full_matrices=False)
        basis = vt[:n_components]
        y = (y - field_mean) @ basis.T
    mean, scale = z.mean(axis=0), z.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    design = np.concatenate([(z - mean) / scale, np.ones((len(z), 1))], axis=1)
    penalty = ridge * np.eye(design.shape[1])
    penalty[-1, -1] = 0.0
    weight = np.linalg.solve(design.T @ design + penalty, design.T @ y)
    as_tensor = torch.from_numpy
    return RidgeDecoder(as_tensor(mean), as_tensor(scale), as_tensor(weight),
                        tuple(x.shape[1:]),
                        None if basis is None else as_tensor(basis),
                        None if field_mean is None else as_tensor(field_mean))
