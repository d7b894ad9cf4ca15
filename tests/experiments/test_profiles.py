"""The notebooks' parameter profiles: merged per notebook, every key declared by the notebook
it goes to, the quick profile equal to the notebooks' own defaults, shared models requested with
the same settings."""

from __future__ import annotations

import pytest

from geofusion.experiments import profiles
from geofusion.io import repository_root

NOTEBOOK_DIR = repository_root() / "notebooks"


def notebook_names() -> list[str]:
    return sorted(p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def test_parameters_merge_common_notebook_and_overrides():
    params = profiles.parameters_for("quick", "03_barlow_twins", {"epochs": 1})
    assert params["data_path"] is None and params["lambd"] == 0.01 and params["epochs"] == 1
    assert profiles.parameters_for("full", "04_simclr")["lr"] == 1e-4
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        profiles.parameters_for("fast", "01_data_loading")


@pytest.mark.parametrize("profile", sorted(profiles.PROFILES))
def test_every_profile_parameter_is_a_parameter_of_its_notebook(profile):
    """A typo in PROFILES would otherwise be injected silently and ignored by the notebook."""
    import papermill

    for name in notebook_names():
        declared = papermill.inspect_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb"))
        assert set(profiles.COMMON) <= set(declared), f"{name} lacks common parameters"
        unknown = set(profiles.parameters_for(profile, name)) - set(declared)
        assert not unknown, f"PROFILES[{profile!r}] sets {sorted(unknown)} that {name} lacks"


def test_quick_profile_equals_the_notebooks_own_defaults():
    """A notebook opened by hand runs the quick profile, so it reuses the pipeline's models.

    ``device`` is the one exception: notebooks default to "auto" (a GPU when there is one),
    the quick profile pins the CPU.
    """
    import ast

    import papermill

    for name in notebook_names():
        declared = papermill.inspect_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb"))
        for key, value in profiles.parameters_for("quick", name).items():
            if key == "device":
                continue
            default = ast.literal_eval(declared[key]["default"])
            assert default == value, f"{name}: {key} defaults to {default!r}, quick sets {value!r}"


@pytest.mark.parametrize("profile", sorted(profiles.PROFILES))
def test_later_notebooks_request_the_models_notebooks_02_03_and_06_train(profile):
    """06-08 and 10 reuse the trained base models only if they ask with the very same settings
    (architecture, views and the whole training schedule key the model directory)."""
    get = lambda name: profiles.parameters_for(profile, name)  # noqa: E731
    autoencoder, barlow_twins = get("02_autoencoder"), get("03_barlow_twins")
    for name in ("06_sparsity", "07_decoder", "08_forecasting", "10_assimilation"):
        later = get(name)
        if name != "10_assimilation":  # 10 uses the sparse-view Barlow Twins only
            assert (later["ae_epochs"], later["ae_lr"]) == (autoencoder["epochs"],
                                                            autoencoder["lr"])
        assert (later["encoder_epochs"], later["encoder_lr"], later["lambd"]) == (
            barlow_twins["epochs"], barlow_twins["lr"], barlow_twins["lambd"])
        assert later["augmentation"] == barlow_twins["augmentation"], name
        for key in ("batch_size", "width", "latent_dim", "patience", "lr_schedule",
                    "warmup_epochs"):
            assert later[key] == autoencoder[key] == barlow_twins[key], (name, key)
    sparse_keys = ("mask_kind", "min_ratio", "max_ratio", "noise_std", "noise_length",
                   "both_views")
    assert {k: get("06_sparsity")[k] for k in sparse_keys} == \
        {k: get("08_forecasting")[k] for k in sparse_keys}
