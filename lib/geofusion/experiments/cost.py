"""What a profile's training will cost, measured before it starts (``pipeline cost``).

For every model a notebook trains ahead of its evaluation (the requests of
:mod:`geofusion.experiments.model_requests`: the autoencoder, the contrastive encoders, the
sparse-view encoder, notebook 09's fusion schemes and notebook 11's variants, each counted once
where notebooks share it), :func:`measure_request` builds the model exactly as requested, runs
``warmup + steps`` optimisation steps on random fields of the profile's grid and batch size on
the device at hand (bfloat16 autocast on CUDA, as training does), and records the seconds per
step, the FLOPs per step (:class:`torch.utils.flop_counter.FlopCounterMode`, the same on every
device) and the peak memory (CUDA: ``max_memory_allocated``; CPU: the process's resident set
size after the steps, an upper bound that includes everything loaded before). The projection
multiplies by the profile's steps per epoch (training days of its period / batch size) and
epochs; validation passes are not counted (one forward pass over a quarter of the training
days' count, a few percent).

Not measured: frozen and joint decoders, LSTMs, the diffusion models and the evaluations
(bootstrap, baselines, probes); on the quick profile they are about half of a notebook's time,
on the full profile the encoders dominate (300 and 100 epochs against 30-50).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any

import numpy as np
import pandas as pd
import psutil
import torch
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from geofusion.data import FieldDataset
from geofusion.data.samplers import TemporalPairDataset
from geofusion.experiments.fusion_study import fusion_runs
from geofusion.experiments.model_requests import ModelRequest, notebook_requests
from geofusion.learning.config import TrainConfig
from geofusion.learning.fusion_methods import build_fusion_method
from geofusion.learning.methods import build_method
from geofusion.learning.training import epoch_generator, move_to, resolve_device
from geofusion.models.fusion_encoders import parse_scheme

__all__ = ["StepCost", "training_days", "cost_jobs", "measure_request", "projection_table"]

GRID = (32, 64)  # WeatherBench 2's 64x32 and the synthetic default
CHANNELS = 5


@dataclasses.dataclass
class StepCost:
    """One model's measured step and its projection over the profile's training."""

    notebook: str
    label: str
    batch_size: int
    epochs: int
    steps_per_epoch: int
    seconds_per_step: float
    flops_per_step: float
    peak_memory_gib: float
    device: str

    @property
    def projected_hours(self) -> float:
        return self.seconds_per_step * self.steps_per_epoch * self.epochs / 3600

    def gpu_hours(self, peak_tflops: float, efficiency: float) -> float:
        """Hours at ``efficiency`` of a ``peak_tflops`` device: a projection, not a measurement."""
        total = self.flops_per_step * self.steps_per_epoch * self.epochs
        return total / (peak_tflops * 1e12 * efficiency) / 3600


def training_days(params: dict[str, Any], train_fraction: float = 0.8) -> int:
    """Training days of the notebook's period (daily means; the profiles split 60/20/20).

    Example:
        >>> training_days({"start": "1959-01-01", "end": "2022-12-31"})
        18701
    """
    days = (pd.Timestamp(params["end"]) - pd.Timestamp(params["start"])).days + 1
    return int(round(days * train_fraction))


def cost_jobs(planned: dict[str, dict[str, Any]]) -> list[tuple[str, ModelRequest, int]]:
    """``(notebook, request, training days)`` for every distinct model of ``planned``
    (notebook -> parameters); a model two notebooks request is counted under the first.
    Notebook 09's fusion schemes are requests of method ``fusion:<kind>`` (build parameters
    of :func:`geofusion.learning.fusion_methods.build_fusion_method`)."""
    jobs, seen = [], set()
    for notebook, p in planned.items():
        days = training_days(p, p.get("train_fraction", 0.8))
        if notebook == "09_fusion":
            if p.get("n_train_days") is not None:
                days = min(days, p["n_train_days"])
            config_keys = {"epochs": p["epochs"], "batch_size": p["batch_size"], "lr": p["lr"],
                           "seed": p["seed"], "device": p["device"]}
            for name, scheme, p_drop, objective in fusion_runs(
                    p["schemes"], p["dropout_scheme"], p["p_mode_dropout"],
                    p["mode_group_scheme"]):
                kind, operator = parse_scheme(scheme)
                params = {"objective": objective, "kind": kind, "fusion": operator,
                          "p_mode_dropout": p_drop, "latent_dim": p["latent_dim"],
                          "width": p["width"], "mode_width": p["mode_width"],
                          "token_dim": p["token_dim"], "proj_dim": p["proj_dim"],
                          "proj_hidden_dim": p["proj_hidden_dim"], "lambd": p["lambd"],
                          "encoder": p.get("encoder", "resnet")}
                jobs.append((notebook, ModelRequest(name, "fusion", TrainConfig(**config_keys),
                                                    params, p["seed"]), days))
            continue
        if notebook not in ("02_autoencoder", "03_barlow_twins", "04_simclr",
                            "05_supervised_contrastive", "06_sparsity", "11_beyond"):
            continue
        for request in notebook_requests(notebook, p):
            key = repr((request.method, sorted(request.build_params.items(), key=str),
                        dataclasses.astuple(request.config), request.temporal_pairs))
            if key not in seen:
                seen.add(key)
                jobs.append((notebook, request, days))
    return jobs


def _build(request: ModelRequest) -> torch.nn.Module:
    torch.manual_seed(request.seed)
    if request.method == "fusion":
        params = dict(request.build_params)
        objective = params.pop("objective")
        return build_fusion_method(objective, in_channels=CHANNELS, grid=GRID, **params,
                                   **_stand_in_data_parameters(params))
    return build_method(request.method, in_channels=CHANNELS, grid=GRID, **request.build_params,
                        **_stand_in_data_parameters(request.build_params))


def _stand_in_data_parameters(build_params: dict[str, Any]) -> dict[str, Any]:
    """What :func:`geofusion.learning.model_cache.data_dependent_parameters` would fit on the
    training days, with the same shapes but no data (a cost measurement needs no real basis):
    an orthonormal random EOF basis of ``latent_dim`` components and the grid's latitudes."""
    extra: dict[str, Any] = {}
    lat = np.linspace(-90 + 90 / GRID[0], 90 - 90 / GRID[0], GRID[0])
    if build_params.get("encoder") == "eof_residual":
        k = int(build_params.get("latent_dim", 1000))
        basis, _ = torch.linalg.qr(torch.randn(CHANNELS * GRID[0] * GRID[1], k,
                                               generator=torch.Generator().manual_seed(0)))
        extra["eof_basis"] = {"components": basis.T.contiguous(),
                              "sqrt_weights": torch.ones(CHANNELS, *GRID)}
    if build_params.get("reconstruction_loss") == "lat_weighted":
        extra["latitudes"] = lat.tolist()
    return extra


