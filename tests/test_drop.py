"""cmbcube drop: products leave cleanly, other data stays byte for byte, the store still opens."""
import json
from pathlib import Path

import numpy as np
import pytest

import cmbcube
from cmbcube import cli, cube
from cmbcube.cube.drop import drop
from cmbcube.cube.verify import verify
from cmbcube.stages.simulate import run as simulate
from helpers import copy_store, tsz_recipe, zarr_files

RUNS = ("alpha", "beta", "gamma")


def _recipe():
    return tsz_recipe(splits={"train": 2, "valid": 1, "test": 1}, detectors=[100, 143])


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """A store with statistics, three runs (predictions, losses, checkpoints) and their analysis."""
    from cmbcube.stages import analyze, preprocess
    path = str(tmp_path_factory.mktemp("drop") / "full.zarr")
    assert simulate(_recipe(), path, scheduler="synchronous", progress=False).ok
    preprocess.run(path, scheduler="synchronous")
    npix = 12 * 8 ** 2
    rng = np.random.default_rng(1)
    for name in RUNS:
        irun = cube.ensure_run(path, name, "fake", {"name": name}, 0.0)
        for split, sim in (("train", 0), ("train", 1), ("test", 0)):
            cube.write_prediction(path, irun, split, sim, rng.normal(size=(3, npix)).astype(np.float32))
        cube.write_losses(path, irun, [1.0 + irun, 0.5], [2.0 + irun, 1.0])
        folder = Path(path + ".runs") / name
        folder.mkdir(parents=True)
        (folder / "epoch_0002.pt").write_bytes(rng.bytes(200_000))
    analyze.run(path, "all", ("test",), f_sky=0.8, scheduler="synchronous", progress=False)
    cube.consolidate(path)
    return path


@pytest.fixture
def store(full, tmp_path):
    return copy_store(full, tmp_path, "s.zarr", runs=True)


def _run_values(path, name):
    ds = cmbcube.open(path).sel(run=name)
    return {k: ds[k].values.copy() for k in ("pred", "pred_done", "loss_train", "loss_valid", "metrics", "spectra",
                                             "analysis_done", "run_config", "run_method")}


def _same(a, b):
    for key in a:
        if a[key].dtype.kind == "f":
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        else:
            assert (a[key] == b[key]).all(), key


def test_drop_one_run_frees_its_bytes_and_keeps_the_others(store, capsys):
    before = {name: _run_values(store, name) for name in RUNS}
    size = cube.disk_size(store) + cube.disk_size(store + ".runs")
    assert cli.main(["drop", store, "run", "--run", "beta"]) == 0
    out = capsys.readouterr().out
    assert "dropped run 'beta'" in out and "reclaimed" in out
    after_size = cube.disk_size(store) + cube.disk_size(store + ".runs")
    assert size - after_size > 200_000                        # the checkpoint and the run's chunks
    ds = cmbcube.open(store)
    assert list(ds.run.values) == ["alpha", "gamma"]
    assert ds.pred.shape[0] == ds.metrics.shape[0] == ds.loss_train.shape[0] == 2
    for name in ("alpha", "gamma"):
        _same(before[name], _run_values(store, name))
    assert not Path(store + ".runs/beta").exists() and Path(store + ".runs/gamma/epoch_0002.pt").exists()
    assert "cmbcube_dropping_run" not in cube.read_attrs(store)
    assert verify(store, progress=False).ok
    # the freed slot is not reused by accident: a new run is appended after the others
    assert cube.ensure_run(store, "delta", "fake", {}, 0.0) == 2
    assert cube.run_index(store, "gamma") == 1


