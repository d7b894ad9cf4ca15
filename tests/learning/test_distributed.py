"""Two CPU processes (gloo): global-batch losses equal the single-process ones, with gradients.

Each process holds half of a batch. With ``gather_distributed=True`` every loss must equal the
single-process loss on the concatenated batch, and the gradient a process gets for its half
must be ``world_size`` times the single-process gradient of that half (DDP then divides by
``world_size``); through DDP, parameter gradients equal the single-process ones exactly.
All checks run in one spawn of two processes to keep the file fast.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from geofusion.learning import collectives, distributed
from geofusion.learning.checkpoints import load_checkpoint
from geofusion.learning.config import TrainConfig
from geofusion.learning.fusion_methods import build_fusion_method
from geofusion.learning.losses import barlow_twins_loss, nt_xent_loss, supcon_loss
from geofusion.learning.training import fit, learning_rate

WORLD = 2
N, D = 8, 6  # global batch, embedding size


def _inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "z1": torch.randn(N, D, generator=g), "z2": torch.randn(N, D, generator=g),
        "features": torch.randn(N, 2, D, generator=g),
        "labels": torch.tensor([0, 1, 2, 0, 1, 3, 3, 2]),
        "x": torch.randn(N, 10, generator=g), "y": torch.randn(N, 10, generator=g),
    }


def _losses(z1, z2, features, labels, gather: bool) -> dict[str, torch.Tensor]:
    return {
        "nt_xent": nt_xent_loss(z1, z2, temperature=0.5, gather_distributed=gather),
        "barlow_twins": barlow_twins_loss(z1, z2, lambd=0.01, gather_distributed=gather),
        "supcon": supcon_loss(features, labels, temperature=0.1, gather_distributed=gather),
    }


def _linear() -> nn.Linear:
    torch.manual_seed(1)
    return nn.Linear(10, D)


def _tiny_method() -> nn.Module:
    torch.manual_seed(0)
    return build_fusion_method("mode_group", kind="late", fusion="concat", latent_dim=8,
                               width=4, token_dim=8, proj_dim=8, proj_hidden_dim=16)


def _dataset() -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(2)
    return torch.utils.data.TensorDataset(torch.randn(16, 5, 16, 32, generator=g),
                                          torch.zeros(16, dtype=torch.long))


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD)
    try:
        results: dict[str, object] = {"rank": collectives.rank(),
                                      "world": collectives.world_size(),
                                      "is_distributed": collectives.is_distributed()}
        data = _inputs()
        part = slice(rank * N // WORLD, (rank + 1) * N // WORLD)
        for name in ("nt_xent", "barlow_twins", "supcon"):
            z1 = data["z1"][part].clone().requires_grad_()
            z2 = data["z2"][part].clone().requires_grad_()
            features = data["features"][part].clone().requires_grad_()
            loss = _losses(z1, z2, features, data["labels"][part], gather=True)[name]
            loss.backward()
            grads = (features.grad,) if name == "supcon" else (z1.grad, z2.grad)
            results[name] = (loss.detach(), *grads)

        # Gathering keeps each process's rows at [rank * b, (rank + 1) * b).
        results["gathered"] = collectives.gather_with_grad(torch.full((2,), float(rank)))
        results["mean"] = collectives.all_reduce_mean(torch.tensor(float(rank)))
        try:
            collectives.gather_with_grad(torch.zeros(rank + 1))
        except ValueError as error:
            results["unequal"] = str(error)

        # DDP over a linear "encoder" + Barlow Twins on gathered statistics.
        model = nn.parallel.DistributedDataParallel(_linear())
        loss = barlow_twins_loss(model(data["x"][part]), model(data["y"][part]), lambd=0.01,
                                 gather_distributed=True)
        loss.backward()
        results["ddp_grad"] = model.module.weight.grad.clone()

        # fit_distributed: two epochs of a tiny late-fusion mode-group method.
        method = _tiny_method()
        config = TrainConfig(epochs=2, batch_size=8, seed=0, device="cpu")
        history = distributed.fit_distributed(method, _dataset(), config,
                                              run_dir=Path(out_dir) / "run", progress=False,
                                              find_unused_parameters=True)
        results["history"] = history
        results["weights"] = {k: v.clone() for k, v in method.state_dict().items()}
        results["parameters"] = [k for k, _ in method.named_parameters()]
        results["gather_flag"] = method.gather_distributed

        # Early stopping with a schedule, interrupted after epoch 1 and resumed, against an
        # uninterrupted run. min_delta is so large that epoch 2 cannot improve: the run stops
        # for patience after epoch 2 and restores epoch 1's weights.
        plateau = TrainConfig(epochs=4, batch_size=8, seed=0, device="cpu", patience=1,
                              min_delta=1e6, lr_schedule="cosine", warmup_epochs=1)
        interrupted = _tiny_method()
        distributed.fit_distributed(interrupted, _dataset(), plateau, valid_set=_dataset(),
                                    run_dir=Path(out_dir) / "plateau_a", progress=False,
                                    find_unused_parameters=True, stop_after=1)
        results["plateau_epoch1"] = {k: v.clone() for k, v in interrupted.state_dict().items()}
        results["plateau_resumed"] = distributed.fit_distributed(
            interrupted, _dataset(), plateau, valid_set=_dataset(),
            run_dir=Path(out_dir) / "plateau_a", progress=False, find_unused_parameters=True)
        results["plateau_resumed_weights"] = interrupted.state_dict()
        straight = _tiny_method()
        results["plateau"] = distributed.fit_distributed(
            straight, _dataset(), plateau, valid_set=_dataset(),
            run_dir=Path(out_dir) / "plateau_b", progress=False, find_unused_parameters=True)
        results["plateau_weights"] = straight.state_dict()
        # One global batch per epoch (the smoke profile's limit_batches), with a warm-up whose
        # steps count the limited epoch.
        results["limited"] = distributed.fit_distributed(
            _tiny_method(), _dataset(), LIMITED, valid_set=_dataset(), progress=False,
            find_unused_parameters=True)
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp")
    env = {"OMP_NUM_THREADS": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        mp.spawn(_worker, args=(str(out / "init"), str(out)), nprocs=WORLD, join=True)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    results = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    results[0]["run_dir"] = out / "run"
    return results


def _reference(name: str) -> tuple[torch.Tensor, ...]:
    data = _inputs()
    z1, z2 = data["z1"].clone().requires_grad_(), data["z2"].clone().requires_grad_()
    features = data["features"].clone().requires_grad_()
    loss = _losses(z1, z2, features, data["labels"], gather=False)[name]
    loss.backward()
    grads = (features.grad,) if name == "supcon" else (z1.grad, z2.grad)
    return (loss.detach(), *grads)


@pytest.mark.parametrize("name", ["nt_xent", "barlow_twins", "supcon"])
def test_distributed_loss_and_input_gradients_equal_the_single_process_ones(ranks, name):
    loss, *grads = _reference(name)
    for rank, result in enumerate(ranks):
        assert result["world"] == WORLD and result["is_distributed"]
        got_loss, *got_grads = result[name]
        torch.testing.assert_close(got_loss, loss, rtol=1e-5, atol=1e-6)
        part = slice(rank * N // WORLD, (rank + 1) * N // WORLD)
        for got, want in zip(got_grads, grads, strict=True):
            torch.testing.assert_close(got / WORLD, want[part], rtol=1e-4, atol=1e-6)


def test_ddp_parameter_gradients_equal_the_single_process_gradient(ranks):
    data = _inputs()
    model = _linear()
    barlow_twins_loss(model(data["x"]), model(data["y"]), lambd=0.01).backward()
    for result in ranks:
        torch.testing.assert_close(result["ddp_grad"], model.weight.grad, rtol=1e-4, atol=1e-6)


def test_collectives_keep_rank_order_and_check_sizes(ranks):
    for result in ranks:
        assert result["gathered"].tolist() == [0.0, 0.0, 1.0, 1.0]
        assert float(result["mean"]) == pytest.approx(0.5)
        assert "different sizes" in result["unequal"]


def test_fit_distributed_trains_one_model_and_rank0_writes_a_resumable_checkpoint(ranks):
    first, second = ranks
    assert first["gather_flag"] is True
    # DDP keeps parameters identical; batch-norm running statistics are each process's own
    # (rank 0's are broadcast at every forward and saved in the checkpoint).
    for key in first["parameters"]:
        torch.testing.assert_close(first["weights"][key], second["weights"][key], msg=key)
    pd.testing.assert_frame_equal(first["history"].drop(columns="seconds"),
                                  second["history"].drop(columns="seconds"))
    assert len(first["history"]) == 2 and first["history"]["loss"].notna().all()
    run_dir = first["run_dir"]
    state = load_checkpoint(run_dir / "checkpoint.pt")
    assert state["epoch"] == 2
    # The single-process loop resumes it: all epochs done, so it just loads the weights.
    method = _tiny_method()
    history = fit(method, _dataset(), TrainConfig(epochs=2, batch_size=8, seed=0, device="cpu"),
                  run_dir=run_dir, progress=False)
    assert len(history) == 2
    for key, value in method.state_dict().items():
        torch.testing.assert_close(value, first["weights"][key], msg=key)


def test_fit_distributed_early_stopping_and_schedule_resume_exactly(ranks):
    for result in ranks:
        history = result["plateau"]
        assert history.attrs["stop_reason"] == "patience" and len(history) == 2
        assert history.attrs["best_epoch"] == 1 and history.attrs["restored_best"]
        config = TrainConfig(epochs=4, batch_size=8, lr_schedule="cosine", warmup_epochs=1)
        steps = 16 // 8  # global batches per epoch
        assert list(history["lr"]) == [learning_rate(config, e * steps, steps) for e in (0, 1)]
        pd.testing.assert_frame_equal(result["plateau_resumed"].drop(columns="seconds"),
                                      history.drop(columns="seconds"))
        # Batch-norm running statistics are each process's own; a resumed process starts from
        # rank 0's (the checkpoint), so beyond rank 0 only the parameters must agree.
        keys = (result["plateau_weights"] if result["rank"] == 0 else result["parameters"])
        for key in keys:
            value = result["plateau_weights"][key]
            torch.testing.assert_close(result["plateau_resumed_weights"][key], value, rtol=0,
                                       atol=0, msg=key)
            # The best epoch's weights were restored.
            torch.testing.assert_close(result["plateau_epoch1"][key], value, rtol=0, atol=0,
                                       msg=key)


LIMITED = TrainConfig(epochs=2, batch_size=4, seed=0, device="cpu", lr_schedule="cosine",
                      warmup_epochs=1, limit_batches=1)


def test_fit_distributed_limit_batches_runs_one_global_batch_per_epoch(ranks):
    for result in ranks:
        history = result["limited"]
        assert len(history) == 2 and history["valid_loss"].notna().all()
        # A warm-up of one step: the full rate at once (without the limit: 16 / 4 = 4 steps).
        assert list(history["lr"]) == [learning_rate(LIMITED, e, 1) for e in (0, 1)]
        assert history["lr"].iloc[0] != learning_rate(LIMITED, 0, 4)


def test_single_process_helpers_are_no_ops():
    assert not collectives.is_distributed()
    assert collectives.rank() == 0 and collectives.world_size() == 1
    x = torch.randn(3, 2, requires_grad=True)
    assert collectives.gather_with_grad(x) is x
    assert collectives.all_reduce_mean(x) is x
    assert collectives.init_from_env() is False  # no torchrun environment here
    sampler = collectives.distributed_sampler(range(10), seed=0, epoch=3)
    assert sorted(sampler) == list(range(10))
    other_epoch = list(collectives.distributed_sampler(range(10), seed=0, epoch=4))
    assert list(sampler) != other_epoch  # reshuffled every epoch
