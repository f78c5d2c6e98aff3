import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

import cmbcube
from cmbcube import cube
from cmbcube.stages import simulate
from helpers import small_recipe, zarr_files

ROOT = Path(__file__).resolve().parents[1]


def test_open_is_lazy_and_selects_maps(tiny_store, tiny_recipe):
    ds = cmbcube.open(tiny_store)
    assert ds.obs.chunks is not None                      # dask-backed: nothing read yet
    m = ds.obs.sel(split="test", sim=1, detector=143, field="Q")
    assert m.dims == ("pixel",) and m.size == 12 * 16 ** 2
    direct = zarr.open_group(tiny_store, mode="r")["obs"][2, 1, 4, 1]
    assert np.array_equal(m.values, direct)
    assert ds.cmb.sel(split="train", sim=0, field="I").shape == (12 * 16 ** 2,)
    assert ds.cosmo_params.sel(split="valid", sim=0, param="H0").values == pytest.approx(67.36, abs=5 * 0.54)
    assert ds.cl_theory.sel(split="valid", sim=0, spectrum="TT").isel(ell=slice(2, None)).min() > 0
    # absent pairs: NaN and flagged by has_field
    assert np.isnan(ds.obs.sel(split="train", sim=0, detector=857, field="U").values).all()
    assert not ds.has_field.sel(detector=545, field="Q") and ds.has_field.sel(detector=353, field="Q")
    # HEALPix metadata other tools understand
    assert ds.cell_ids.attrs == {"grid_name": "healpix", "level": 4, "indexing_scheme": "nested"}
    assert ds.attrs["healpix_order"] == "nested" and ds.obs.attrs["healpix_nside"] == 16
    assert list(ds.unit.values) == ["uK_CMB"] * 9
    assert int(ds.sim_done.sum()) == 6 and list(ds.n_sims.values) == [3, 1, 2]
    assert list(ds.component.values) == ["dust", "synchrotron", "freefree", "ame", "cib", "tsz", "radio"]
    # provenance
    assert ds.attrs["recipe_hash"] == tiny_recipe.hash and "zarr" in ds.attrs["package_versions"]


def test_sharding_one_shard_per_sim_and_checksums(tiny_store):
    obs = zarr.open_array(os.path.join(tiny_store, "obs"), mode="r")
    assert obs.shards == (1, 1, 9, 3, 12 * 16 ** 2) and obs.chunks == (1, 1, 1, 1, 12 * 16 ** 2)
    assert any(type(c).__name__ == "Crc32cCodec" for c in obs.compressors)
    shard_files = [p for p in zarr_files(os.path.join(tiny_store, "obs")) if p.startswith("c")]
    assert len(shard_files) == 6


def test_rerun_of_finished_store_does_nothing(tiny_store, tiny_recipe):
    before = zarr_files(tiny_store)
    report = simulate.run(tiny_recipe, tiny_store, scheduler="synchronous", progress=False)
    assert report.written == [] and report.already_done == 6
    after = zarr_files(tiny_store)
    assert {k: v for k, v in after.items() if "zarr.json" not in k} == \
        {k: v for k, v in before.items() if "zarr.json" not in k}


def test_resume_after_failures_writes_exactly_the_missing_sims(tmp_path, tiny_store, tiny_recipe, monkeypatch):
    store = str(tmp_path / "resume.zarr")
    monkeypatch.setenv("CMBCUBE_FAIL_SIMS", "train/1,test/0")
    report = simulate.run(tiny_recipe, store, scheduler="synchronous", progress=False)
    assert sorted((s, k) for s, k, _ in report.failed) == [("test", 0), ("train", 1)]
    assert len(report.written) == 4
    done = cube.done_flags(store)
    assert not done[0, 1] and not done[2, 0] and done.sum() == 4
    # the failed sims have no data either
    assert np.isnan(cmbcube.open(store).obs.sel(split="train", sim=1).values).all()
    before = {k: os.stat(os.path.join(store, k)).st_mtime_ns for k in zarr_files(store) if "/c/" in k}
    monkeypatch.delenv("CMBCUBE_FAIL_SIMS")
    report = simulate.run(tiny_recipe, store, scheduler="synchronous", progress=False)
    assert sorted(report.written) == [("test", 0), ("train", 1)] and report.ok
    after = {k: os.stat(os.path.join(store, k)).st_mtime_ns for k in zarr_files(store) if "/c/" in k}
    assert all(after[k] == t for k, t in before.items())           # finished sims untouched
    # and the result equals an uninterrupted run, byte for byte
    clean = {k: v for k, v in zarr_files(tiny_store).items() if "/c/" in k}
    resumed = {k: v for k, v in zarr_files(store).items() if "/c/" in k}
    assert clean == resumed


