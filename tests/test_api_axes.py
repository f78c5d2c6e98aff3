"""Issue 21, items 8 and 11: what cmbcube.open gives a user typing xarray.

- the analysis' ``beam`` axis has the beam FWHM (arcmin) as values: ``.sel(beam=20.6)``;
- the ``sim`` axis is padded to the largest split: ``sim_exists`` marks the real sims and
  ``cmbcube.open(store, split=...)`` returns one split with only its own sims (README's example);
- a sim reads whole or as NaN, never in part, even when its shards appear in the middle of a read.
"""
import os
import shutil
import threading
import time

import dask
import numpy as np
import pytest
import zarr.storage

import cmbcube
from cmbcube.cube.datasets import SelectionError
from cmbcube.recipe import SPLITS
from cmbcube.stages import analyze, ilc, simulate
from helpers import small_recipe, zarr_files


@pytest.fixture(scope="module")
def analysed(tmp_path_factory, tiny_store):
    """A copy of the session's tiny store (train 3, valid 1, test 2) with HILC of test, analysed."""
    path = str(tmp_path_factory.mktemp("api") / "a.zarr")
    shutil.copytree(tiny_store, path)
    assert ilc.run(path, ilc.ILCConfig(method="hilc"), splits=("test",), scheduler="synchronous",
                   progress=False).ok
    assert analyze.run(path, splits=("test",), scheduler="synchronous", progress=False,
                       estimator="pseudo-fast").ok
    return path


def test_beam_axis_has_fwhm_values_and_sel_works(analysed):
    c = cmbcube.open(analysed)
    assert c.beam.values.tolist() == [0.0, 20.6, 60.0]
    assert c.beam.attrs["units"] == "arcmin"
    by_value = c.metrics.sel(run="hilc", split="test", field="I", metric="mae", beam=20.6).values
    by_index = c.metrics.sel(run="hilc", split="test", field="I", metric="mae").isel(beam=1).values
    assert np.array_equal(by_value, by_index, equal_nan=True)


def test_padding_is_marked_and_one_split_has_only_its_own_sims(analysed):
    c = cmbcube.open(analysed)
    assert c.sizes["sim"] == 3                          # the train split's 3
    assert c.sim_exists.values.tolist() == [[True, True, True], [True, False, False], [True, True, False]]
    padded = c.metrics.sel(run="hilc", split="test", field="I", metric="mae", beam=20.6).values
    assert np.isfinite(padded[:2]).all() and np.isnan(padded[2])      # the padding sim reads NaN
    assert np.isfinite(padded[c.sim_exists.sel(split="test").values]).all()
    # README's example: one value per test sim, no padding
    test = cmbcube.open(analysed, split="test")
    got = test.metrics.sel(run="hilc", field="I", metric="mae", beam=20.6).values
    assert got.shape == (2,) and np.array_equal(got, padded[:2])
    assert test.sim.values.tolist() == [0, 1] and "split" not in test.dims
    for split, n in zip(SPLITS, (3, 1, 2)):
        one = cmbcube.open(analysed, split=split)
        assert one.obs.shape[0] == n and bool(one.sim_done.all())
        assert np.isfinite(one.obs.sel(detector=143, field="Q").values).all()


def test_unknown_split_is_refused_naming_the_allowed_ones(analysed):
    before = zarr_files(analysed)
    with pytest.raises(SelectionError, match=r"split 'tset': allowed: train, valid, test"):
        cmbcube.open(analysed, split="tset")
    assert zarr_files(analysed) == before


# ----------------------------------------------------------------------------- whole sims only (item 8)
def _sim_files(store, isplit, sim):
    """Relative paths of every chunk of one sim (its products' shards and its done-flag)."""
    out = []
    for root, _, files in os.walk(store):
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), store)
            parts = rel.split(os.sep)
            if len(parts) >= 4 and parts[1] == "c" and parts[2:4] == [str(isplit), str(sim)] and \
                    parts[0] not in ("pred", "pred_sigma", "pred_done", "metrics", "spectra", "analysis_done"):
                out.append(rel)
    return sorted(out, key=lambda r: r.startswith("sim_done"))          # the flag last, as simulate writes it


