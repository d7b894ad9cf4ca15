"""Reproducibility settings: deterministic flags, seeding of every source, worker seeds."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from geofusion import reproducibility


@pytest.fixture(autouse=True)
def restore_global_settings(monkeypatch):
    """configure() changes process-wide state; give it back so other tests run as before."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    benchmark = torch.backends.cudnn.benchmark
    cudnn_deterministic = torch.backends.cudnn.deterministic
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    yield
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.benchmark = benchmark
    torch.backends.cudnn.deterministic = cudnn_deterministic


def draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(()))  # noqa: NPY002


def test_configure_sets_the_determinism_flags_and_describe_reports_them(monkeypatch):
    environment = reproducibility.configure(seed=0, device="cpu")
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.benchmark is False
    assert torch.backends.cudnn.deterministic is True
    assert reproducibility.os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert environment == reproducibility.describe("cpu")
    assert environment["deterministic_algorithms"] is True
    assert environment["cudnn_benchmark"] is False
    assert environment["cublas_workspace_config"] == ":4096:8"
    assert environment["torch"] == torch.__version__
    assert environment["cuda"] == torch.version.cuda
    assert environment["device"] == "cpu"
    assert "bfloat16" in environment["autocast"]
    json.dumps(environment)  # goes into results.json as is

    relaxed = reproducibility.configure(seed=0, deterministic=False, device="cpu")
    assert relaxed["deterministic_algorithms"] is False
    assert relaxed["cudnn_benchmark"] is True


def test_every_random_source_is_seeded():
    reproducibility.configure(seed=3, device="cpu")
    first = draws()
    reproducibility.configure(seed=3, device="cpu")
    assert draws() == first
    reproducibility.configure(seed=4, device="cpu")
    other = draws()
    assert all(a != b for a, b in zip(first, other, strict=True))


def test_cuda_started_with_another_cublas_setting_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":0:0")
    with pytest.raises(RuntimeError, match="CUDA was initialised before.*CUBLAS_WORKSPACE_CONFIG"
                                           "=':0:0'.*call configure\\(\\) first"):
        reproducibility.configure(seed=0, device="cpu")
    # An accepted value set before CUDA started is fine.
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    assert reproducibility.configure(seed=0, device="cpu")["cublas_workspace_config"] == ":16:8"


@pytest.mark.parametrize("seed", [-1, 1.5, True, "0"])
def test_bad_seed_is_rejected(seed):
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        reproducibility.configure(seed=seed, device="cpu")


class SeedAndDraws(Dataset):
    """Each item: the worker's torch seed and a draw from NumPy's and Python's global generators."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> tuple[int, float, float]:
        return torch.initial_seed(), float(np.random.rand()), random.random()  # noqa: NPY002


def worker_draws(seed: int) -> list[tuple[int, float, float]]:
    loader = DataLoader(SeedAndDraws(), batch_size=None, num_workers=2,
                        generator=reproducibility.loader_generator(seed),
                        worker_init_fn=reproducibility.seed_worker)
    return [(int(s), float(n), float(r)) for s, n, r in loader]


def test_loader_workers_are_seeded_from_their_torch_seed_reproducibly():
    items = worker_draws(seed=1)
    # Items alternate between the workers: item 0 is worker 0's first draw, item 1 worker 1's.
    for torch_seed, numpy_draw, python_draw in items[:2]:
        assert numpy_draw == np.random.RandomState(torch_seed % 2**32).rand()
        assert python_draw == random.Random(torch_seed % 2**32).random()
    assert items[0][0] != items[1][0]
    assert worker_draws(seed=1) == items
    assert worker_draws(seed=2) != items


def test_unknown_device_is_rejected():
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        reproducibility.configure(seed=0, device="gpu")


@pytest.mark.parametrize("name", ["autoencoder", "barlow_twins"])
def test_methods_train_under_deterministic_algorithms_and_repeat_bitwise(name):
    """No op of the methods lacks a deterministic kernel (it would raise), and two runs
    configured alike give identical weights, without any explicit generator in the test."""
    from geofusion.learning.config import TrainConfig
    from geofusion.learning.methods import build_method
    from geofusion.learning.training import fit

    views = {} if name == "autoencoder" else {"augmentation": "native"}
    data = torch.utils.data.TensorDataset(torch.randn(16, 5, 32, 64),
                                          torch.zeros(16, dtype=torch.long))
    weights = []
    for _ in range(2):
        reproducibility.configure(seed=5, device="cpu")
        method = build_method(name, width=4, latent_dim=8, proj_dim=4, proj_hidden_dim=8,
                              **views)
        fit(method, data, TrainConfig(epochs=1, batch_size=8, device="cpu"), progress=False)
        weights.append(method.state_dict())
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), key
