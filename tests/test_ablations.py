"""Each ablation variant switches on exactly its own additions."""

from __future__ import annotations

import pytest

from geofusion.ablations import VARIANTS, ablation_table, variant_settings
from geofusion.training import TrainConfig


def test_each_variant_switches_on_exactly_its_additions():
    config = TrainConfig(batch_size=12)
    seen = {}
    for variant in VARIANTS:
        kwargs, cfg = variant_settings(variant, config, max_shift=3, smoothness_weight=0.5)
        pairs = kwargs.get("temporal_pairs")
        seen[variant] = (bool(pairs) and kwargs["temporal_positives"],
                         kwargs.get("smoothness_weight", 0.0) > 0,
                         cfg.batch_sampler is not None)
        if kwargs.get("smoothness_weight"):
            assert pairs["with_mirror"] is True  # the smoothness term needs t - d, t, t + d
        if pairs:
            assert pairs["max_shift"] == 3
    assert seen == {"baseline": (False, False, False), "temporal_positives": (True, False, False),
                    "smoothness": (False, True, False),
                    "time_aware_batches": (False, False, True), "all": (True, True, True)}
    assert config.batch_sampler is None  # the caller's config is not changed
    with pytest.raises(ValueError, match="unknown ablation variant"):
        variant_settings("smooth", config)


def test_ablation_table_flattens_variables_and_formats_intervals():
    table = ablation_table({"a": {"crps": {"t": 1.23456, "z": 2.0}, "acc": 0.5}},
                           {"a": {"crps": {"t": [1.0, 1.5]}}})
    assert table.loc["a", "crps: t"] == "1.235 [1, 1.5]"
    assert table.loc["a", "crps: z"] == "2" and table.loc["a", "acc"] == "0.5"


def test_latent_ridge_forecast_is_exact_for_latents_that_evolve_linearly():
    import numpy as np
    import torch
    from torch import nn

    from geofusion.ablations import latent_ridge_forecast
    from geofusion.data import PreparedData
    from geofusion.reconstruction_scores import LatentReconstructor

    class Flat(nn.Module):
        mask_channel = False

        def __init__(self):
            super().__init__()
            self.unused = nn.Parameter(torch.zeros(1))

        def embed(self, fields):
            return fields.flatten(1)

    identity = nn.Linear(2, 2)
    with torch.no_grad():
        identity.weight.copy_(torch.eye(2))
        identity.bias.zero_()
    decoder = nn.Sequential(identity, nn.Unflatten(1, (1, 1, 2)))
    angles = 0.3 * np.arange(60)  # a rotation: z_{t+1} = R z_t exactly
    days = np.stack([np.cos(angles), np.sin(angles)], axis=1).reshape(60, 1, 1, 2)
    prepared = PreparedData(train=days[:40].astype(np.float32),
                            valid=days[40:].astype(np.float32), train_times=np.arange(40),
                            valid_times=np.arange(40, 60), channels=("x",),
                            mean=np.zeros(1), std=np.ones(1), lat=np.zeros(1), lon=np.zeros(2),
                            level=500, synthetic=True)
    forecast = latent_ridge_forecast(LatentReconstructor(Flat(), decoder), prepared, 10,
                                     ridge=1e-9)
    np.testing.assert_allclose(forecast, days[41:51], atol=1e-4)
    with pytest.raises(ValueError, match="n_days"):
        latent_ridge_forecast(LatentReconstructor(Flat(), decoder), prepared, 20)
