"""The notebooks' model requests, rebuilt from their parameters (issue 25)."""

from __future__ import annotations

import pytest

from geofusion.experiments.model_requests import notebook_requests
from geofusion.reporting.pretrain import notebook_parameters


def test_requests_follow_the_profile_and_the_notebook_defaults():
    planned = notebook_parameters("full", ["04_simclr", "11_beyond"], {"epochs": 3})
    (simclr,) = notebook_requests("04_simclr", planned["04_simclr"])
    assert simclr.method == "simclr" and simclr.config.epochs == 3
    assert simclr.config.lr == 1e-4 and simclr.build_params["width"] == 64
    assert simclr.build_params["proj_final_batchnorm"] is True
    variants = notebook_requests("11_beyond", planned["11_beyond"])
    assert [v.label for v in variants][-1] == "all"
    assert variants[-1].temporal_pairs["with_mirror"] is True
    assert variants[-1].config.batch_sampler is not None


def test_a_notebook_without_models_of_its_own_is_refused():
    with pytest.raises(ValueError, match="07, 08 and 10 reuse"):
        notebook_requests("07_decoder", {"seed": 0, "device": "cpu"})
