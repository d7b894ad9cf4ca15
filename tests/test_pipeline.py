"""The papermill pipeline: parameters per profile, rendering, index, failures named."""

from __future__ import annotations

import nbformat
import pytest

from geofusion import pipeline


def write_notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python",
                                 "display_name": "Python 3"}
    params = nbformat.v4.new_code_cell("x = 1\nrun_dir = 'runs'")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, *(nbformat.v4.new_code_cell(s) for s in sources)]
    nbformat.write(nb, path)


@pytest.fixture
def notebooks(tmp_path, monkeypatch):
    directory = tmp_path / "notebooks"
    directory.mkdir()
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", directory)
    monkeypatch.setattr(pipeline, "PROFILES", {"tiny": {"common": {"data_path": None},
                                                        "01_ok": {"x": 2}}})
    return directory


def test_parameters_merge_common_notebook_and_overrides():
    params = pipeline.parameters_for("quick", "03_barlow_twins", {"epochs": 1})
    assert params["data_path"] is None and params["lambd"] == 0.01 and params["epochs"] == 1
    assert pipeline.parameters_for("full", "04_simclr")["lr"] == 1e-4
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        pipeline.parameters_for("fast", "01_data_loading")


def test_parse_assignments_reads_json_values():
    assert pipeline.parse_assignments(["epochs=2", "data_path=null", "device=cuda"]) == {
        "epochs": 2, "data_path": None, "device": "cuda"}
    with pytest.raises(ValueError, match="key=value"):
        pipeline.parse_assignments(["epochs"])


def test_pipeline_renders_notebooks_and_index(notebooks, tmp_path):
    write_notebook(notebooks / "01_ok.ipynb", "print('x is', x)")
    runs = pipeline.run_pipeline("tiny", output_dir=tmp_path / "reports")
    assert [r.status for r in runs] == ["ok"]
    html = (tmp_path / "reports" / "01_ok.html").read_text()
    assert "x is 2" in html  # the profile's parameter reached the notebook
    index = (tmp_path / "reports" / "index.html").read_text()
    assert "01_ok.html" in index and "synthetic" in index and "git commit" in index


def test_failing_notebook_stops_the_run_naming_notebook_and_cell(notebooks, tmp_path):
    write_notebook(notebooks / "01_ok.ipynb", "pass")
    write_notebook(notebooks / "02_bad.ipynb", "y = 1", "raise ValueError('broken field')")
    write_notebook(notebooks / "03_never.ipynb", "pass")
    with pytest.raises(pipeline.PipelineError, match=r"notebook 02_bad failed in cell \d+ "
                                                     r"\(ValueError: broken field\)"):
        pipeline.run_pipeline("tiny", output_dir=tmp_path / "reports")
    assert not (tmp_path / "reports" / "03_never.html").exists()
    index = (tmp_path / "reports" / "index.html").read_text()
    assert "failed" in index and "broken field" in index


def test_only_selects_by_prefix_and_rejects_unknown(notebooks):
    write_notebook(notebooks / "01_ok.ipynb", "pass")
    write_notebook(notebooks / "02_other.ipynb", "pass")
    assert pipeline.notebook_names(["02"]) == ["02_other"]
    with pytest.raises(ValueError, match="no notebook matches"):
        pipeline.notebook_names(["09"])


@pytest.mark.parametrize("profile", sorted(pipeline.PROFILES))
def test_every_profile_parameter_is_a_parameter_of_its_notebook(profile):
    """A typo in PROFILES would otherwise be injected silently and ignored by the notebook."""
    import papermill

    for name in pipeline.notebook_names():
        declared = papermill.inspect_notebook(str(pipeline.NOTEBOOK_DIR / f"{name}.ipynb"))
        assert set(pipeline.COMMON) <= set(declared), f"{name} lacks common parameters"
        unknown = set(pipeline.parameters_for(profile, name)) - set(declared)
        assert not unknown, f"PROFILES[{profile!r}] sets {sorted(unknown)} that {name} lacks"


def test_quick_profile_equals_the_notebooks_own_defaults():
    """A notebook opened by hand runs the quick profile, so it reuses the pipeline's models.

    ``device`` is the one exception: notebooks default to "auto" (a GPU when there is one),
    the quick profile pins the CPU.
    """
    import ast

    import papermill

    for name in pipeline.notebook_names():
        declared = papermill.inspect_notebook(str(pipeline.NOTEBOOK_DIR / f"{name}.ipynb"))
        for key, value in pipeline.parameters_for("quick", name).items():
            if key == "device":
                continue
            default = ast.literal_eval(declared[key]["default"])
            assert default == value, f"{name}: {key} defaults to {default!r}, quick sets {value!r}"


@pytest.mark.parametrize("profile", sorted(pipeline.PROFILES))
def test_later_notebooks_request_the_models_notebooks_02_03_and_06_train(profile):
    """06-08 reuse the trained base models only if they ask with the very same settings."""
    get = lambda name: pipeline.parameters_for(profile, name)  # noqa: E731
    autoencoder, barlow_twins = get("02_autoencoder"), get("03_barlow_twins")
    for name in ("06_sparsity", "07_decoder", "08_forecasting"):
        later = get(name)
        assert (later["ae_epochs"], later["ae_lr"]) == (autoencoder["epochs"], autoencoder["lr"])
        assert (later["encoder_epochs"], later["encoder_lr"], later["lambd"]) == (
            barlow_twins["epochs"], barlow_twins["lr"], barlow_twins["lambd"])
        for key in ("batch_size", "width", "latent_dim"):
            assert later[key] == autoencoder[key] == barlow_twins[key], (name, key)
    sparse_keys = ("mask_kind", "min_ratio", "max_ratio", "noise_std", "noise_length",
                   "both_views")
    assert {k: get("06_sparsity")[k] for k in sparse_keys} == \
        {k: get("08_forecasting")[k] for k in sparse_keys}
