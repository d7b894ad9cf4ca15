"""Out-of-core preparation (dask -> zarr, lazy reads) equals the in-memory preparation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dask.callbacks import Callback

from geofusion import data
from geofusion.data import streaming
from geofusion.data.streaming import ZarrFieldDataset, open_prepared, prepare_out_of_core

START, END = "2001-11-01", "2002-02-28"  # four months, across a year boundary (DJF)
TIME_CHUNK = 5  # days per chunk
_real_store_block = streaming._store_block


class _LargestResult(Callback):
    """Records the largest array any dask task produced."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def _posttask(self, key, result, dsk, state, worker_id):
        self.largest = max(self.largest, getattr(result, "nbytes", 0))


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("ooc")
    ds = data.synthetic_era5(start=START, end=END, seed=3, nlat=16, nlon=32, levels=(500, 850))
    # Small source chunks (two days of 6-hourly steps) so the streaming really is chunked.
    encoding = {name: {"chunks": (8, *ds[name].shape[1:])} for name in ds.data_vars}
    ds.to_zarr(root / "source.zarr", encoding=encoding, zarr_format=2, consolidated=True)
    lazy = data.open_era5(root / "source.zarr")
    in_memory = data.prepare(lazy, level=850, train_fraction=0.75)
    watcher = _LargestResult()
    with watcher:
        store = prepare_out_of_core(lazy, root / "prepared.zarr", level=850,
                                    train_fraction=0.75, time_chunk=TIME_CHUNK)
    return in_memory, store, watcher.largest, lazy, root


def test_out_of_core_preparation_equals_in_memory_preparation(stores):
    in_memory, store, _, _, _ = stores
    streamed = store.to_prepared()
    assert streamed.channels == in_memory.channels == data.VARIABLES
    np.testing.assert_array_equal(streamed.train_times, in_memory.train_times)
    np.testing.assert_array_equal(streamed.valid_times, in_memory.valid_times)
    np.testing.assert_allclose(streamed.mean, in_memory.mean, rtol=1e-6)
    np.testing.assert_allclose(streamed.std, in_memory.std, rtol=1e-6)
    np.testing.assert_allclose(streamed.train, in_memory.train, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(streamed.valid, in_memory.valid, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(streamed.lat, in_memory.lat)
    assert streamed.level == 850 and streamed.synthetic
    physical = store.destandardise(streamed.valid[:3])
    np.testing.assert_allclose(physical, in_memory.destandardise(in_memory.valid[:3]),
                               rtol=1e-5)


def test_preparation_streams_chunk_by_chunk(stores):
    in_memory, store, largest, _, _ = stores
    day_bytes = 5 * 16 * 32 * 4  # one daily (C, H, W) float32 field
    whole = (len(in_memory.train) + len(in_memory.valid)) * day_bytes
    # No task ever held more than a chunk of days of one variable at 6-hourly resolution
    # (4 steps/day, float64 for the statistics), far below the whole prepared array.
    assert largest <= TIME_CHUNK * 4 * day_bytes * 2
    assert largest < whole / 4
    fields = open_prepared(store.path)
    assert fields.n_train == len(in_memory.train)


def test_zarr_dataset_reads_the_same_samples_lazily(stores):
    in_memory, store, _, _, _ = stores
    train = ZarrFieldDataset(store.path, "train")
    valid = store.dataset("valid")
    assert len(train) == len(in_memory.train) and len(valid) == len(in_memory.valid)
    for i in (0, 7, len(train) - 1):
        x, season = train[i]
        assert x.dtype == torch.float32 and x.shape == (5, 16, 32)
        np.testing.assert_allclose(x.numpy(), in_memory.train[i], rtol=1e-6, atol=1e-6)
        assert int(season) == in_memory.season_labels("train")[i]
    x, _ = valid[-1]
    np.testing.assert_allclose(x.numpy(), in_memory.valid[-1], rtol=1e-6, atol=1e-6)
    with pytest.raises(IndexError):
        valid[len(valid)]
    # Batches through a DataLoader (the handle is reopened after pickling, as in workers).
    import pickle

    clone = pickle.loads(pickle.dumps(train))
    batch, labels = next(iter(torch.utils.data.DataLoader(clone, batch_size=4)))
    np.testing.assert_allclose(batch.numpy(), in_memory.train[:4], rtol=1e-6, atol=1e-6)


def test_partial_days_and_reuse(stores):
    _, store, _, lazy, root = stores
    with pytest.raises(data.DataError, match="whole days"):
        prepare_out_of_core(lazy.isel(time=slice(1, None)), root / "bad.zarr")
    again = prepare_out_of_core(lazy, store.path)  # an existing store is reused
    np.testing.assert_array_equal(again.mean, store.mean)


class _Interrupt(Exception):
    """Stands for a kill (Ctrl-C, a lost machine) in the middle of a preparation."""


def _counting(function, stop_after=None):
    calls = []

    def wrapped(*args, **kwargs):
        if stop_after is not None and len(calls) == stop_after:
            raise _Interrupt
        calls.append(args[2:])
        return function(*args, **kwargs)

    return wrapped, calls


def test_interrupted_streaming_resumes_where_it_stopped(stores, monkeypatch, capsys):
    _, store, _, lazy, root = stores
    # Three chunks of TIME_CHUNK days per block (bytes read per block: 4 steps a day).
    block_days = 3 * TIME_CHUNK
    monkeypatch.setattr(streaming, "BLOCK_BYTES",
                        data.step_bytes(lazy, data.VARIABLES) * 4 * block_days)
    n_blocks = -(-len(store.times) // block_days)
    path = root / "resumed.zarr"
    stopping, done = _counting(streaming._store_block, stop_after=3)
    monkeypatch.setattr(streaming, "_store_block", stopping)
    with pytest.raises(_Interrupt):
        prepare_out_of_core(lazy, path, level=850, train_fraction=0.75, time_chunk=TIME_CHUNK)
    assert not path.exists() and len(done) == 3  # nothing half-written at the final path
    counting, resumed = _counting(_real_store_block)
    monkeypatch.setattr(streaming, "_store_block", counting)
    again = prepare_out_of_core(lazy, path, level=850, train_fraction=0.75,
                                time_chunk=TIME_CHUNK, progress=True)
    assert len(resumed) == n_blocks - 3 and resumed[0] == (3 * block_days, 4 * block_days)
    np.testing.assert_array_equal(again.to_prepared().train, store.to_prepared().train)
    np.testing.assert_array_equal(again.to_prepared().valid, store.to_prepared().valid)
    assert not (root / "resumed.zarr.partial").exists()
    assert not (root / "resumed.zarr.partial.json").exists()
    err = capsys.readouterr().err
    assert "preparing daily means" in err and f"day {len(store.times)}/{len(store.times)}" in err
    assert "B/s" in err  # bytes read, with a rate
    # Other inputs after an interruption: the partial store is discarded, all blocks redone.
    monkeypatch.setattr(streaming, "_store_block", stopping)
    with pytest.raises(_Interrupt):
        prepare_out_of_core(lazy, root / "other.zarr", level=850, time_chunk=TIME_CHUNK)
    counting, redone = _counting(_real_store_block)
    monkeypatch.setattr(streaming, "_store_block", counting)
    other = prepare_out_of_core(lazy, root / "other.zarr", level=500, time_chunk=TIME_CHUNK)
    assert len(redone) == n_blocks and other.level == 500

