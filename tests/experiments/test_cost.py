"""`pipeline cost`: a few measured steps per model, projected over a profile (issue 25)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from geofusion.experiments import cost
from geofusion.experiments.cost import CostJob
from geofusion.learning.config import TrainConfig
from geofusion.reporting import cli
from geofusion.reporting.notebooks import notebook_names
from geofusion.reporting.pretrain import notebook_parameters

FULL_TRAINING_DAYS = 14026  # 1959-2022, 60 % training days

# Small enough to build and step every kind of model in seconds on one core.
TINY = {"width": 2, "latent_dim": 8, "batch_size": 8, "proj_dim": 8, "proj_hidden_dim": 16,
        "decoder_width": 2, "lstm_hidden": 8, "forecast_batch_size": 8, "mode_width": 2,
        "token_dim": 8, "schemes": ["early"], "dropout_scheme": None,
        "mode_group_scheme": None, "inner_batch": 4, "variants": ["baseline"],
        "decoder": "conv", "diffusion_hidden": 16, "diffusion_batch_size": 8,
        "augmentation": "native"}


def _by_notebook(jobs: list[CostJob]) -> dict[str, list[CostJob]]:
    out: dict[str, list[CostJob]] = {}
    for job in jobs:
        out.setdefault(job.notebook, []).append(job)
    return out


def _days(start: str, end: str, fraction: float) -> int:
    """Training days counted independently of cost.training_days."""
    return round(len(pd.date_range(start, end, freq="D")) * fraction)


def test_jobs_count_each_shared_model_once_and_cover_fusion_and_variants():
    planned = notebook_parameters("full", ["02_autoencoder", "03_barlow_twins", "06_sparsity",
                                           "09_fusion", "11_beyond"])
    jobs = cost.cost_jobs(planned)
    labels = [(job.notebook, job.label) for job in jobs]
    # 06 asks for 02's autoencoder and 03's Barlow Twins: trained once, counted once.
    assert labels[:3] == [("02_autoencoder", "autoencoder"), ("03_barlow_twins", "barlow_twins"),
                          ("06_sparsity", "sparse_barlow_twins")]
    assert jobs[0].shared_with == ("06_sparsity",) and jobs[1].shared_with == ("06_sparsity",)
    fusion = [job for job in jobs if job.kind == "fusion"]
    assert len(fusion) == 8  # 6 schemes + dropout + mode group
    assert sum(job.kind == "encoder" and job.notebook == "11_beyond" for job in jobs) == 5
    assert _days("1959-01-01", "2022-12-31", 0.6) == FULL_TRAINING_DAYS
    assert {job.samples for job in fusion} == {FULL_TRAINING_DAYS}
    assert len({job.key for job in jobs}) == len(jobs)


def test_every_training_notebook_gets_its_models_in_the_full_profile():
    names = notebook_names(None)
    planned = notebook_parameters("full", names)
    jobs = cost.cost_jobs(planned)
    kinds = {notebook: [job.kind for job in own] for notebook, own in _by_notebook(jobs).items()}
    # 10's models are 08's (same settings): counted under 08, with 10 named as a user.
    assert set(kinds) == set(cost.TRAINING_NOTEBOOKS) - {"10_assimilation"}
    assert "10_assimilation" in {n for job in jobs for n in job.shared_with}
    # 07: the three joint schemes with the notebook's parameters; its frozen decoder is 06's.
    joint = [job for job in jobs if job.kind == "joint"]
    assert [job.label for job in joint] == ["joint kadeethum", "joint quetin", "joint yao_dippel"]
    assert {job.config.epochs for job in joint} == {planned["07_decoder"]["joint_epochs"]} == {100}
    assert joint[0].build["params"] == {"inner_batch": 32, "decoder_weight": 1.0}
    (bt_decoder,) = [job for job in jobs if job.label == "barlow_twins decoder"
                     and job.notebook == "06_sparsity"]
    assert bt_decoder.shared_with == ("07_decoder",)
    # 08: a decoder per contrastive representation, an LSTM per representation (+ EOF code).
    assert kinds["08_forecasting"].count("frozen_decoder") == 2
    assert kinds["08_forecasting"].count("lstm") == 4
    # 09: a decoder and an LSTM per scheme, besides the schemes.
    assert (kinds["09_fusion"].count("fusion") == kinds["09_fusion"].count("frozen_decoder")
            == kinds["09_fusion"].count("lstm") == 8)
    # 11 (conv decoder in full): a decoder and two DDPMs per variant, the DDPMs on the CPU.
    variants = len(planned["11_beyond"]["variants"])
    assert kinds["11_beyond"].count("frozen_decoder") == variants == 5
    ddpms = [job for job in jobs if job.kind == "diffusion"]
    assert len(ddpms) == 2 * variants and {job.device for job in ddpms} == {"cpu"}
    assert {job.samples for job in ddpms} == {8192}
    assert {job.build["settings"]["hidden"] for job in ddpms} == {1024}
    assert len({job.key for job in jobs}) == len(jobs)


def test_notebook_10_alone_gets_the_models_it_shares_with_08():
    planned = notebook_parameters("full", ["10_assimilation"])
    jobs = cost.cost_jobs(planned)
    assert [(job.label, job.kind) for job in jobs] == [
        ("sparse_barlow_twins", "encoder"), ("sparse_barlow_twins decoder", "frozen_decoder"),
        ("sparse_barlow_twins LSTM", "lstm")]
    planned = notebook_parameters("full", ["08_forecasting", "10_assimilation"])
    assert [job.notebook for job in cost.cost_jobs(planned)].count("10_assimilation") == 0


def test_lstm_steps_per_epoch_follow_the_training_windows():
    planned = notebook_parameters("full", ["08_forecasting", "09_fusion"],
                                  {"forecast_train_days": 1000})
    jobs = cost.cost_jobs(planned)
    p8, p9 = planned["08_forecasting"], planned["09_fusion"]
    days = _days(p8["start"], p8["end"], p8["train_fraction"])
    for job in jobs:
        if job.kind != "lstm":
            continue
        if job.notebook == "08_forecasting":
            windows, batch = days - p8["context"] - p8["forecast_horizon"] + 1, 64
        else:  # 09: the last forecast_train_days training days, one-step loss, batch_size
            windows, batch = 1000 - p9["context"], 128
        assert job.samples == windows
        assert cost.steps_per_epoch(job.samples, job.config) == windows // batch


def test_steps_per_epoch_drops_the_last_batch_and_honours_limit_batches():
    assert cost.steps_per_epoch(1000, TrainConfig(batch_size=128)) == 7
    assert cost.steps_per_epoch(1000, TrainConfig(batch_size=128, drop_last=False)) == 8
    assert cost.steps_per_epoch(100, TrainConfig(batch_size=128)) == 1
    assert cost.steps_per_epoch(1000, TrainConfig(batch_size=128, limit_batches=2)) == 2
    with pytest.raises(ValueError, match="shorter context"):
        cost.lstm_windows(30, 30)


def test_quick_profile_decoders_follow_the_notebooks_day_limits():
    planned = notebook_parameters("quick", ["06_sparsity", "07_decoder", "09_fusion"])
    jobs = cost.cost_jobs(planned)
    decoders = {(job.notebook, job.label): job for job in jobs if job.kind == "frozen_decoder"}
    assert decoders["06_sparsity", "barlow_twins decoder"].samples == 512
    assert decoders["06_sparsity", "barlow_twins decoder"].shared_with == ("07_decoder",)
    assert decoders["06_sparsity", "sparse_barlow_twins decoder (observed)"].build[
        "observation"]["max_ratio"] == 0.9
    assert decoders["09_fusion", "early decoder"].samples == 384  # n_train_days
    # quick 11 decodes with the ridge (closed form): no conv decoder to train.
    planned = notebook_parameters("quick", ["11_beyond"])
    assert not [job for job in cost.cost_jobs(planned) if job.kind == "frozen_decoder"]


def test_an_unknown_notebook_is_refused():
    assert cost.notebook_jobs("01_data_loading", {}) == []
    with pytest.raises(ValueError, match="notebooks that train"):
        cost.notebook_jobs("12_new", {})


def test_measured_step_projects_over_the_profile(monkeypatch):
    planned = notebook_parameters("quick", ["02_autoencoder", "09_fusion"],
                                  {"width": 4, "latent_dim": 16, "batch_size": 8,
                                   "mode_width": 2, "token_dim": 8, "proj_dim": 8,
                                   "proj_hidden_dim": 16, "schemes": ["early"],
                                   "dropout_scheme": None, "mode_group_scheme": None,
                                   "decoder_width": 2, "lstm_hidden": 8})
    costs = [cost.measure_job(job, device="cpu", steps=1) for job in cost.cost_jobs(planned)]
    assert [c.label for c in costs] == ["autoencoder", "early", "early decoder", "early LSTM"]
    for c in costs:
        assert c.seconds_per_step > 0 and c.flops_per_step > 0 and c.peak_memory_gib > 0
        assert c.projected_hours == pytest.approx(
            c.seconds_per_step * c.steps_per_epoch * c.epochs / 3600)
    ae = costs[0]
    ae_params = planned["02_autoencoder"]
    assert ae.steps_per_epoch == _days(ae_params["start"], ae_params["end"],
                                       ae_params["train_fraction"]) // 8
    # Twice the FLOPs at the same efficiency take twice as long.
    ae.flops_per_step *= 2
    doubled = ae.gpu_hours(100, 0.5)
    ae.flops_per_step /= 2
    assert doubled == pytest.approx(2 * ae.gpu_hours(100, 0.5))
    rows, per_notebook = cost.projection_table(costs, 100, 0.5)
    assert len(rows) == 4 and list(per_notebook.index) == ["02_autoencoder", "09_fusion", "total"]


def test_every_kind_of_model_is_built_and_stepped():
    names = ["06_sparsity", "07_decoder", "08_forecasting", "09_fusion", "10_assimilation",
             "11_beyond"]
    planned = notebook_parameters("quick", names, TINY)
    decoders = [job for job in cost.cost_jobs(planned)
                if job.kind in ("frozen_decoder", "joint", "lstm", "diffusion")]
    costs = [cost.measure_job(job, device="cpu", steps=1) for job in decoders]
    assert {c.kind for c in costs} == {"frozen_decoder", "joint", "lstm", "diffusion"}
    for c in costs:
        assert c.seconds_per_step > 0 and c.flops_per_step > 0, c.label


def test_lstm_and_ddpm_flops_match_a_hand_count():
    b, t, d, h = 4, 5, 6, 7
    job = CostJob("08_forecasting", "LSTM", "lstm", TrainConfig(batch_size=b), 100, "k",
                  build={"latent_dim": d, "hidden_dim": h, "num_layers": 1, "context": t,
                         "horizon": 1, "seed": 0})
    measured = cost.measure_job(job, device="cpu", steps=1)
    # Gates of both LSTMs: 2 * 4h(d + h) per sample and step, backward twice the forward;
    # the head h -> d: forward, weight gradient and input gradient.
    lstm = 3 * b * (t + 1) * 2 * 4 * h * (d + h)
    head = 3 * 2 * b * h * d
    assert measured.flops_per_step == lstm + head
    settings = {"hidden": 8, "layers": 2, "steps": 10, "epochs": 1, "batch_size": b, "lr": 1e-3}
    job = CostJob("11_beyond", "DDPM", "diffusion", TrainConfig(batch_size=b), 100, "k",
                  build={"dim": d, "settings": settings, "seed": 0}, device="cpu")
    measured = cost.measure_job(job, device="cpu", steps=1)
    step_dim = 64  # the denoiser's sinusoidal step embedding
    sizes = [(d + d + step_dim, 8), (8, 8), (8, d)]
    forward = sum(2 * b * i * o for i, o in sizes)
    # Backward: every weight gradient, every input gradient but the first layer's (data).
    backward = forward + sum(2 * b * i * o for i, o in sizes[1:])
    assert measured.flops_per_step == forward + backward


def test_time_steps_counts_one_step_and_times_the_others():
    model = torch.nn.Linear(3, 2)
    model.loss = lambda batch, generator: (model(batch).pow(2).mean(), {})
    batches = iter([torch.randn(4, 3) for _ in range(4)])
    timing = cost.time_steps(model, batches, TrainConfig(), torch.device("cpu"), steps=2,
                             warmup=2)
    assert timing.flops == 3 * 2 * 4 * 3 * 2 - 2 * 4 * 3 * 2  # no input gradient
    assert timing.seconds > 0 and "aten.addmm" in timing.counted_ops
    assert next(batches, None) is None  # 2 warm-up + 2 timed steps consumed the 4 batches


def test_cost_command_prints_and_writes_the_tables(tmp_path, capsys):
    out = tmp_path / "cost.md"
    assert cli.main(["cost", "02", "--steps", "1", "--set", "width=4", "latent_dim=16",
                     "batch_size=8", "--cost-output", str(out)]) == 0
    text = out.read_text()
    assert "measured on" in text and "projection from the counted FLOPs" in text
    assert "| total |" in text and "autoencoder" in capsys.readouterr().out


def test_cost_command_notes_a_notebook_whose_models_are_counted_under_another(tmp_path):
    out = tmp_path / "cost.md"
    assert cli.main(["cost", "08", "10", "--steps", "1", "--set", "width=2", "latent_dim=8",
                     "batch_size=8", "proj_dim=8", "decoder_width=2", "lstm_hidden=8",
                     "forecast_batch_size=8", "--cost-output", str(out)]) == 0
    text = out.read_text()
    assert "- 10_assimilation: trains no model of its own" in text
    assert "sparse_barlow_twins LSTM is counted under 08_forecasting" in text
    assert "| 08_forecasting | eof_code LSTM | lstm |" in text
