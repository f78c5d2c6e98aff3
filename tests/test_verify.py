"""cmbcube verify: damaged chunks are found, cleared, and a rerun rebuilds exactly them."""
import os

import numpy as np
import pytest

from cmbcube import cli, cube
from cmbcube.cube.verify import verify
from cmbcube.stages.simulate import run as simulate
from helpers import copy_store, flip_bit, shard_path, tsz_recipe, zarr_files


def _recipe():
    # 545 GHz has no Q/U: its absent maps must not count as missing
    return tsz_recipe(splits={"train": 2, "valid": 1, "test": 1}, detectors=[100, 143, 545])


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    path = tmp_path_factory.mktemp("verify") / "clean.zarr"
    report = simulate(_recipe(), str(path), scheduler="synchronous", progress=False)
    assert report.ok and len(report.written) == 4
    return str(path)


@pytest.fixture
def store(clean, tmp_path):
    return copy_store(clean, tmp_path, "work.zarr")


def test_clean_store_verifies(clean, capsys):
    before = zarr_files(clean)
    assert cli.main(["verify", clean, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "4 finished unit(s)" in out and "no damage found" in out
    assert zarr_files(clean) == before                       # verify never writes without --clear


def test_corrupted_and_missing_shards_are_cleared_and_rebuilt_bit_identical(clean, store, capsys):
    flip_bit(shard_path(store, "obs", "train", 1), 100)    # a byte of the first map's data
    os.remove(shard_path(store, "cmb", "test", 0))
    assert cli.main(["verify", store, "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "damaged sims" in out and ": 2" in out
    assert "train  1    obs" in out and "checksum mismatch" in out
    assert "test   0    cmb" in out and "missing" in out
    assert cube.done_flags(store).sum() == 4                 # without --clear nothing changes

    assert cli.main(["verify", store, "--clear", "--no-progress"]) == 1
    done = cube.done_flags(store)
    assert not done[0, 1] and not done[2, 0] and done.sum() == 2
    assert cube.pending(store) == [("train", 1), ("test", 0)]

    report = simulate(_recipe(), store, scheduler="synchronous", progress=False)
    assert sorted(report.written) == [("test", 0), ("train", 1)]
    assert zarr_files(store) == zarr_files(clean)           # every byte as in a clean run
    assert cli.main(["verify", store, "--no-progress"]) == 0


def test_truncated_shard_bad_index_and_unsharded_chunk(store):
    noise = shard_path(store, "noise", "train", 0)
    with open(noise, "r+b") as f:                           # cut the shard in half: index gone
        f.truncate(os.path.getsize(noise) // 2)
    comps = shard_path(store, "components", "valid", 0)
    flip_bit(comps, os.path.getsize(comps) - 10)            # inside the shard index
    flip_bit(shard_path(store, "cosmo_params", "test", 0), 3)  # an unsharded chunk
    report = verify(store, progress=False)
    problems = {(d.unit, d.product): d.problem for d in report.damage}
    assert set(problems) == {(("train", 0), "noise"), (("valid", 0), "components"), (("test", 0), "cosmo_params")}
    assert "checksum" in problems[(("valid", 0), "components")]
    assert "checksum" in problems[(("test", 0), "cosmo_params")]
    assert "truncated" in problems[(("train", 0), "noise")] or "checksum" in problems[(("train", 0), "noise")]


def test_map_missing_from_a_shard_is_detected(store):
    """A shard whose index lost a map that must exist (has_field) is damage; absent pairs are not."""
    import struct

    import google_crc32c
    path = shard_path(store, "obs", "test", 0)
    blob = bytearray(open(path, "rb").read())
    n = 3 * 3
    index = np.frombuffer(bytes(blob[-(16 * n + 4):-4]), dtype="<u8").reshape(n, 2).copy()
    assert (index[7:] == 2 ** 64 - 1).all()                  # 545 Q/U: never written
    index[4] = 2 ** 64 - 1                                    # drop 143 GHz Q from the index
    raw = index.tobytes()
    blob[-(16 * n + 4):] = raw + struct.pack("<I", google_crc32c.value(raw))
    open(path, "wb").write(bytes(blob))
    report = verify(store, progress=False)
    assert [(d.unit, d.product) for d in report.damage] == [(("test", 0), "obs")]
    assert "detector 143, field Q missing" in report.damage[0].problem


def test_products_filter_and_unknown_product(store, capsys):
    os.remove(shard_path(store, "cmb", "train", 0))
    assert verify(store, products=["obs"], progress=False).ok
    assert not verify(store, products=["cmb"], progress=False).ok
    assert cli.main(["verify", store, "--products", "obs,bogus", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "bogus" in err and "allowed" in err and "cmb" in err


def test_run_predictions_and_analysis_are_checked_and_cleared(store, capsys):
    from cmbcube.cube import analysis_io
    irun = cube.ensure_run(store, "fake", "fake", {"a": 1}, 0.0)
    npix = 12 * 8 ** 2
    for split, sim in (("train", 0), ("train", 1), ("test", 0)):
        cube.write_prediction(store, irun, split, sim, np.ones((3, npix), np.float32) * sim)
    analysis_io.ensure_analysis_arrays(store, 3)
    import zarr
    group = zarr.open_group(store, mode="r+")
    for i, sim in ((0, 0), (0, 1)):
        group["metrics"][irun, i, sim] = np.ones(group["metrics"].shape[3:])
        group["spectra"][irun, i, sim] = np.ones(group["spectra"].shape[3:])
        group["analysis_done"][irun, i, sim] = 1
    cube.consolidate(store)
    assert verify(store, progress=False).ok
    [(_, pred_file)] = cube.unit_files(store, cube.fresh_group(store)["pred"], "pred", (irun, 2, 0))
    flip_bit(pred_file, 50)
    [(_, metrics_file)] = cube.unit_files(store, cube.fresh_group(store)["metrics"], "metrics", (irun, 0, 1))
    os.remove(metrics_file)
    assert cli.main(["verify", store, "--clear", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "damaged predictions" in out and "fake  test   0    pred" in out
    assert "damaged analyses" in out and "fake  train  1    metrics" in out
    assert cube.run_pending(store, irun, ("train", "test")) == [("test", 0)]   # pred_done cleared: exactly it
    done = np.asarray(zarr.open_group(store, mode="r")["analysis_done"][irun])
    assert done[0, 0] == 1 and done[0, 1] == 0                # the analysis redone, its prediction kept
    assert cube.pred_done_count(store, irun, ("train",)) == 2


def test_stale_consolidated_metadata_is_reported_and_fixed(store, capsys):
    cube.create_array(store, "extra", (4,), ("extra",), dtype="f8")   # not consolidated
    report = verify(store, progress=False)
    assert [d.level for d in report.damage] == ["metadata"] and "out of date" in report.damage[0].problem
    assert cli.main(["verify", store, "--clear", "--no-progress"]) == 1
    assert verify(store, progress=False).ok


def test_corrupted_done_flag_is_cleared_and_the_sim_rebuilt(clean, store):
    flip_bit(os.path.join(store, "sim_done", "c", "0", "0"), 0)
    report = verify(store, clear=True, progress=False)
    assert [(d.unit, d.product) for d in report.damage] == [(("train", 0), "sim_done")]
    assert report.damage[0].problem.startswith("done-flag unreadable")
    assert cube.pending(store) == [("train", 0)]
    assert simulate(_recipe(), store, scheduler="synchronous", progress=False).written == [("train", 0)]
    assert zarr_files(store) == zarr_files(clean)


def test_compressed_store_without_checksums_is_decoded(tmp_path):
    recipe = tsz_recipe(splits={"train": 1, "valid": 0, "test": 1}, detectors=[100], storage__compression="zstd",
                        storage__checksum=False)
    path = str(tmp_path / "z.zarr")
    simulate(recipe, path, scheduler="synchronous", progress=False)
    report = verify(path, progress=False)
    assert report.ok and "obs" in report.unchecked_checksums
    shard = shard_path(path, "obs", "train", 0)
    blob = bytearray(open(shard, "rb").read())
    blob[3:20] = b"\xff" * 17                                 # inside the first zstd frame
    open(shard, "wb").write(bytes(blob))
    report = verify(path, progress=False)
    assert [(d.unit, d.product) for d in report.damage] == [(("train", 0), "obs")]
    assert "does not decode" in report.damage[0].problem