def _peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return psutil.Process().memory_info().rss / 2**30


def measure_request(notebook: str, request: ModelRequest, days: int, device: str = "auto",
                    steps: int = 2, warmup: int = 1) -> StepCost:
    """Time ``steps`` optimisation steps (after ``warmup``) of ``request``'s model at its batch
    size on random standardised fields; count one step's FLOPs."""
    dev = resolve_device(device)
    batch = request.config.batch_size
    n = batch * (steps + warmup + 1)
    rng = np.random.default_rng(0)
    fields = rng.standard_normal((n, CHANNELS, *GRID)).astype(np.float32)
    seasons = rng.integers(0, 4, n)
    if request.temporal_pairs is not None:
        dataset = TemporalPairDataset(fields, seasons, seed=0, **request.temporal_pairs)
    else:
        dataset = FieldDataset(fields, seasons)
    loader = iter(DataLoader(dataset, batch_size=batch, shuffle=False, drop_last=True))
    method = _build(request).to(dev).train()
    optimizer = torch.optim.Adam(method.parameters(), lr=request.config.lr)
    generator = epoch_generator(0, 0, stream=1)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    def step() -> None:
        data = move_to(next(loader), dev)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16,
                            enabled=dev.type == "cuda" and request.config.amp):
            loss, _ = method.loss(data, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    counter = FlopCounterMode(display=False)
    with counter:
        step()  # the warm-up step is also the counted one
    for _ in range(max(0, warmup - 1)):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    tic = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = (time.perf_counter() - tic) / steps
    drop_last = request.config.drop_last
    steps_per_epoch = days // batch if drop_last else math.ceil(days / batch)
    return StepCost(notebook, request.label, batch, request.config.epochs, steps_per_epoch,
                    seconds, float(counter.get_total_flops()), _peak_memory_gib(dev),
                    str(dev))


def projection_table(costs: list[StepCost], peak_tflops: float, efficiency: float
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per model and per notebook (with a total): measured seconds per step, projected hours
    on this device, peak memory, and the GPU projection from the FLOPs."""
    gpu = f"GPU projection h ({peak_tflops:g} TFLOP/s x {efficiency:g})"
    rows = pd.DataFrame([{
        "notebook": c.notebook, "model": c.label, "batch": c.batch_size, "epochs": c.epochs,
        "steps/epoch": c.steps_per_epoch, "s/step (measured)": _sig(c.seconds_per_step),
        "TFLOP/step": _sig(c.flops_per_step / 1e12),
        f"h on {c.device} (projected)": _sig(c.projected_hours),
        gpu: _sig(c.gpu_hours(peak_tflops, efficiency)),
        "peak memory GiB": _sig(c.peak_memory_gib)} for c in costs])
    hours = [col for col in rows.columns if col.startswith("h on ")]
    per_notebook = rows.groupby("notebook")[[*hours, gpu]].sum()
    per_notebook["peak memory GiB"] = rows.groupby("notebook")["peak memory GiB"].max()
    per_notebook.loc["total"] = [*per_notebook[[*hours, gpu]].sum(),
                                 per_notebook["peak memory GiB"].max()]
    return rows, per_notebook.map(_sig)


def _sig(value: float) -> float:
    return float(f"{value:.3g}")


def markdown_table(frame: pd.DataFrame, index: bool = True) -> str:
    """``frame`` as a markdown table (pandas' ``to_markdown`` needs tabulate).

    Example:
        >>> print(markdown_table(pd.DataFrame({"a": [1]}, index=["x"])))
        |  | a |
        | --- | --- |
        | x | 1 |
    """
    table = frame.reset_index() if index else frame
    if index:
        table = table.rename(columns={table.columns[0]: ""})
    lines = ["| " + " | ".join(str(c) for c in table.columns) + " |",
             "| " + " | ".join("---" for _ in table.columns) + " |"]
    lines += ["| " + " | ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in row) + " |"
              for row in table.itertuples(index=False)]
    return "\n".join(lines)


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else the platform's processor string."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    import platform
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
