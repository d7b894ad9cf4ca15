"""`pipeline pretrain`: models trained data-parallel under torchrun land where the notebooks
look, so the notebooks load them instead of training (issue 25)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from geofusion.reporting import cli
from geofusion.reporting.pretrain import pretrained_notebooks, torchrun_command

REPO = Path(__file__).resolve().parents[2]
TINY = dict(start="2000-01-01", end="2001-06-30", epochs=1, batch_size=16, width=4,
            latent_dim=16, n_embed=12)


def test_pretrain_selects_the_notebooks_with_models_of_their_own():
    assert pretrained_notebooks(["01", "02", "07", "08", "10"]) == ["02_autoencoder"]
    assert pretrained_notebooks() == ["02_autoencoder", "03_barlow_twins", "04_simclr",
                                      "05_supervised_contrastive", "06_sparsity", "09_fusion",
                                      "11_beyond"]


def test_pretrain_dry_run_prints_the_torchrun_command(capsys):
    assert cli.main(["pretrain", "03", "--nproc", "4", "--profile", "full", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "--nproc_per_node=4" in out and "geofusion.reporting.pretrain" in out
    assert "03_barlow_twins" in out
    assert cli.main(["pretrain", "03", "--set", "epochz=1", "--dry-run"]) == 2


@pytest.mark.notebook
def test_notebook_loads_the_model_two_gloo_processes_trained(run_notebook, tmp_path):
    params = {**TINY, "run_dir": str(tmp_path / "runs"), "cache_dir": str(tmp_path / "cache"),
              "device": "cpu"}
    command = torchrun_command(2, "quick", ["02_autoencoder"],
                               [f"{key}={value}" for key, value in params.items()])
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "(2 process(es))" in result.stdout
    (directory,) = (tmp_path / "runs" / "models").glob("autoencoder-*")
    checkpoint = directory / "checkpoint.pt"
    before = (checkpoint.stat().st_mtime_ns, checkpoint.read_bytes(),
              (directory / "metrics.csv").read_text())

    # the report-space comparison row is not a model the pretrain command trains
    run_notebook("02_autoencoder.ipynb", **TINY, report_space_row=False)

    # The notebook asked for exactly this model and loaded it: no new directory, no training.
    assert list((tmp_path / "runs" / "models").glob("autoencoder-*")) == [directory]
    assert (checkpoint.stat().st_mtime_ns, checkpoint.read_bytes(),
            (directory / "metrics.csv").read_text()) == before
