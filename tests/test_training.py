"""The shared training loop: learning, exact resumption, checkpoint errors, atomic files."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from geofusion.io import atomic_path
from geofusion.training import CheckpointError, TrainConfig, fit, load_checkpoint


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
