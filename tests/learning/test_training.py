"""The shared training loop: learning, exact resumption, checkpoint errors, atomic files."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from geofusion.io import atomic_path
from geofusion.learning import training
from geofusion.learning.checkpoints import CheckpointError, load_checkpoint
from geofusion.learning.config import TrainConfig
from geofusion.learning.training import describe_stop, evaluate_loss, fit, learning_rate


class NoisyRegression(nn.Module):
    """Toy method using every source of randomness the loop must control: input noise drawn
    from the method generator, dropout (global RNG) and shuffling (loader generator)."""

    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Dropout(0.2),
                                     nn.Linear(hidden, 1))

    def loss(self, batch, generator):
        x, y = batch
        noise = torch.randn(x.shape, generator=generator) * 0.01
        loss = nn.functional.mse_loss(self.encoder(x + noise).squeeze(-1), y)
        return loss, {"abs_error": loss.detach().sqrt().item()}


def toy_data(n: int = 96) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
    return TensorDataset(x, y)


def make_method(seed: int = 0) -> NoisyRegression:
    torch.manual_seed(seed)
    return NoisyRegression()


CONFIG = TrainConfig(epochs=6, batch_size=16, lr=1e-2, device="cpu")


def test_fit_lowers_the_loss_and_logs_every_epoch(tmp_path):
    history = fit(make_method(), toy_data(), CONFIG, run_dir=tmp_path, progress=False)
    assert list(history["epoch"]) == [1, 2, 3, 4, 5, 6]
    assert history["loss"].iloc[-1] < 0.5 * history["loss"].iloc[0]
    assert "abs_error" in history
    logged = (tmp_path / "metrics.csv").read_text().splitlines()
    assert len(logged) == 1 + 6
    assert (tmp_path / "config.json").exists()


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    data = toy_data()
    uninterrupted = make_method()
    full_history = fit(uninterrupted, data, CONFIG, run_dir=tmp_path / "a", progress=False)

    interrupted = make_method()
    fit(interrupted, data, CONFIG, run_dir=tmp_path / "b", progress=False, stop_after=2)
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["epoch"] == 2
    # A new process would build a fresh model (differently initialised) and resume.
    resumed = make_method(seed=123)
    resumed_history = fit(resumed, data, CONFIG, run_dir=tmp_path / "b", progress=False)

    for (name, a), (_, b) in zip(uninterrupted.state_dict().items(),
                                 resumed.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"{name} differs after resume")
    torch.testing.assert_close(torch.tensor(full_history["loss"].values),
                               torch.tensor(resumed_history["loss"].values), rtol=0, atol=0)


def test_completed_run_loads_instead_of_retraining(tmp_path):
    trained = make_method()
    fit(trained, toy_data(), CONFIG, run_dir=tmp_path, progress=False)
    loaded = make_method(seed=5)
    history = fit(loaded, toy_data(), CONFIG, run_dir=tmp_path, progress=False)
    assert len(history) == CONFIG.epochs
    for a, b in zip(trained.parameters(), loaded.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_validation_loss_is_logged(tmp_path):
    history = fit(make_method(), toy_data(), CONFIG, valid_set=toy_data(32), progress=False)
    assert history["valid_loss"].notna().all()
    assert history["valid_loss"].iloc[-1] < history["valid_loss"].iloc[0]


def test_corrupt_checkpoint_gets_a_clear_error(tmp_path):
    fit(make_method(), toy_data(), CONFIG, run_dir=tmp_path, progress=False, stop_after=1)
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt or truncated.*delete it"):
        fit(make_method(), toy_data(), CONFIG, run_dir=tmp_path, progress=False)


def test_checkpoint_of_other_settings_or_architecture_is_refused(tmp_path):
    fit(make_method(), toy_data(), CONFIG, run_dir=tmp_path, progress=False, stop_after=1)
    other_lr = TrainConfig(epochs=6, batch_size=16, lr=1e-3, device="cpu")
    with pytest.raises(CheckpointError, match="lr: saved 0.01 != now 0.001"):
        fit(make_method(), toy_data(), other_lr, run_dir=tmp_path, progress=False)
    torch.manual_seed(0)
    with pytest.raises(CheckpointError, match="another architecture"):
        fit(NoisyRegression(hidden=8), toy_data(), CONFIG, run_dir=tmp_path, progress=False)


def test_checkpoint_of_another_method_is_refused(tmp_path):
    fit(make_method(), toy_data(), CONFIG, run_dir=tmp_path, progress=False, stop_after=1)

    class OtherMethod(NoisyRegression):
        pass

    with pytest.raises(CheckpointError, match="written by method 'NoisyRegression'"):
        fit(OtherMethod(), toy_data(), CONFIG, run_dir=tmp_path, progress=False)


def test_atomic_path_leaves_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "prepared.npz"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["prepared.npz"]


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="too few for one batch"):
        fit(make_method(), toy_data(0), CONFIG, progress=False)


# --- training to a plateau: schedule, early stopping, budget, and their resumption ----------

PLATEAU = TrainConfig(epochs=30, batch_size=16, lr=1e-2, device="cpu", patience=2,
                      min_delta=0.02, lr_schedule="cosine", warmup_epochs=2, min_lr=1e-4)


def test_learning_rate_warmup_then_cosine_by_hand():
    config = TrainConfig(epochs=4, lr=1.0, lr_schedule="cosine", warmup_epochs=1, min_lr=0.0)
    # 2 steps per epoch: warm-up 1/2, 2/2; cosine over the 6 remaining steps at 0/6 .. 5/6.
    expected = [0.5, 1.0] + [(1 + math.cos(math.pi * k / 6)) / 2 for k in range(6)]
    got = [learning_rate(config, step, 2) for step in range(8)]
    assert got == pytest.approx(expected, abs=1e-12)
    constant = TrainConfig(epochs=4, lr=0.1, warmup_epochs=2)
    assert [learning_rate(constant, s, 1) for s in range(4)] == pytest.approx([0.05, 0.1, 0.1, 0.1])
    assert learning_rate(TrainConfig(lr=0.3), 1234, 7) == 0.3  # the default: constant


def test_every_step_uses_the_scheduled_learning_rate(monkeypatch):
    seen = []
    original = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    config = TrainConfig(epochs=3, batch_size=16, lr=1e-2, device="cpu",
                         lr_schedule="cosine", warmup_epochs=1, min_lr=1e-3)
    history = fit(make_method(), toy_data(), config, progress=False)
    steps = 96 // 16
    assert seen == [learning_rate(config, s, steps) for s in range(3 * steps)]
    assert list(history["lr"]) == [seen[0], seen[steps], seen[2 * steps]]


def reference_stop(valid_losses, patience, min_delta):
    """Independent loop: (stopping epoch, best epoch) of early stopping on a loss sequence."""
    best, best_epoch, bad = float("inf"), 0, 0
    for epoch, value in enumerate(valid_losses, start=1):
        if value < best - min_delta:
            best, best_epoch, bad = value, epoch, 0
        else:
            bad += 1
        if bad >= patience:
            return epoch, best_epoch
    return len(valid_losses), best_epoch


def test_early_stopping_stops_at_the_plateau_and_restores_the_best_weights():
    valid = toy_data(32)
    method = make_method()
    history = fit(method, toy_data(), PLATEAU, valid_set=valid, progress=False)
    assert history.attrs["stop_reason"] == "patience"
    assert len(history) < PLATEAU.epochs
    # Train the same run without early stopping: the stopped run is its prefix, and the loop
    # reference stops at the same epoch on that longer sequence.
    long = dataclasses.replace(PLATEAU, patience=None)
    full = fit(make_method(), toy_data(), long, valid_set=valid, progress=False)
    stop, best = reference_stop(list(full["valid_loss"]), PLATEAU.patience, PLATEAU.min_delta)
    assert len(history) == stop and history.attrs["best_epoch"] == best
    assert full.attrs["stop_reason"] == "epochs" and len(full) == long.epochs
    pd.testing.assert_frame_equal(history.drop(columns="seconds"),
                                  full.iloc[:stop].drop(columns="seconds"))
    # The weights are the best epoch's: their validation loss is the one logged there.
    restored = evaluate_loss(method, valid, PLATEAU)
    assert restored == history["valid_loss"].iloc[best - 1]
    assert restored != history["valid_loss"].iloc[-1]
    assert f"at epoch {best} (weights restored)" in describe_stop(history)


def test_resumed_plateau_run_equals_uninterrupted_run(tmp_path):
    data, valid = toy_data(), toy_data(32)
    uninterrupted = make_method()
    expected = fit(uninterrupted, data, PLATEAU, run_dir=tmp_path / "a", valid_set=valid,
                   progress=False)
    assert expected.attrs["stop_reason"] == "patience"
    # Interrupt twice, including right after the best epoch and mid-patience.
    best = expected.attrs["best_epoch"]
    fit(make_method(), data, PLATEAU, run_dir=tmp_path / "b", valid_set=valid, progress=False,
        stop_after=best)
    partial = fit(make_method(seed=7), data, PLATEAU, run_dir=tmp_path / "b", valid_set=valid,
                  progress=False, stop_after=1)
    assert partial.attrs["stop_reason"] is None and len(partial) == best + 1
    resumed = make_method(seed=123)
    got = fit(resumed, data, PLATEAU, run_dir=tmp_path / "b", valid_set=valid, progress=False)

    pd.testing.assert_frame_equal(got.drop(columns="seconds"),
                                  expected.drop(columns="seconds"))
    for key in ("stop_reason", "best_epoch", "best_valid_loss", "restored_best"):
        assert got.attrs[key] == expected.attrs[key], key
    for (name, a), (_, b) in zip(uninterrupted.state_dict().items(),
                                 resumed.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"{name} differs after resume")
    a = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")

    def timeless(run):  # wall-clock fields differ between any two runs
        return {**run, "elapsed_s": 0,
                "history": [{k: v for k, v in row.items() if k != "seconds"}
                            for row in run["history"]]}

    assert timeless(a["run"]) == timeless(b["run"])
    assert a["environment"]["torch"] == torch.__version__ and a["environment"]["device"] == "cpu"
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0)
        torch.testing.assert_close(a["best_model"][key], b["best_model"][key], rtol=0, atol=0)
    # A finished run loads its best weights without training.
    loaded = make_method(seed=3)
    again = fit(loaded, data, PLATEAU, run_dir=tmp_path / "b", valid_set=valid, progress=False)
    assert len(again) == len(expected) and again.attrs["stop_reason"] == "patience"
    for x, y in zip(loaded.parameters(), uninterrupted.parameters(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_time_budget_stops_before_an_epoch_that_would_overrun(monkeypatch):
    ticks = iter(range(10**6))
    monkeypatch.setattr(training, "epoch_clock", lambda: float(next(ticks)))
    config = TrainConfig(epochs=20, batch_size=16, lr=1e-2, device="cpu", time_budget_s=10)
    history = fit(make_method(), toy_data(), config, progress=False)
    elapsed, done = history.attrs["elapsed_s"], len(history)
    assert history.attrs["stop_reason"] == "budget" and 1 <= done < config.epochs
    assert elapsed <= config.time_budget_s < elapsed + elapsed / done
    assert "time budget of 10 s" in describe_stop(history)


def test_plateau_settings_are_validated_and_enter_the_resume_check(tmp_path):
    with pytest.raises(ValueError, match="unknown lr_schedule 'linear'"):
        TrainConfig(lr_schedule="linear")
    with pytest.raises(ValueError, match="patience must be a positive"):
        TrainConfig(patience=0)
    with pytest.raises(ValueError, match="min_delta must be >= 0"):
        TrainConfig(min_delta=-1.0)
    with pytest.raises(ValueError, match="warmup_epochs must be between 0 and epochs=3"):
        TrainConfig(epochs=3, warmup_epochs=4)
    with pytest.raises(ValueError, match="min_lr must be between 0 and lr"):
        TrainConfig(lr=1e-3, min_lr=1e-2)
    with pytest.raises(ValueError, match="time_budget_s must be positive"):
        TrainConfig(time_budget_s=0)
    with pytest.raises(ValueError, match="early stopping .* needs a validation set"):
        fit(make_method(), toy_data(), PLATEAU, progress=False)
    fit(make_method(), toy_data(), PLATEAU, run_dir=tmp_path, valid_set=toy_data(32),
        progress=False, stop_after=1)
    with pytest.raises(CheckpointError, match="patience: saved 2 != now 3"):
        fit(make_method(), toy_data(), dataclasses.replace(PLATEAU, patience=3),
            run_dir=tmp_path, valid_set=toy_data(32), progress=False)
    # The cosine schedule depends on the number of epochs: it cannot grow on resume.
    with pytest.raises(CheckpointError, match="epochs: saved 30 != now 40"):
        fit(make_method(), toy_data(), dataclasses.replace(PLATEAU, epochs=40),
            run_dir=tmp_path, valid_set=toy_data(32), progress=False)


# --- checkpoints that cannot run code ---------------------------------------------------------


class RunsCodeWhenUnpickled:
    """An object whose unpickling would create ``marker``: stands for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_with_a_pickled_object_is_refused_without_running_it(tmp_path):
    fit(make_method(), toy_data(), CONFIG, run_dir=tmp_path, progress=False, stop_after=1)
    path = tmp_path / "checkpoint.pt"
    marker = tmp_path / "code-ran"
    state = torch.load(path, weights_only=True)
    torch.save({**state, "payload": RunsCodeWhenUnpickled(marker)}, path)
    with pytest.raises(CheckpointError, match=rf"{path}.*pickled Python objects.*arbitrary "
                                              r"code.*delete .* and train again"):
        fit(make_method(), toy_data(), CONFIG, run_dir=tmp_path, progress=False)
    assert not marker.exists()


