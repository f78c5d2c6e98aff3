"""cmbcube drop on Icechunk stores (and plain s3://): the store ends up holding what a local drop of the same
product leaves, in ONE commit named after the drop; an interrupted drop commits nothing; tags taken before
still read the dropped data; bad input exits 2 with the repository's files untouched and no new commit."""
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("icechunk")

import cmbcube
from cmbcube import cube
from cmbcube.cli import main
from cmbcube.cube import drop_remote, icechunk_store as ics, icechunk_versions
from cmbcube.cube.drop import drop
from cmbcube.stages.simulate import run as simulate
from helpers import moto_s3, tsz_recipe, zarr_files

RUNS = ("alpha", "beta", "gamma")
NPIX = 12 * 8 ** 2


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """An icechunk+file repository: 1 sim (cmb, components kept), three runs with predictions, losses and
    a checkpoint file each."""
    root = tmp_path_factory.mktemp("icedrop")
    store = f"icechunk+file://{root}/cube.ice"
    recipe = tsz_recipe(splits={"train": 1, "valid": 0, "test": 0}, detectors=[100, 143], keep=["cmb", "components"],
                        cmb__prior="fixed")
    assert simulate(recipe, store, scheduler="synchronous", progress=False).ok
    rng = np.random.default_rng(3)
    for name in RUNS:
        irun = cube.ensure_run(store, name, "fake", {"name": name}, 0.0)
        cube.write_prediction(store, irun, "train", 0, rng.normal(size=(3, NPIX)).astype(np.float32))
        cube.write_losses(store, irun, [1.0 + irun, 0.5], [2.0 + irun, 1.0])
        folder = cube.run_dir(store, name)
        folder.mkdir(parents=True)
        (folder / "epoch_0002.pt").write_bytes(rng.bytes(5_000))
    cube.consolidate(store)
    return root


@pytest.fixture
def ice(built, tmp_path):
    """A fresh copy of the repository (and its checkpoints folder) for one test: its store location."""
    shutil.copytree(built / "cube.ice", tmp_path / "cube.ice")
    shutil.copytree(built / "cube.ice.runs", tmp_path / "cube.ice.runs")
    return f"icechunk+file://{tmp_path}/cube.ice"


def local_copy(store, dest):
    """The branch tip of an Icechunk store written out as a local Zarr directory (consolidated), its
    checkpoints folder beside it: what a local drop is compared with."""
    import zarr
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync
    from zarr.storage import LocalStore

    source, target = ics.store_for(store), LocalStore(str(dest))

    async def copy():
        async for key in source.list():
            await target.set(key, await source.get(key, default_buffer_prototype()))
    sync(copy())
    zarr.consolidate_metadata(str(dest))
    shutil.copytree(cube.runs_dir(store), str(dest) + ".runs")
    return str(dest)


def history(store):
    return [s.message for s in ics.repository(store).ancestry(branch="main")]


def values(store, keys=None, **sel):
    ds = cmbcube.open(store)
    ds = ds.sel(**sel) if sel else ds
    return {k: ds[k].values.copy() for k in (keys or ds.variables)}


def assert_same(a, b):
    assert sorted(a) == sorted(b)
    for key in a:
        if a[key].dtype.kind == "f":
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        else:
            assert a[key].shape == b[key].shape and (a[key] == b[key]).all(), key


def assert_same_as_local(store, local, keys=None):
    assert sorted(cmbcube.open(store).variables) == sorted(cmbcube.open(local).variables)
    assert_same(values(local, keys), values(store, keys))
    ice_attrs, local_attrs = cube.read_attrs(store), cube.read_attrs(local)
    assert cube.dropped_products(store) == cube.dropped_products(local)
    assert {k: v for k, v in ice_attrs.items() if k != cube.DROPPED_ATTR} == \
        {k: v for k, v in local_attrs.items() if k != cube.DROPPED_ATTR}


def test_drop_run_is_one_commit_like_a_local_drop_and_a_tag_keeps_it(ice, tmp_path, capsys):
    icechunk_versions.tag(ice, "before")
    local = local_copy(ice, tmp_path / "local.zarr")
    before = {name: values(ice, run=name) for name in RUNS}
    commits = history(ice)
    assert main(["drop", ice, "run", "--run", "beta"]) == 0
    out = capsys.readouterr().out
    assert "dropped run 'beta'" in out and "expire_snapshots and garbage_collect" in out
    assert history(ice) == ["drop run --run beta"] + commits              # one commit, named
    drop(local, "run", "beta")
    assert_same_as_local(ice, local)
    assert list(cmbcube.open(ice).run.values) == ["alpha", "gamma"]
    for name in ("alpha", "gamma"):
        assert_same(before[name], values(ice, run=name))
    assert not cube.run_dir(ice, "beta").exists() and (cube.run_dir(ice, "gamma") / "epoch_0002.pt").exists()
    assert_same(before["beta"], values(ice + "@before", run="beta"))         # the tag still holds it
    assert cube.ensure_run(ice, "delta", "fake", {}, 0.0) == 2                 # appended after the others


