"""`pipeline cost`: a few measured steps per model, projected over a profile (issue 25)."""

from __future__ import annotations

import pytest

from geofusion.experiments import cost
from geofusion.reporting import cli
from geofusion.reporting.pretrain import notebook_parameters


def test_jobs_count_each_shared_model_once_and_cover_fusion_and_variants():
    planned = notebook_parameters("full", ["02_autoencoder", "03_barlow_twins", "06_sparsity",
                                           "09_fusion", "11_beyond"])
    jobs = cost.cost_jobs(planned)
    labels = [(notebook, request.label) for notebook, request, _ in jobs]
    # 06 asks for 02's autoencoder and 03's Barlow Twins: trained once, counted once.
    assert labels[:3] == [("02_autoencoder", "autoencoder"), ("03_barlow_twins", "barlow_twins"),
                          ("06_sparsity", "sparse_barlow_twins")]
    assert sum(n == "09_fusion" for n, _ in labels) == 8  # 6 schemes + dropout + mode group
    assert sum(n == "11_beyond" for n, _ in labels) == 5
    assert {days for _, _, days in jobs} == {14026}  # 1959-2022, 60 % training days


def test_measured_step_projects_over_the_profile(monkeypatch):
    planned = notebook_parameters("quick", ["02_autoencoder", "09_fusion"],
                                  {"width": 4, "latent_dim": 16, "batch_size": 8,
                                   "mode_width": 2, "token_dim": 8, "proj_dim": 8,
                                   "proj_hidden_dim": 16, "schemes": ["early"],
                                   "dropout_scheme": None, "mode_group_scheme": None})
    costs = [cost.measure_request(n, r, d, device="cpu", steps=1)
             for n, r, d in cost.cost_jobs(planned)]
    assert [c.label for c in costs] == ["autoencoder", "early"]
    for c in costs:
        assert c.seconds_per_step > 0 and c.flops_per_step > 0 and c.peak_memory_gib > 0
        assert c.projected_hours == pytest.approx(
            c.seconds_per_step * c.steps_per_epoch * c.epochs / 3600)
    ae = costs[0]
    ae_params = planned["02_autoencoder"]
    assert ae.steps_per_epoch == cost.training_days(ae_params, ae_params["train_fraction"]) // 8
    # Twice the FLOPs at the same efficiency take twice as long.
    ae.flops_per_step *= 2
    doubled = ae.gpu_hours(100, 0.5)
    ae.flops_per_step /= 2
    assert doubled == pytest.approx(2 * ae.gpu_hours(100, 0.5))
    rows, per_notebook = cost.projection_table(costs, 100, 0.5)
    assert len(rows) == 2 and list(per_notebook.index) == ["02_autoencoder", "09_fusion", "total"]


def test_cost_command_prints_and_writes_the_tables(tmp_path, capsys):
    out = tmp_path / "cost.md"
    assert cli.main(["cost", "02", "--steps", "1", "--set", "width=4", "latent_dim=16",
                     "batch_size=8", "--cost-output", str(out)]) == 0
    text = out.read_text()
    assert "measured on" in text and "projection from the counted FLOPs" in text
    assert "| total |" in text and "autoencoder" in capsys.readouterr().out
