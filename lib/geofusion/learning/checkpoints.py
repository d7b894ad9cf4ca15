"""Checkpoint files: what a training run writes after every epoch so that it can resume.

A checkpoint is two files written atomically, tensors first:

- ``checkpoint.pt``: tensors only (model, optimiser state, best weights), loaded with
  ``torch.load(weights_only=True)`` so a checkpoint from an untrusted source cannot run code;
- ``checkpoint.json`` (:func:`metadata_path`): everything else (method, config, epoch, history,
  early-stopping state, why the run stopped, provenance). Both hold the epoch, so a crash
  between the two writes is detected instead of pairing weights with another history.

:func:`load_checkpoint` refuses corrupt, truncated, pickled, old-format or mismatched files with
a :class:`CheckpointError` that names the file and what to do.
"""

from __future__ import annotations

import io
import json
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from geofusion.io import atomic_write_bytes, atomic_write_text

__all__ = [
    "CHECKPOINT_FORMAT", "CHECKPOINT_NAME", "METADATA_NAME", "CheckpointError", "metadata_path",
    "save_checkpoint", "load_checkpoint",
]


CHECKPOINT_FORMAT = "geofusion-checkpoint-v2"


CHECKPOINT_NAME = "checkpoint.pt"


METADATA_NAME = "checkpoint.json"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used: corrupt, unsafe, old, another method or another config."""


def metadata_path(path: str | os.PathLike) -> Path:
    """``checkpoint.json`` beside ``checkpoint.pt``: the checkpoint's non-tensor metadata."""
    return Path(path).with_name(METADATA_NAME)


def save_checkpoint(path: str | os.PathLike, tensors: Mapping[str, Any],
                    metadata: Mapping[str, Any]) -> None:
    """Write a checkpoint: ``tensors`` to ``path``, ``metadata`` as JSON beside it, atomically.

    Args:
        path: the ``.pt`` file.
        tensors: state dicts (model, optimiser, ...): tensors and plain numbers only, so the
            file loads with ``torch.load(weights_only=True)``.
        metadata: JSON-serialisable; must hold ``epoch`` (an int), which is written into
            both files so that :func:`load_checkpoint` can tell they belong together.
    """
    epoch = int(metadata["epoch"])
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "epoch": epoch, **tensors}, buffer)
    text = json.dumps({"format": CHECKPOINT_FORMAT, **metadata}, indent=1)
    # The tensors first: a crash between the two writes leaves a newer .pt than .json, which
    # load_checkpoint detects by the epoch (never silently pairs weights with another history).
    atomic_write_bytes(path, buffer.getvalue())
    atomic_write_text(metadata_path(path), text)


def _delete_hint(path: Path) -> str:
    return f"delete {path.parent} (or point run_dir at a fresh directory) and train again"


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`: its metadata and tensors merged.

    The ``.pt`` file is read with ``torch.load(weights_only=True)``: tensors and plain Python
    containers only, so a file that holds any other pickled object is refused without
    running it.

    Raises:
        CheckpointError: the file is corrupt or truncated, holds pickled objects, was written
            by an older geofusion (format v1), or its ``checkpoint.json`` is missing or belongs
            to another epoch; the message names the file and what to do.
    """
    path = Path(path)
    try:
        tensors = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise CheckpointError(
            f"{path} holds pickled Python objects other than tensors and numbers, which "
            f"geofusion refuses to load: unpickling can run arbitrary code "
            f"(torch.load(weights_only=True) stopped at: {first_line}). If the file comes "
            f"from an older geofusion, {_delete_hint(path)}; if its origin is unknown, do "
            f"not load it at all") from error
    except Exception as error:  # torch raises several types for truncated/garbled files
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(error).__name__}: {error}); "
            f"delete it (or the run directory) to train from scratch"
        ) from error
    if not isinstance(tensors, dict) or not str(tensors.get("format", "")).startswith(
            "geofusion-checkpoint"):
        raise CheckpointError(
            f"{path} is not a geofusion checkpoint (expected format {CHECKPOINT_FORMAT!r}); "
            "point run_dir at a fresh directory"
        )
    if tensors["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} was written by an older geofusion (format {tensors['format']!r}, now "
            f"{CHECKPOINT_FORMAT!r}: metadata moved to {METADATA_NAME} so checkpoints load "
            f"without unpickling); {_delete_hint(path)}")
    meta_path = metadata_path(path)
    try:
        metadata = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(
            f"{path} has no readable {meta_path.name} beside it ({type(error).__name__}: "
            f"{error}); the run was interrupted while saving or the file was removed: "
            f"{_delete_hint(path)}") from error
    if metadata.get("epoch") != tensors["epoch"]:
        raise CheckpointError(
            f"{path} holds epoch {tensors['epoch']} but {meta_path.name} epoch "
            f"{metadata.get('epoch')}: the run was interrupted between writing the two; "
            f"{_delete_hint(path)}")
    return {**metadata, **tensors}
