"""ERA5 as downloaded from the Climate Data Store (netCDF, GRIB) reads as the WB2 layout.

The tests write small CDS-like files themselves from a synthetic reference in the WeatherBench 2
layout: short names, ``valid_time`` / ``pressure_level``, latitude from north to south,
longitudes -180..180, hourly single levels beside 6-hourly pressure levels, files split by day,
old-style netCDF-3 with packed integers and an ERA5/ERA5T ``expver`` dimension, and GRIB written
with ecCodes. Reading them back must give exactly the reference.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import xarray as xr

from geofusion import data
from geofusion.data import era5_files
from geofusion.world.synthetic import synthetic_era5

PRESSURE = ("geopotential", "u_component_of_wind", "v_component_of_wind", "specific_humidity")
SHORT = {wb2: short for short, wb2 in era5_files.SHORT_NAMES.items()}


@pytest.fixture(scope="module")
def reference():
    """Three days, hourly, 8x16 grid, levels 500 and 850 hPa, in the WB2 layout.

    The simulated world steps in multiples of 6 hours; the CDS delivers hourly data, so the
    hours between are filled by linear interpolation in time (a stand-in for hourly values)."""
    six_hours = synthetic_era5(start="2000-01-01", end="2000-01-04", freq="6h", seed=5,
                               nlat=8, nlon=16, levels=(500, 850))
    hourly = six_hours.resample(time="1h").interpolate("linear")
    return hourly.sel(time=slice("2000-01-01", "2000-01-03T23:00")).assign_attrs(
        six_hours.attrs)


def six_hourly(ds):
    return ds.isel(time=slice(None, None, 6))


def to_cds(ds, variables, lon180=False, new_format=True):
    """WB2-layout variables -> a dataset laid out as a CDS netCDF download."""
    out = ds[list(variables)].rename({v: SHORT[v] for v in variables})
    out = out.transpose("time", *(["level"] if "level" in out.dims else []), "latitude",
                        "longitude")
    out = out.isel(latitude=slice(None, None, -1))  # 90 N first
    if "level" in out.dims:
        out = out.isel(level=slice(None, None, -1))  # 1000 hPa first, as the CDS sends it
    if lon180:
        lon = (out.longitude.values + 180) % 360 - 180
        out = out.assign_coords(longitude=lon).sortby("longitude")
    out.attrs = {"Conventions": "CF-1.7", "institution": "European Centre for Medium-Range "
                 "Weather Forecasts"}
    if new_format:
        out = out.rename({"time": "valid_time"})
        if "level" in out.dims:
            out = out.rename({"level": "pressure_level"})
            out["pressure_level"] = out["pressure_level"].astype(np.float64)
            out["pressure_level"].attrs["units"] = "hPa"
        out = out.assign_coords(number=0, expver=("valid_time",
                                                  np.full(out.sizes["valid_time"], "0001")))
    return out


def assert_equals_reference(ds, ref, variables, rtol=0.0, atol=0.0):
    assert ds["latitude"].values.tolist() == ref["latitude"].values.tolist()
    np.testing.assert_allclose(ds["longitude"].values, ref["longitude"].values, atol=1e-9)
    np.testing.assert_array_equal(ds["time"].values, ref["time"].values)
    for name in variables:
        assert ds[name].dims == ref[name].dims, name
        expected = ref[name].values
        if "level" in ref[name].dims:
            assert ds["level"].values.tolist() == [500, 850]
            assert ds["level"].dtype == np.int64
        np.testing.assert_allclose(ds[name].values, expected, rtol=rtol, atol=atol,
                                   err_msg=name)


@pytest.fixture(scope="module")
def cds_dir(reference, tmp_path_factory):
    """Hourly surface file (0..360) + 6-hourly pressure levels split by day (-180..180)."""
    root = tmp_path_factory.mktemp("cds")
    to_cds(reference, ["2m_temperature"]).to_netcdf(root / "single_levels.nc", engine="h5netcdf")
    pressure = to_cds(six_hourly(reference), PRESSURE, lon180=True)
    pressure.isel(valid_time=slice(0, 4)).to_netcdf(root / "pressure_day1.nc", engine="h5netcdf")
    # Day 2 is downloaded twice (overlapping requests): it must appear once.
    pressure.isel(valid_time=slice(4, 12)).to_netcdf(root / "pressure_days23.nc",
                                                     engine="h5netcdf")
    pressure.isel(valid_time=slice(4, 8)).to_netcdf(root / "pressure_day2_again.nc",
                                                    engine="h5netcdf")
    return root


def test_cds_netcdf_directory_reads_as_the_wb2_layout(cds_dir, reference):
    ds = data.open_era5(cds_dir)
    assert_equals_reference(ds, six_hourly(reference), data.VARIABLES)
    assert ds["geopotential"].dims == ("time", "level", "longitude", "latitude")
    assert ds["2m_temperature"].chunks is not None  # lazy
    assert set(ds.data_vars) == set(data.VARIABLES)
    # A glob of the same files reads the same, and preparation equals the reference's.
    from_glob = data.open_era5(str(cds_dir / "*.nc"))
    xr.testing.assert_identical(from_glob.drop_attrs(), ds.drop_attrs())
    prepared = data.prepare(ds, level=850, train_fraction=0.5)
    expected = data.prepare(six_hourly(reference), level=850, train_fraction=0.5)
    np.testing.assert_array_equal(prepared.train, expected.train)
    np.testing.assert_array_equal(prepared.valid, expected.valid)
    np.testing.assert_array_equal(prepared.lat, expected.lat)
    assert not prepared.synthetic  # CDS files are real data: no synthetic attribute


def test_hourly_only_keeps_every_step(reference, tmp_path):
    to_cds(reference, data.VARIABLES).to_netcdf(tmp_path / "all.nc", engine="h5netcdf")
    ds = data.open_era5(tmp_path / "all.nc")
    assert_equals_reference(ds, reference, data.VARIABLES)
    # Daily means of 24 hourly steps, as prepare computes them from the reference.
    np.testing.assert_array_equal(data.prepare(ds, level=500).train,
                                  data.prepare(reference, level=500).train)


def test_old_netcdf3_packed_with_era5t_expver(reference, tmp_path):
    """Pre-2024 CDS netCDF: ``time`` / ``level``, int16 packing, ``expver`` 1 and 5."""
    ref = six_hourly(reference)
    old = to_cds(ref, ["2m_temperature", "geopotential"], new_format=False)
    half = old.sizes["time"] // 2
    era5 = old.where(old.time < old.time[half])
    era5t = old.where(old.time >= old.time[half])
    mixed = xr.concat([era5, era5t], dim=xr.DataArray([1, 5], dims="expver", name="expver"))
    encoding = {}
    for short in ("t2m", "z"):
        low, high = float(old[short].min()), float(old[short].max())
        scale = (high - low) / 60000
        encoding[short] = {"dtype": "int16", "scale_factor": scale,
                           "add_offset": (high + low) / 2, "_FillValue": -32767}
    mixed.to_netcdf(tmp_path / "old.nc", engine="scipy", encoding=encoding)
    ds = data.open_era5(tmp_path / "old.nc")
    for name, short in (("2m_temperature", "t2m"), ("geopotential", "z")):
        step = encoding[short]["scale_factor"]
        assert_equals_reference(ds, ref, [name], atol=step)
        assert not np.isnan(ds[name].values).any()


def write_grib(path, ref, name, levels):
    """ref[name] (WB2 layout) -> GRIB 1 messages as ERA5 from the CDS (90 N first, 0..360)."""
    eccodes = pytest.importorskip("eccodes")
    param = {"2m_temperature": 167, "geopotential": 129, "u_component_of_wind": 131,
             "v_component_of_wind": 132, "specific_humidity": 133}[name]
    lat = ref.latitude.values[::-1]
    lon = ref.longitude.values
    sample = "regular_ll_sfc_grib1" if levels is None else "regular_ll_pl_grib1"
    with open(path, "ab") as fh:
        for t, time in enumerate(ref.time.values):
            stamp = str(np.datetime64(time, "h"))
            for level in (levels or [None]):
                handle = eccodes.codes_grib_new_from_samples(sample)
                eccodes.codes_set_key_vals(handle, {
                    "Ni": len(lon), "Nj": len(lat),
                    "latitudeOfFirstGridPointInDegrees": float(lat[0]),
                    "latitudeOfLastGridPointInDegrees": float(lat[-1]),
                    "longitudeOfFirstGridPointInDegrees": float(lon[0]),
                    "longitudeOfLastGridPointInDegrees": float(lon[-1]),
                    "iDirectionIncrementInDegrees": float(lon[1] - lon[0]),
                    "jDirectionIncrementInDegrees": float(lat[0] - lat[1]),
                })
                eccodes.codes_set(handle, "paramId", param)
                eccodes.codes_set(handle, "dataDate", int(stamp[:10].replace("-", "")))
                eccodes.codes_set(handle, "dataTime", int(stamp[11:13]) * 100)
                if level is None:
                    values = ref[name].values[t]
                else:
                    eccodes.codes_set(handle, "typeOfLevel", "isobaricInhPa")
                    eccodes.codes_set(handle, "level", int(level))
                    values = ref[name].sel(level=level).values[t]
                eccodes.codes_set(handle, "bitsPerValue", 24)
                # (longitude, latitude) ascending -> rows from north to south.
                eccodes.codes_set_values(handle, values.T[::-1].astype(np.float64).ravel())
                eccodes.codes_write(handle, fh)
                eccodes.codes_release(handle)


# ecCodes (GRIB) and PROJ (cartopy's maps) loaded into one process can crash it at exit
# ("double free or corruption", exit 134, seen with the PyPI wheels here) after every test has
# passed, so the GRIB test runs in a process of its own.
_OWN_PROCESS = "GEOFUSION_GRIB_TEST_PROCESS"


@pytest.mark.skipif(os.environ.get(_OWN_PROCESS) != "1",
                    reason="runs in its own process, see test_grib_in_its_own_process")
def test_cds_grib_reads_as_the_wb2_layout(reference, tmp_path):
    pytest.importorskip("cfgrib", reason='GRIB needs the grib extra: pip install -e ".[grib]"')
    ref = six_hourly(reference)
    write_grib(tmp_path / "single.grib", reference, "2m_temperature", None)  # hourly
    for name in PRESSURE:  # one file with all pressure-level variables, 6-hourly
        write_grib(tmp_path / "pressure.grib", ref, name, [850, 500])
    ds = data.open_era5(tmp_path)
    assert not list(tmp_path.glob("*.idx"))  # no index files left beside the user's data
    for name in data.VARIABLES:
        values = ref[name].values
        # 24-bit packing: error below range / 2**23.
        assert_equals_reference(ds, ref, [name], atol=float(np.ptp(values)) / 2**23)
    prepared = data.prepare(ds, level=500, train_fraction=0.5)
    expected = data.prepare(ref, level=500, train_fraction=0.5)
    np.testing.assert_allclose(prepared.train, expected.train, atol=1e-4)


@pytest.mark.skipif(importlib.util.find_spec("cfgrib") is None,  # found, not imported
                    reason='GRIB needs the grib extra: pip install -e ".[grib]"')
def test_grib_in_its_own_process(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"{__file__}::test_cds_grib_reads_as_the_wb2_layout", "--basetemp", str(tmp_path)],
        env={**os.environ, _OWN_PROCESS: "1"}, capture_output=True, text=True, timeout=600)
    assert "1 passed" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]


def test_grib_without_the_extra_names_it(reference, tmp_path, monkeypatch):
    (tmp_path / "x.grib").write_bytes(b"GRIB" + b"\0" * 100)
    real_import = importlib.import_module

    def no_cfgrib(name, *args):
        if name == "cfgrib":
            raise ImportError("No module named 'cfgrib'")
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_cfgrib)
    with pytest.raises(data.DataError, match=r'GRIB needs the optional cfgrib.*pip install -e '
                                             r'"\.\[grib\]".*data_format'):
        data.open_era5(tmp_path / "x.grib")


def test_missing_variables_and_levels_name_the_cds_request(reference, tmp_path):
    to_cds(reference, ["2m_temperature"]).to_netcdf(tmp_path / "sfc.nc", engine="h5netcdf")
    surface_only = data.open_era5(tmp_path / "sfc.nc")
    with pytest.raises(data.DataError, match=(
            r"\['geopotential', 'u_component_of_wind', 'v_component_of_wind', "
            r"'specific_humidity'\] are not in the store.*reanalysis-era5-pressure-levels with "
            r"variable=\['geopotential', .*'specific_humidity'\], pressure_level=\['500'\]")):
        data.prepare(surface_only)
    to_cds(six_hourly(reference).sel(level=[850]), PRESSURE).to_netcdf(
        tmp_path / "pl850.nc", engine="h5netcdf")
    ds = data.open_era5(tmp_path)
    with pytest.raises(data.DataError, match=(
            r"level 500 hPa is not in the store; available levels \(hPa\) .*\[850\].*"
            r"reanalysis-era5-pressure-levels with variable=\['geopotential'.*pressure_level="
            r"\['500'\]")):
        data.prepare(ds, level=500)
    assert data.prepare(ds, level=850).train.shape[1:] == (5, 8, 16)
    # Pressure levels only: the surface variable's request is named.
    only = data.open_era5(tmp_path / "pl850.nc")
    with pytest.raises(data.DataError, match=r"reanalysis-era5-single-levels with "
                                             r"variable=\['2m_temperature'\]"):
        data.prepare(only, level=850)


def test_mixed_grids_and_inconsistent_files_are_refused(reference, tmp_path):
    ref = six_hourly(reference)
    coarse = synthetic_era5(start="2000-01-01", end="2000-01-03", seed=5, nlat=4, nlon=8,
                            levels=(500, 850))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    to_cds(ref, ["2m_temperature"]).to_netcdf(mixed / "sfc.nc", engine="h5netcdf")
    to_cds(coarse, PRESSURE).to_netcdf(mixed / "pl.nc", engine="h5netcdf")
    with pytest.raises(data.DataError, match=r"mixed grids: .*(8x16 \(lat x lon, 22.5 deg\).*"
                                             r"4x8|4x8 \(lat x lon, 45 deg\).*8x16).*same "
                                             r"`grid` field"):
        data.open_era5(mixed)
    levels = tmp_path / "levels"
    levels.mkdir()
    to_cds(ref.isel(time=slice(0, 4)), PRESSURE).to_netcdf(levels / "a.nc", engine="h5netcdf")
    to_cds(ref.isel(time=slice(4, 8)).sel(level=[500]), PRESSURE).to_netcdf(
        levels / "b.nc", engine="h5netcdf")
    with pytest.raises(data.DataError, match=r"pressure levels \[500, 850\] in .*a.nc but "
                                             r"\[500\] in .*b.nc; request the same "
                                             r"pressure_level"):
        data.open_era5(levels)
    apart = tmp_path / "apart"
    apart.mkdir()
    to_cds(ref.isel(time=slice(0, 4)), ["2m_temperature"]).to_netcdf(apart / "s.nc",
                                                                      engine="h5netcdf")
    to_cds(ref.isel(time=slice(4, 8)), PRESSURE).to_netcdf(apart / "p.nc", engine="h5netcdf")
    with pytest.raises(data.DataError, match=r"share no time step.*same years, months"):
        data.open_era5(apart)


def test_unusable_paths_say_what_to_pass(tmp_path):
    with pytest.raises(data.DataError, match=r"no ERA5 data at .*CDS|Climate Data Store"):
        data.open_era5(tmp_path / "nothing_here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(data.DataError, match=r"no netCDF or GRIB files under"):
        data.open_era5(tmp_path / "empty")
    with zipfile.ZipFile(tmp_path / "download.nc", "w") as archive:
        archive.writestr("data_stream-oper.nc", b"\x89HDF")
    with pytest.raises(data.DataError, match=r"zip archive.*unzip it"):
        data.open_era5(tmp_path / "download.nc")
    (tmp_path / "notes.nc").write_text("not a netCDF file")
    with pytest.raises(data.DataError, match=r"neither netCDF nor GRIB"):
        data.open_era5(tmp_path / "notes.nc")


def test_cds_request_fields():
    requests = era5_files.cds_request(data.VARIABLES, levels=[500], years=[2000, 2001],
                                      grid=1.5)
    single = requests["reanalysis-era5-single-levels"]
    pressure = requests["reanalysis-era5-pressure-levels"]
    assert single["variable"] == ["2m_temperature"] and "pressure_level" not in single
    assert pressure["variable"] == list(PRESSURE) and pressure["pressure_level"] == ["500"]
    for request in (single, pressure):
        assert request["product_type"] == ["reanalysis"]
        assert request["time"] == ["00:00", "06:00", "12:00", "18:00"]
        assert request["year"] == ["2000", "2001"] and len(request["day"]) == 31
        assert request["grid"] == [1.5, 1.5] and request["data_format"] == "netcdf"
        assert request["download_format"] == "unarchived"


def test_files_without_known_variables_are_skipped_or_named(reference, tmp_path):
    to_cds(reference, ["2m_temperature"]).rename({"t2m": "msl"}).to_netcdf(
        tmp_path / "msl.nc", engine="h5netcdf")
    with pytest.raises(data.DataError, match=r"no file holds a variable geofusion uses "
                                             r"\(msl.nc: \['msl'\]\).*'t2m'.*"
                                             r"reanalysis-era5-single-levels"):
        data.open_era5(tmp_path)
    to_cds(reference, ["2m_temperature"]).to_netcdf(tmp_path / "t2m.nc", engine="h5netcdf")
    with pytest.warns(UserWarning, match=r"skipped 1 files .*msl.nc: \['msl'\]"):
        ds = data.open_era5(tmp_path)
    assert list(ds.data_vars) == ["2m_temperature"]