def test_a_sim_written_in_the_middle_of_a_read_reads_whole_or_nan(tmp_path, tiny_store, monkeypatch):
    """train sim 1's shards (then its flag) appear at the reader's 20th request of its obs shard (the old
    code: after 19 of its 27 maps were read as absent, so one array held NaN maps and maps of data).
    Now one read holds all of the sim or none of it, agreeing with sim_done, and the same Dataset keeps
    reading it so; a fresh open reads it whole."""
    store, aside = str(tmp_path / "s.zarr"), tmp_path / "aside"
    shutil.copytree(tiny_store, store)
    moved = _sim_files(store, 0, 1)
    assert any(m.startswith("obs") for m in moved) and moved[-1].startswith("sim_done")
    for rel in moved:
        (aside / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(os.path.join(store, rel), aside / rel)
    original_get, calls = zarr.storage.LocalStore.get, []

    def land():                                          # the writer: data first, flag last
        for rel in moved:
            if (aside / rel).exists():
                os.replace(aside / rel, os.path.join(store, rel))

    async def get(self, key, prototype=None, byte_range=None):
        if key.startswith("obs/c/0/1/"):
            calls.append(key)
            if len(calls) == 20:                         # the old code: after 19 of its 27 maps
                land()
        return await original_get(self, key, prototype, byte_range)

    monkeypatch.setattr(zarr.storage.LocalStore, "get", get)
    c = cmbcube.open(store)
    has = np.asarray(c.has_field.values, dtype=bool)
    with dask.config.set(scheduler="synchronous"):
        obs = c.obs.sel(split="train", sim=1).values
        land()                                           # (a reader making fewer requests: it lands after)
        flag = int(c.sim_done.sel(split="train", sim=1))
        again = c.obs.sel(split="train", sim=1).values
    nan_maps = np.isnan(obs).all(axis=-1)[has]
    assert nan_maps.all() or not nan_maps.any(), f"{nan_maps.sum()} of {has.sum()} maps NaN in one read"
    assert bool(nan_maps.all()) == (flag == 0)           # whole data with the flag, or NaN without it
    assert np.array_equal(again, obs, equal_nan=True)    # its state holds for this Dataset
    fresh = cmbcube.open(store)
    assert int(fresh.sim_done.sel(split="train", sim=1)) == 1
    assert np.isfinite(fresh.obs.sel(split="train", sim=1).values[has]).all()


def test_reader_looping_while_simulate_writes_sees_whole_sims_only(tmp_path, monkeypatch):
    """simulate writes 3 sims (held 0.1 s each) while a reader loops cmbcube.open: in every read each
    real sim is either flagged and complete (equal to the finished store) or unflagged and all NaN (the
    old code also showed sims written but not flagged, and in one read obs without noise)."""
    recipe = small_recipe(splits={"train": 2, "valid": 0, "test": 1}, keep=["cmb", "noise"],
                          cmb__enabled=False, detectors=[100, 143], fields=["I", "Q"])
    store = str(tmp_path / "w.zarr")
    monkeypatch.setenv("CMBCUBE_SIM_DELAY", "0.1")
    result = {}
    writer = threading.Thread(target=lambda: result.setdefault(
        "ok", simulate.run(recipe, store, scheduler="synchronous", progress=False).ok))
    writer.start()
    seen, reads = [], 0
    try:
        while writer.is_alive():
            if not os.path.exists(store):
                time.sleep(0.02)
                continue
            c = cmbcube.open(store)
            if reads % 2:                                # flags first, or the maps first
                flags = c.sim_done.values == 1
                obs, noise = c.obs.values, c.noise.values
            else:
                obs, noise = c.obs.values, c.noise.values
                flags = c.sim_done.values == 1
            n_sims = c.n_sims.values
            for i, j in ((a, b) for a in range(len(n_sims)) for b in range(n_sims[a])):
                if not flags[i, j]:
                    assert np.isnan(obs[i, j]).all() and np.isnan(noise[i, j]).all(), (reads, i, j)
                else:
                    seen.append((i, j, obs[i, j], noise[i, j]))
            reads += 1
    finally:
        writer.join()
    assert result.get("ok") and reads >= 3, (result, reads)
    final = cmbcube.open(store)
    for i, j, obs, noise in seen:
        assert np.array_equal(obs, final.obs.values[i, j], equal_nan=True)
        assert np.array_equal(noise, final.noise.values[i, j], equal_nan=True)