def drop_killed_at_the_second_move(store, monkeypatch):
    """`drop STORE run --run alpha` interrupted (KeyboardInterrupt) as it moves the second run slot down."""
    calls = {"n": 0}
    original = drop_remote._move_slot

    def killed_on_second(*args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")
        original(*args)
    monkeypatch.setattr(drop_remote, "_move_slot", killed_on_second)
    with pytest.raises(KeyboardInterrupt):
        drop(store, "run", "alpha")
    monkeypatch.setattr(drop_remote, "_move_slot", original)


def test_killed_drop_commits_nothing(ice, monkeypatch):
    """A drop killed before its commit leaves the branch at the previous snapshot: atomic by construction."""
    tip, files = ics.snapshot_id(ice), zarr_files(ice.split("://", 1)[1])
    drop_killed_at_the_second_move(ice, monkeypatch)
    after = zarr_files(ice.split("://", 1)[1])
    # the branch and every file it references are as before; Icechunk may already have stored chunk
    # objects of the uncommitted session: unreferenced, removed by its garbage collection
    assert ics.snapshot_id(ice) == tip and all(after.get(k) == v for k, v in files.items())
    assert all(k.startswith("chunks/") for k in set(after) - set(files)), sorted(set(after) - set(files))
    assert list(cmbcube.open(ice).run.values) == list(RUNS) and cube.run_dir(ice, "alpha").is_dir()
    drop(ice, "run", "alpha")
    assert list(cmbcube.open(ice).run.values) == ["beta", "gamma"]


def test_whole_product_predictions_and_every_run_match_a_local_drop(ice, tmp_path):
    local = local_copy(ice, tmp_path / "local.zarr")
    commits = history(ice)
    for product, run in (("components", None), ("pred", "gamma"), ("run", None)):
        drop(ice, product, run)
        drop(local, product, run)
        assert_same_as_local(ice, local)
    assert history(ice) == ["drop run", "drop pred --run gamma", "drop components"] + commits
    ds = cmbcube.open(ice)
    assert "components" not in ds and "run" not in ds.variables and "cmb" in ds and "obs" in ds
    assert cube.dropped_products(ice) == ["components"]
    assert not cube.runs_dir(ice).exists()


def test_bad_input_exits_2_and_commits_nothing(ice, capsys):
    icechunk_versions.tag(ice, "v1")
    folder = ice.split("://", 1)[1]
    tip, files, commits = ics.snapshot_id(ice), zarr_files(folder), history(ice)
    checkpoints = zarr_files(str(cube.runs_dir(ice)))
    for args, words in ((["everything"], "obs, cmb, components, noise, stats, pred, analysis, run"),
                        (["run", "--run", "nosuch"], "alpha, beta, gamma"),
                        (["noise", "--run", "alpha"], "--run applies to"),
                        (["noise"], "no noise"),
                        (["obs"], "refusing to drop obs")):
        assert main(["drop", ice, *args]) == 2, args
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err, (args, err)
    assert main(["drop", ice + "@v1", "run", "--run", "beta"]) == 2
    assert "cannot be written" in capsys.readouterr().err
    assert main(["drop", f"icechunk+file://{Path(folder).parent}/nothing", "run"]) == 2
    assert "no such store" in capsys.readouterr().err
    assert ics.snapshot_id(ice) == tip and history(ice) == commits
    assert zarr_files(folder) == files and zarr_files(str(cube.runs_dir(ice))) == checkpoints


@pytest.fixture
def s3():
    """moto's S3 server on loopback with this test's own dummy credentials (restored after)."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    with moto_s3("drops", "drop-test") as (_, client):
        yield client


def test_plain_s3_drop_matches_a_local_drop_and_resumes_after_a_kill(ice, s3, tmp_path, monkeypatch):
    monkeypatch.setenv("CMBCUBE_RUNS_DIR", str(tmp_path / "runs"))
    local = local_copy(ice, tmp_path / "local.zarr")
    store = "s3://drops/cube.zarr"
    for root, _, files in os.walk(local):
        for name in files:
            full = os.path.join(root, name)
            s3.put_object(Bucket="drops", Key="cube.zarr/" + os.path.relpath(full, local), Body=open(full, "rb").read())
    shutil.copytree(cube.runs_dir(ice), cube.runs_dir(store))
    drop_killed_at_the_second_move(store, monkeypatch)
    with pytest.raises(cube.StoreError, match="interrupted"):
        cmbcube.open(store)                                            # readers refuse the half-moved axis
    assert main(["drop", store, "pred", "--run", "beta"]) == 2        # the interrupted removal comes first
    assert main(["drop", store, "run", "--run", "alpha"]) == 0        # a rerun finishes it
    drop(local, "run", "alpha")
    assert_same_as_local(store, local, ("run", "run_config", "pred", "pred_done", "loss_train", "loss_valid"))
    assert not cube.run_dir(store, "alpha").exists() and cube.run_dir(store, "beta").is_dir()
