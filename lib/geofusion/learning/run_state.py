"""A training run's state between epochs: early stopping, the best weights, and saving / resuming
it through a checkpoint (:mod:`geofusion.learning.checkpoints`).

:class:`RunState` is where a run stands after its completed epochs (history, best validation
loss and epoch, epochs without improvement, time spent, why it stopped). :func:`resume_run`
loads a run directory's checkpoint into a method and its optimiser after checking that it was
written by the same method, settings and architecture (:func:`check_compatible`);
:func:`save_run` writes the checkpoint and ``metrics.csv``. Both the single-process loop
(:func:`geofusion.learning.training.fit`) and the data-parallel one
(:func:`geofusion.learning.distributed.fit_distributed`) use these, so either can resume the
other's runs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from geofusion.io import atomic_write_text
from geofusion.learning.checkpoints import (
    CHECKPOINT_NAME,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from geofusion.learning.config import RESULT_FIELDS, TrainConfig
from geofusion.reproducibility import describe

__all__ = ["RunState"]


def check_compatible(state: dict, method: nn.Module, config: TrainConfig, path: Path) -> None:
    name = type(method).__name__
    if state["method"] != name:
        raise CheckpointError(
            f"{path} was written by method {state['method']!r}, not {name!r}; "
            "use another run_dir for this method"
        )
    saved = state["config"]
    fields = RESULT_FIELDS + (("epochs",) if config.lr_schedule == "cosine" else ())
    changed = {k: (saved.get(k), getattr(config, k)) for k in fields
               if saved.get(k) != getattr(config, k)}
    if changed:
        detail = ", ".join(f"{k}: saved {a!r} != now {b!r}" for k, (a, b) in changed.items())
        raise CheckpointError(
            f"{path} belongs to a run with other settings ({detail}); "
            "use another run_dir or the same settings to resume"
        )
    model_state = method.state_dict()
    mismatched = [
        key for key, value in state["model"].items()
        if key not in model_state or model_state[key].shape != value.shape
    ] + [key for key in model_state if key not in state["model"]]
    if mismatched:
        raise CheckpointError(
            f"{path} holds a model of another architecture (first differing parameters: "
            f"{mismatched[:3]}); use another run_dir or rebuild the model with the same sizes"
        )


@dataclass
class RunState:
    """Where a run stands after its completed epochs: everything resuming needs besides the
    weights and the optimiser. Saved in ``checkpoint.json``.

    Attributes:
        epoch: completed epochs.
        history: one dict per completed epoch.
        best_valid_loss: the lowest validation loss so far (None before the first epoch).
        best_epoch: the (1-based) epoch that reached it (0 before the first epoch).
        bad_epochs: epochs in a row without an improvement of more than ``min_delta``.
        elapsed_s: wall-clock seconds spent in training and validation so far.
        stop_reason: None while the run may continue, else one of :data:`STOP_REASONS`.
    """

    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_valid_loss: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    elapsed_s: float = 0.0
    stop_reason: str | None = None

    def record(self, row: dict[str, float], seconds: float, config: TrainConfig) -> bool:
        """Append a finished epoch; update the early-stopping state; True if it is the best."""
        self.history.append(row)
        self.epoch += 1
        self.elapsed_s += seconds
        valid = row.get("valid_loss")
        if valid is None or not math.isfinite(valid):
            self.bad_epochs += 1
            return False
        if self.best_valid_loss is None or valid < self.best_valid_loss - config.min_delta:
            self.best_valid_loss, self.best_epoch, self.bad_epochs = valid, self.epoch, 0
            return True
        self.bad_epochs += 1
        return False

    def should_stop(self, config: TrainConfig) -> str | None:
        """Why no further epoch should start (one of :data:`STOP_REASONS`), or None."""
        if config.patience is not None and self.bad_epochs >= config.patience:
            return "patience"
        if self.epoch >= config.epochs:
            return "epochs"
        if config.time_budget_s is not None and self.epoch > 0:
            per_epoch = self.elapsed_s / self.epoch
            if self.elapsed_s + per_epoch > config.time_budget_s:
                return "budget"
        return None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def uses_early_stopping(config: TrainConfig) -> bool:
    return config.patience is not None


def clone_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def resume_run(method: nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig,
            run_dir: str | os.PathLike | None, device: torch.device
            ) -> tuple[RunState, dict[str, torch.Tensor] | None]:
    """Load the run's checkpoint into ``method`` and ``optimizer``; return its state and the
    best weights (None without early stopping). A fresh state when there is no checkpoint."""
    best = clone_state(method) if uses_early_stopping(config) and config.restore_best else None
    if run_dir is None or not (Path(run_dir) / CHECKPOINT_NAME).exists():
        return RunState(), best
    path = Path(run_dir) / CHECKPOINT_NAME
    state = load_checkpoint(path, map_location=device)
    check_compatible(state, method, config, path)
    method.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if best is not None:
        best = state["best_model"]
    run = RunState(**{f.name: state["run"][f.name] for f in dataclasses.fields(RunState)})
    return run, best


def save_run(run_dir: str | os.PathLike, method: nn.Module, optimizer: torch.optim.Optimizer,
          config: TrainConfig, run: RunState, best: dict[str, torch.Tensor] | None) -> None:
    tensors: dict[str, Any] = {"model": method.state_dict(), "optimizer": optimizer.state_dict()}
    if best is not None:
        tensors["best_model"] = best
    device = next(iter(tensors["model"].values())).device if tensors["model"] else None
    save_checkpoint(Path(run_dir) / CHECKPOINT_NAME, tensors, {
        "method": type(method).__name__, "config": dataclasses.asdict(config),
        "epoch": run.epoch, "run": run.to_json(),
        # Provenance: versions and determinism settings in force when the epoch was trained.
        "environment": describe(device)})
    atomic_write_text(Path(run_dir) / "metrics.csv",
                      pd.DataFrame(run.history).to_csv(index=False))


def write_config(run_dir: str | os.PathLike, config: TrainConfig) -> None:
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(run_dir) / "config.json",
                      json.dumps(dataclasses.asdict(config), indent=2))


def history_frame(run: RunState, config: TrainConfig) -> pd.DataFrame:
    frame = pd.DataFrame(run.history)
    frame.attrs.update(stop_reason=run.stop_reason, epochs=config.epochs,
                       patience=config.patience, min_delta=config.min_delta,
                       best_epoch=run.best_epoch, best_valid_loss=run.best_valid_loss,
                       restored_best=bool(uses_early_stopping(config) and config.restore_best
                                          and run.stop_reason is not None
                                          and run.best_epoch > 0),
                       elapsed_s=run.elapsed_s, time_budget_s=config.time_budget_s)
    return frame
