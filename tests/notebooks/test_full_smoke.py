"""The full profile's settings, end to end on a tiny slice (issue 25, `make smoke-full`).

The notebooks whose full settings differ most from quick run with the ``smoke`` profile
(:func:`geofusion.experiments.profiles.smoke_profile`: every architecture and size of
``full``, five synthetic years, one epoch, a handful of evaluation days): 03 (ResNet-18 width 64,
batch 128, the report's 72x144 views), 07 (width-64 frozen decoder and the three joint
schemes), 09 (all fusion schemes at full width, token and LSTM sizes) and 11 (the "all" variant,
convolutional decoder, 1024-wide diffusion with 16 members). Minutes each on two cores, so
marked ``full_smoke`` and skipped by ``make test`` (``pytest -m full_smoke`` runs them).
"""

from __future__ import annotations

import json

import pytest

from geofusion.experiments.profiles import PROFILES, SMOKE_NOTEBOOK_SETTINGS, SMOKE_SIZES
from geofusion.reporting.notebooks import checked_parameters

SMOKE_NOTEBOOKS = ["03_barlow_twins", "07_decoder", "09_fusion", "11_beyond"]


def test_smoke_keeps_every_full_size_and_shrinks_only_time_and_days():
    full, smoke = PROFILES["full"], PROFILES["smoke"]
    assert set(full) == set(smoke)
    for name, settings in full.items():
        if name == "common":
            continue
        for key, value in settings.items():
            if key.endswith("epochs") and key != "warmup_epochs":
                assert smoke[name][key] == 1
            elif key not in SMOKE_SIZES and key not in SMOKE_NOTEBOOK_SETTINGS.get(name, {}):
                assert smoke[name][key] == value, (name, key)
        for key, value in SMOKE_NOTEBOOK_SETTINGS.get(name, {}).items():
            assert smoke[name][key] == value, (name, key)
    assert smoke["common"]["limit_batches"] == 1 and full["common"]["limit_batches"] is None
    assert smoke["common"]["device"] == "cpu" and smoke["common"]["data_path"] is None
    # Every interval resamples blocks of DEFAULT_BLOCK days: 10's 6-day cycle failed there.
    from geofusion.verification.bootstrap import DEFAULT_BLOCK
    assert smoke["10_assimilation"]["cycle_days"] >= 2 * DEFAULT_BLOCK
    assert min(SMOKE_SIZES["n_eval_days"], SMOKE_SIZES["n_eval"]) >= 2 * DEFAULT_BLOCK
    # 08 forecasts from `context` days up to `max_lead` days ahead: its evaluation days hold both.
    forecasting = smoke["08_forecasting"]
    assert forecasting["n_eval_days"] > forecasting["context"] + forecasting["max_lead"]


@pytest.mark.notebook
@pytest.mark.full_smoke
@pytest.mark.parametrize("name", SMOKE_NOTEBOOKS)
def test_notebook_runs_with_the_full_settings(run_notebook, tmp_path, name):
    params = checked_parameters("smoke", [name])[name]
    params.pop("run_dir"), params.pop("cache_dir")  # the fixture's fresh directories
    run_notebook(f"{name}.ipynb", **params)
    saved = json.loads((tmp_path / "runs" / "results" / f"{name}.json").read_text())
    assert saved  # the notebook reached its last cell
