"""Torch datasets of prepared fields: :class:`FieldDataset` yields ``(fields, season)`` pairs of
one day, ``fields`` ``(C, H, W)`` float32 standardised, ``season`` the int64 label of
:func:`geofusion.variables.season_labels`. Batch samplers and paired datasets are in
:mod:`geofusion.data.samplers`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["FieldDataset"]


class FieldDataset(torch.utils.data.Dataset):
    """Samples ``(x, season)``: x float32 ``(C, H, W)``, season an int64 scalar tensor.

    ``fields``: ``(N, C, H, W)`` array or tensor (standardised); ``labels``: ``(N,)`` season
    labels (see :func:`season_labels`); None gives every sample label 0 (a single class).
    """

    def __init__(self, fields: np.ndarray | torch.Tensor, labels: Any = None) -> None:
        self.fields = torch.as_tensor(np.asarray(fields) if not isinstance(fields, torch.Tensor)
                                      else fields, dtype=torch.float32)
        if self.fields.ndim != 4:
            raise ValueError(f"fields must be (N, C, H, W), got shape {tuple(self.fields.shape)}")
        if labels is None:
            self.labels = torch.zeros(len(self.fields), dtype=torch.int64)
        else:
            self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        if len(self.labels) != len(self.fields):
            raise ValueError(f"{len(self.labels)} labels for {len(self.fields)} fields; pass one "
                             "label per sample")

    def __len__(self) -> int:
        return len(self.fields)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fields[index], self.labels[index]