def test_different_recipe_is_refused_and_nothing_is_touched(tmp_path, tiny_store):
    before = zarr_files(tiny_store)
    other = small_recipe(seed=8)
    with pytest.raises(cube.StoreError, match="seed: store has 7, recipe has 8"):
        simulate.run(other, tiny_store, scheduler="synchronous", progress=False)
    assert zarr_files(tiny_store) == before


def test_cli_refuses_other_recipe_with_exit_2(tmp_path, tiny_store):
    before = zarr_files(tiny_store)
    proc = subprocess.run([sys.executable, "-m", "cmbcube.cli", "simulate", str(ROOT / "recipes" / "quickstart.yaml"),
                           "--store", tiny_store], capture_output=True, text=True)
    assert proc.returncode == 2 and "different recipe" in proc.stderr
    assert zarr_files(tiny_store) == before


def test_same_bytes_with_one_and_two_dask_workers(tmp_path):
    """Real LocalClusters: the same recipe gives identical chunks whatever the worker count."""
    r = small_recipe(splits={"train": 3, "valid": 0, "test": 1}, keep=["cmb"])
    stores = []
    for workers in (1, 2):
        store = str(tmp_path / f"w{workers}.zarr")
        report = simulate.run(r, store, scheduler=None, workers=workers, progress=False)
        assert report.ok and len(report.written) == 4
        stores.append({k: v for k, v in zarr_files(store).items() if "/c/" in k})
    assert stores[0] == stores[1] and len(stores[0]) >= 4 * 5


def test_cli_simulate_info_and_nothing_to_do(tmp_path):
    store = tmp_path / "cli.zarr"
    recipe = ROOT / "recipes" / "quickstart.yaml"
    args = [sys.executable, "-m", "cmbcube.cli", "simulate", str(recipe), "--store", str(store),
            "--set", "nside=8", "--set", "splits={train: 2, valid: 1, test: 1}", "--set", "keep=[cmb]",
            "--scheduler", "synchronous", "--no-progress"]
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "simulated 4 sim(s)" in proc.stdout
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == 0 and "nothing to do" in proc.stdout
    info = subprocess.run([sys.executable, "-m", "cmbcube.cli", "info", str(store)], capture_output=True, text=True)
    assert info.returncode == 0
    for text in ("train 2/2 done", "valid 1/1 done", "nside 8", "857", "MB", "quickstart", "overrides", "zarr"):
        assert text in info.stdout, text
    assert cmbcube.open(store).attrs["recipe_overrides"] == ["nside=8", "splits={train: 2, valid: 1, test: 1}",
                                                             "keep=[cmb]"]


def test_reader_sees_only_done_sims_while_writing(tmp_path, tiny_recipe, monkeypatch):
    store = str(tmp_path / "partial.zarr")
    monkeypatch.setenv("CMBCUBE_FAIL_SIMS", "valid/0")
    simulate.run(tiny_recipe, store, scheduler="synchronous", progress=False)
    ds = cmbcube.open(store)
    done = ds.sim_done.values.astype(bool)
    assert not done[1, 0]
    assert np.isnan(ds.obs.sel(split="valid", sim=0).values).all()
    assert not ds.obs.where(ds.sim_done == 1).sel(split="train").isnull().all()


def test_native_units_and_k_cmb_target():
    from cmbcube.stages import simspec
    r = small_recipe(units="native", detectors=[143, 857], noise__model="none", foregrounds__model="none")
    s = simspec.simulator(r)
    res = s.run("train", 0)
    assert s.units == {143: "K_CMB", 857: "MJy/sr"} and s.cmb_unit == "K_CMB"
    r2 = small_recipe(detectors=[143, 857], noise__model="none", foregrounds__model="none")
    res2 = simspec.simulator(r2).run("train", 0)
    # maps come from single-precision transforms: errors ~1e-6 of the map's largest value
    def close(a, b):
        return np.allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(b).max())
    assert close(res.obs[0], res2.obs[0] * 1e-6)
    from cmbcube.science.instrument import band_unit_factor
    ratio = band_unit_factor(r.detectors()[1], "uK_CMB", "MJy/sr")      # over the 857 GHz band (top-hat)
    assert close(res.obs[1, 0], res2.obs[1, 0] * ratio)
    assert np.allclose(res.cmb, res2.cmb * 1e-6, rtol=1e-5, atol=1e-12)