def test_old_format_and_inconsistent_checkpoints_get_a_clear_error(tmp_path):
    fit(make_method(), toy_data(), CONFIG, run_dir=tmp_path, progress=False, stop_after=2)
    path = tmp_path / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    # The v1 format: metadata (history, config) inside the .pt, no checkpoint.json.
    torch.save({**state, "format": "geofusion-checkpoint-v1", "history": [{"loss": 1.0}]}, path)
    with pytest.raises(CheckpointError, match="older geofusion.*'geofusion-checkpoint-v1'.*"
                                              f"delete {tmp_path}"):
        fit(make_method(), toy_data(), CONFIG, run_dir=tmp_path, progress=False)
    # Tensors of epoch 3 beside metadata of epoch 2 (a crash between the two writes).
    torch.save({**state, "epoch": 3}, path)
    with pytest.raises(CheckpointError, match="epoch 3 but checkpoint.json epoch 2.*interrupted"):
        load_checkpoint(path)
    torch.save(state, path)
    (tmp_path / "checkpoint.json").unlink()
    with pytest.raises(CheckpointError, match="no readable checkpoint.json"):
        load_checkpoint(path)


def test_every_new_training_setting_enters_the_shared_model_key(tmp_path):
    from geofusion.learning.model_cache import model_dir

    description = {"name": "autoencoder"}
    base = model_dir(tmp_path, description, CONFIG)
    for change in ({"patience": 3}, {"min_delta": 0.1}, {"restore_best": False},
                   {"lr_schedule": "cosine"}, {"warmup_epochs": 1}, {"min_lr": 1e-4},
                   {"time_budget_s": 60.0}, {"limit_batches": 1}):
        assert model_dir(tmp_path, description, dataclasses.replace(CONFIG, **change)) != base


