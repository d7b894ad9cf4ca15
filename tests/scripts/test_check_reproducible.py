"""scripts/check_reproducible.py: notebook 03 run twice on CPU reproduces itself bitwise, and the
comparison catches a changed result or weight while ignoring wall-clock fields."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from geofusion.learning.checkpoints import load_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[2]


def load_script():
    spec = importlib.util.spec_from_file_location("check_reproducible",
                                                  REPO / "scripts" / "check_reproducible.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.notebook
def test_notebook_03_runs_twice_identically_and_changes_are_caught(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    script = load_script()
    assert script.notebook_name("03") == "03_barlow_twins"
    differences, counts = script.check("03_barlow_twins", "cpu", keep=tmp_path)
    assert differences == []
    assert counts["results"] >= 1 and counts["checkpoints"] >= 1 and counts["tensors"] > 100
    first, second = tmp_path / "a" / "runs", tmp_path / "b" / "runs"
    (checkpoint,) = second.rglob("checkpoint.pt")
    state = load_checkpoint(checkpoint)
    metadata = {k: v for k, v in state.items()
                if k not in ("format", "model", "optimizer", "best_model")}
    # With early stopping (the quick profile's patience) the checkpoint also holds the best
    # epoch's weights; they are re-saved unchanged.
    best = {"best_model": state["best_model"]} if "best_model" in state else {}

    # Wall-clock fields are not results: changing them changes nothing.
    metadata["run"]["elapsed_s"] += 100.0
    metadata["run"]["history"][0]["seconds"] += 100.0
    save_checkpoint(checkpoint, {"model": state["model"], "optimizer": state["optimizer"], **best},
                    metadata)
    assert script.compare_runs(first, second)[0] == []

    # One weight nudged by one ulp is caught.
    name, weight = next((k, v) for k, v in state["model"].items() if v.is_floating_point())
    nudged = {**state["model"], name: torch.nextafter(weight, weight + 1)}
    save_checkpoint(checkpoint, {"model": nudged, "optimizer": state["optimizer"], **best},
                    metadata)
    assert script.compare_runs(first, second)[0] == [
        f"{checkpoint.relative_to(second)}.model.{name}: tensors differ"]

    # A changed figure in the results is caught.
    save_checkpoint(checkpoint, {"model": state["model"], "optimizer": state["optimizer"], **best},
                    metadata)
    results = second / "results" / "03_barlow_twins.json"
    saved = json.loads(results.read_text())
    saved["positive_cosine"] += 1e-12
    results.write_text(json.dumps(saved))
    (difference,) = script.compare_runs(first, second)[0]
    assert difference.startswith("results/03_barlow_twins.json.positive_cosine: ")


def test_auto_device_takes_cuda_whenever_it_is_available(monkeypatch):
    script = load_script()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert script.default_device() == "cuda" and script.default_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert script.default_device() == "cpu"


@pytest.mark.notebook
@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA form needs a GPU")
def test_notebook_03_is_reproducible_on_cuda_in_bfloat16(tmp_path):
    script = load_script()
    differences, counts = script.check("03_barlow_twins", "cuda", keep=tmp_path)
    assert differences == [] and counts["checkpoints"] >= 1 and counts["tensors"] > 100
