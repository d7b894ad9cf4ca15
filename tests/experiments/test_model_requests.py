"""The notebooks' model requests, rebuilt from their parameters (issue 25)."""

from __future__ import annotations

import pytest

from geofusion.experiments.model_requests import base_requests, notebook_requests
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


def test_base_requests_are_those_of_notebook_06_for_every_notebook_that_shares_them():
    names = ["06_sparsity", "07_decoder", "08_forecasting", "10_assimilation"]
    planned = notebook_parameters("full", names)
    sparse = notebook_requests("06_sparsity", planned["06_sparsity"])
    assert [r.label for r in sparse] == ["autoencoder", "barlow_twins", "sparse_barlow_twins"]
    assert base_requests(planned["07_decoder"], ("autoencoder", "barlow_twins")) == sparse[:2]
    assert base_requests(planned["08_forecasting"]) == sparse
    assert base_requests(planned["10_assimilation"], ("sparse_barlow_twins",)) == sparse[2:]
    assert sparse[2].build_params["observation"]["max_ratio"] == 0.9
    with pytest.raises(ValueError, match="unknown base models"):
        base_requests(planned["07_decoder"], ("simclr",))
