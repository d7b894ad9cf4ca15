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
