"""Decoders from a representation back to the grid (report chapter 4, steps 3 and 5).

:class:`FrozenEncoderDecoder` trains a :class:`geofusion.models.FieldDecoder` on the latents of
an already trained method whose encoder stays fixed: how much of the fields the
representation keeps. The latents are those the rest of the project uses,
:func:`geofusion.methods.embed_observed` (the method's inference view, plus the mask channel for
methods trained on sparse views).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from geofusion.methods import embed_observed

__all__ = ["FrozenEncoderDecoder", "reconstruct"]


class FrozenEncoderDecoder(nn.Module):
    """A decoder trained on the latents of a frozen, trained method.

    ``loss(batch)`` is the mean squared error of ``decoder(embed_observed(method, x))`` against
    ``x`` (``batch = (x, ...)``, x ``(B, C, H, W)`` standardised). No gradient reaches the
    method and it stays in eval mode (batch-norm statistics frozen), so
    :func:`geofusion.training.fit` trains only the decoder.

    Args:
        method: a trained method (``embed`` and optionally ``mask_channel``).
        decoder: ``(B, latent_dim) -> (B, C, H, W)``.
    """

    def __init__(self, method: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.method = method
        self.decoder = decoder
        for parameter in self.method.parameters():
            parameter.requires_grad_(False)
        self.method.eval()

    def train(self, mode: bool = True) -> FrozenEncoderDecoder:
        super().train(mode)
        self.method.eval()
        return self

    def embed(self, fields: Tensor, observed: Tensor | None = None) -> Tensor:
        """(B, C, H, W) -> (B, latent_dim), the frozen method's representation."""
        with torch.no_grad():
            return embed_observed(self.method, fields, observed)

    def forward(self, fields: Tensor, observed: Tensor | None = None) -> Tensor:
        """Reconstruction (B, C, H, W) of ``fields`` seen where ``observed`` (None = all)."""
        return self.decoder(self.embed(fields, observed))

    def loss(self, batch: tuple[Tensor, ...], generator: torch.Generator | None = None
             ) -> tuple[Tensor, dict[str, float]]:
        fields = batch[0]
        return nn.functional.mse_loss(self(fields).float(), fields.float()), {}


@torch.no_grad()
def reconstruct(model: nn.Module, fields: np.ndarray | Tensor, observed: Tensor | None = None,
                batch_size: int = 256) -> np.ndarray:
    """``model(fields, observed)`` over ``fields`` (N, C, H, W) in batches, in eval mode.

    ``model`` is any module whose ``forward(fields, observed)`` returns the reconstruction
    (:class:`FrozenEncoderDecoder`, the joint schemes); ``observed`` is a bool (N, H, W) mask or
    None. Returns float32 numpy (N, C, H, W), standardised units.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    fields = torch.as_tensor(np.asarray(fields) if not isinstance(fields, Tensor) else fields,
                             dtype=torch.float32)
    chunks = []
    for start in range(0, len(fields), batch_size):
        batch = fields[start:start + batch_size].to(device)
        mask = None if observed is None else observed[start:start + batch_size].to(device)
        chunks.append(model(batch, mask).float().cpu())
    model.train(was_training)
    return torch.cat(chunks).numpy()
