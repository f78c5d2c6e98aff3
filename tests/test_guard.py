"""Readers that cannot be fooled: a finished unit whose chunk is missing or corrupted raises,
naming the unit, in every reader (cmbcube.open, CubeDataset, ilc); unfinished units read as NaN."""
import os
import struct

import numpy as np
import pytest

import cmbcube
from cmbcube import cli
from cmbcube.cube.datasets import CubeDataset
from cmbcube.cube.guard import DamagedUnitError
from cmbcube.stages.simulate import run as simulate
from helpers import copy_store, flip_bit, shard_path, tsz_recipe

SPLITS = ("train", "valid", "test")


def _recipe():
    return tsz_recipe(nside=16, sky_nside=32, splits={"train": 3, "valid": 0, "test": 1}, detectors=[100, 143, 545],
                      keep=["cmb"])


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """train 0, 1 and test 0 finished; train 2 planned but never written (its task failed)."""
    path = str(tmp_path_factory.mktemp("guard") / "clean.zarr")
    os.environ["CMBCUBE_FAIL_SIMS"] = "train/2"
    try:
        report = simulate(_recipe(), path, scheduler="synchronous", progress=False)
    finally:
        del os.environ["CMBCUBE_FAIL_SIMS"]
    assert sorted(report.written) == [("test", 0), ("train", 0), ("train", 1)] and len(report.failed) == 1
    return path


@pytest.fixture
def store(clean, tmp_path):
    return copy_store(clean, tmp_path, "work.zarr")


def _unit_named(err, product, split, sim):
    text = str(err.value)
    assert f"{product} of {split} sim {sim}" in text, text
    assert "verify(" in text and "clear=True" in text, text          # the CLI prints `cmbcube verify STORE --clear`


def test_the_issue_repro_missing_shard_of_a_finished_sim_raises(store):
    ds = cmbcube.open(store)
    before = ds.obs.sel(split="train", sim=0, detector=143, field="Q").values
    os.remove(os.path.join(store, "obs", "c", "0", "1", "0", "0", "0"))
    ds = cmbcube.open(store)
    with pytest.raises(DamagedUnitError) as err:
        _ = ds.obs.sel(split="train", sim=1, detector=143, field="Q").values
    _unit_named(err, "obs", "train", 1)
    assert "obs/c/0/1/0/0/0" in str(err.value)
    with pytest.raises(DamagedUnitError):                 # a whole-cube reduction cannot swallow it either
        float(ds.obs.sel(detector=143, field="I").mean())
    # the other sims still read, bit for bit
    assert np.array_equal(ds.obs.sel(split="train", sim=0, detector=143, field="Q").values, before)
    # CubeDataset: the fast shard reader and the zarr path (patches read pixel ranges through zarr)
    with pytest.raises(DamagedUnitError) as err:
        CubeDataset(store, "train", detectors=[143])[1]
    _unit_named(err, "obs", "train", 1)
    patches = CubeDataset(store, "train", detectors=[143], view="patches", patch_side=8)
    with pytest.raises(DamagedUnitError) as err:
        patches[patches.npatch]                           # sim 1, patch 0
    _unit_named(err, "obs", "train", 1)
    assert np.isfinite(patches[0]["inputs"].numpy()).all()
    # verify --clear: the sim is no longer done, so it reads as not written (NaN), without an error
    assert cli.main(["verify", store, "--clear", "--no-progress"]) == 1
    m = cmbcube.open(store).obs.sel(split="train", sim=1, detector=143, field="Q").values
    assert np.isnan(m).all()
    assert CubeDataset(store, "train").sims == [0]


def test_units_not_done_read_as_nan_without_error(clean):
    ds = cmbcube.open(clean)
    assert int(ds.sim_done.sel(split="train", sim=2)) == 0
    assert np.isnan(ds.obs.sel(split="train", sim=2).values).all()
    assert np.isnan(ds.cmb.sel(split="train", sim=2).values).all()
    assert np.isnan(ds.cosmo_params.sel(split="train", sim=2).values).all()
    # and a dataset refuses to serve them
    with pytest.raises(ValueError, match=r"sims \[2\] of split 'train' are not finished"):
        CubeDataset(clean, "train", sims=[2])


def test_corrupted_map_and_unsharded_chunk_raise_naming_the_unit(store):
    flip_bit(shard_path(store, "cmb", "test", 0), 100)           # a byte of the first map of the truth
    flip_bit(shard_path(store, "cosmo_params", "train", 0), 3)   # an unsharded chunk
    ds = cmbcube.open(store)
    with pytest.raises(DamagedUnitError, match="fails its checksum") as err:
        _ = ds.cmb.sel(split="test", sim=0, field="I").values
    _unit_named(err, "cmb", "test", 0)
    with pytest.raises(DamagedUnitError) as err:
        _ = ds.cosmo_params.sel(split="train", sim=0).values
    _unit_named(err, "cosmo_params", "train", 0)
    with pytest.raises(DamagedUnitError, match="checksum mismatch") as err:
        CubeDataset(store, "test", detectors=[143])[0]    # the target (cmb) fails
    _unit_named(err, "cmb", "test", 0)


def test_map_missing_from_a_shard_index_raises_absent_pairs_do_not(store):
    import google_crc32c
    path = shard_path(store, "obs", "train", 0)
    blob = bytearray(open(path, "rb").read())
    n = 3 * 3
    index = np.frombuffer(bytes(blob[-(16 * n + 4):-4]), dtype="<u8").reshape(n, 2).copy()
    assert (index[7:] == 2 ** 64 - 1).all()               # 545 GHz Q/U never exist: not damage
    index[4] = 2 ** 64 - 1                                 # drop 143 GHz Q from the index
    raw = index.tobytes()
    blob[-(16 * n + 4):] = raw + struct.pack("<I", google_crc32c.value(raw))
    open(path, "wb").write(bytes(blob))
    ds = cmbcube.open(store)
    assert np.isnan(ds.obs.sel(split="train", sim=1, detector=545, field="Q").values).all()
    with pytest.raises(DamagedUnitError, match="lacks 1 map") as err:
        _ = ds.obs.sel(split="train", sim=0, detector=100, field="I").values
    _unit_named(err, "obs", "train", 0)
    with pytest.raises(DamagedUnitError, match="missing from the shard"):
        CubeDataset(store, "train", detectors=[143], fields=["Q"])[0]


def test_ilc_names_the_damaged_sim_instead_of_an_ill_conditioned_covariance(store, capsys):
    os.remove(shard_path(store, "obs", "train", 1))
    code = cli.main(["ilc", store, "--method", "hilc", "--split", "train", "--detectors", "100,143,545",
                     "--fields", "I", "--scheduler", "synchronous", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert "train/1" in err and "DamagedUnitError" in err and "obs of train sim 1" in err
    assert "ill-conditioned" not in err
    assert "1 on damaged input" in err and "retry them" not in err      # no plain "rerun" advice
    # the healthy sim was cleaned; a missing prediction of a finished (run, sim) raises too
    ds = cmbcube.open(store)
    assert int(ds.pred_done.sel(run="hilc", split="train", sim=0)) == 1
    os.remove(os.path.join(store, "pred", "c", "0", "0", "0", "0", "0"))
    with pytest.raises(DamagedUnitError, match="pred of run 'hilc', train sim 0") as exc:
        _ = cmbcube.open(store).pred.sel(run="hilc", split="train", sim=0, field="I").values
    assert "cmbcube ilc / predict" in str(exc.value)