def test_interrupted_run_removal_is_finished_by_a_rerun(store, tmp_path, monkeypatch):
    reference = copy_store(store, tmp_path, "reference.zarr", runs=True)
    drop(reference, "run", "alpha")

    calls = {"n": 0}
    from cmbcube.cube import runs
    original = runs.remove_run_slot

    def crash_on_third(array_dir, index):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        original(array_dir, index)
    monkeypatch.setattr(runs, "remove_run_slot", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        drop(store, "run", "alpha")
    monkeypatch.setattr(runs, "remove_run_slot", original)
    assert "cmbcube_dropping_run" in cube.read_attrs(store)
    with pytest.raises(cube.StoreError, match="interrupted"):
        cube.ensure_run(store, "new", "fake", {}, 0.0)         # no stage writes into a half-moved axis
    assert not verify(store, progress=False).ok                 # reported as interrupted
    drop(store, "run", "alpha")
    assert zarr_files(store) == zarr_files(reference)


def test_obs_and_cmb_are_refused_while_products_depend_on_them(store, capsys):
    files = zarr_files(store)
    assert cli.main(["drop", store, "obs"]) == 2
    err = capsys.readouterr().err
    assert "refusing to drop obs" in err and "--force" in err and "alpha" in err and "stats_obs" in err
    assert cli.main(["drop", store, "cmb"]) == 2
    assert zarr_files(store) == files                          # untouched
    assert cli.main(["drop", store, "obs", "--force"]) == 0
    ds = cmbcube.open(store)
    assert "obs" not in ds and "cmb" in ds and "pred" in ds
    assert cube.dropped_products(store) == ["obs"]
    assert verify(store, progress=False).ok
    assert cli.main(["drop", store, "cmb", "--force"]) == 0
    assert cube.dropped_products(store) == ["obs", "cmb"]
    assert "dropped     obs" in cube.summary(store)             # cmbcube info still works


def test_unknown_product_and_misplaced_run_are_bad_input(store, capsys):
    assert cli.main(["drop", store, "everything"]) == 2
    err = capsys.readouterr().err
    assert "everything" in err and "obs, cmb, components, noise, stats, pred, analysis, run" in err
    assert cli.main(["drop", store, "noise", "--run", "alpha"]) == 2
    assert cli.main(["drop", store, "run", "--run", "nosuch"]) == 2
    assert "alpha, beta, gamma" in capsys.readouterr().err


def test_drop_predictions_of_one_run_keeps_its_definition(store):
    before = _run_values(store, "alpha")
    report = drop(store, "pred", "gamma")
    assert report.reclaimed > 0
    ds = cmbcube.open(store)
    assert list(ds.run.values) == list(RUNS)
    gamma = ds.sel(run="gamma")
    assert int(gamma.pred_done.sum()) == 0 and int(gamma.analysis_done.sum()) == 0
    assert np.isnan(gamma.pred.values).all() and np.isfinite(gamma.loss_train.values[:2]).all()
    assert Path(store + ".runs/gamma/epoch_0002.pt").exists()
    _same(before, _run_values(store, "alpha"))
    assert cube.run_pending(store, 2, ("train", "test")) == [("train", 0), ("train", 1), ("test", 0)]


def test_whole_products_and_every_run(store):
    for product, gone in (("components", ("components", "component")), ("noise", ("noise",)),
                          ("stats", ("stats_obs", "stats_cmb", "stat")),
                          ("analysis", ("metrics", "spectra", "analysis_done", "mask"))):
        drop(store, product)
        ds = cmbcube.open(store)
        assert not any(name in ds.variables for name in gone), product
    with pytest.raises(cube.StoreError, match="no noise"):
        drop(store, "noise")
    report = drop(store, "run")
    assert report.reclaimed > 600_000
    ds = cmbcube.open(store)
    assert "run" not in ds.variables and "pred" not in ds and not Path(store + ".runs").exists()
    assert "obs" in ds and "cmb" in ds and int(ds.sim_done.sum()) == 4
    assert json.loads(cube.read_attrs(store)["cmbcube_dropped"])[0]["product"] == "components"
    assert verify(store, progress=False).ok
    # with no dependants left obs goes without --force; simulate then refuses to add sims
    drop(store, "obs")
    cube.clear_done(store, "train", 0)
    with pytest.raises(cube.StoreError, match="dropped"):
        cube.create_or_check(store, _recipe())
    assert cube.ensure_run(store, "again", "fake", {}, 0.0) == 0    # runs can start over