def test_limit_batches_trains_and_validates_on_that_many_batches(monkeypatch):
    """The smoke profile's one-batch epochs: 2 of 6 training steps per epoch, on the schedule
    of 2-step epochs, and a validation pass over 2 of its 6 batches."""
    steps, validation_batches = [], []
    original_step = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        steps.append(self.param_groups[0]["lr"])
        return original_step(self, *args, **kwargs)

    original_loss = NoisyRegression.loss

    def recording_loss(self, batch, generator):
        if not self.training:
            validation_batches.append(len(batch[0]))
        return original_loss(self, batch, generator)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    monkeypatch.setattr(NoisyRegression, "loss", recording_loss)
    config = TrainConfig(epochs=3, batch_size=16, lr=1e-2, device="cpu", lr_schedule="cosine",
                         warmup_epochs=1, limit_batches=2)
    history = fit(make_method(), toy_data(), config, valid_set=toy_data(), progress=False)
    assert steps == [learning_rate(config, s, 2) for s in range(3 * 2)]
    assert validation_batches == [16, 16] * 3
    assert len(history) == 3 and history["valid_loss"].notna().all()
    # Above the number of batches, the limit changes nothing.
    unlimited = fit(make_method(), toy_data(), dataclasses.replace(CONFIG, epochs=2),
                    progress=False)
    limited = fit(make_method(), toy_data(),
                  dataclasses.replace(CONFIG, epochs=2, limit_batches=100), progress=False)
    pd.testing.assert_series_equal(unlimited["loss"], limited["loss"], rtol=1e-6)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_limit_batches_must_be_a_positive_count(bad):
    with pytest.raises(ValueError, match="limit_batches"):
        TrainConfig(limit_batches=bad)

