"""Disk full and permission denied on the store path: exit 2, the path and the OS error named,
no half-written store or metadata left behind."""
import errno
import os
import stat

import numpy as np
import pytest
import zarr.storage._local as zarr_local

from cmbcube import cli, cube
from cmbcube.stages.simulate import run as simulate
from helpers import copy_store, tsz_recipe, zarr_files

RECIPE = """name: errors
seed: 3
nside: 8
sky_nside: 16
splits: {train: 2, test: 1}
detectors: [100, 143]
foregrounds: {components: [tsz]}
keep: [cmb, noise]
cluster: {kind: synchronous}
"""


def _permissions_enforced() -> bool:
    """False for root with CAP_DAC_OVERRIDE (the usual root): it writes into read-only folders."""
    import tempfile
    if os.geteuid() != 0:
        return True
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o555)
        try:
            open(os.path.join(folder, "probe"), "w").close()
        except PermissionError:
            return True
        finally:
            os.chmod(folder, 0o755)
    return False


needs_permissions = pytest.mark.skipif(not _permissions_enforced(), reason="root ignores file permissions")


def _recipe():
    return tsz_recipe(seed=3, splits={"train": 2, "test": 1}, detectors=[100, 143], keep=["cmb", "noise"])


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("errors") / "clean.zarr")
    assert simulate(_recipe(), path, scheduler="synchronous", progress=False).ok
    return path


@pytest.fixture
def store(clean, tmp_path):
    return copy_store(clean, tmp_path, "store.zarr")


@pytest.fixture
def recipe_file(tmp_path):
    path = tmp_path / "errors.yaml"
    path.write_text(RECIPE)
    return str(path)


def failing_writes(monkeypatch, code, when):
    """Every zarr write of a key whose path contains ``when`` raises OSError(code)."""
    original = zarr_local._put

    def put(path, value, exclusive=False):
        if when in str(path):
            raise OSError(code, os.strerror(code), str(path))
        return original(path, value, exclusive=exclusive)
    monkeypatch.setattr(zarr_local, "_put", put)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_failure_while_creating_leaves_nothing(tmp_path, recipe_file, monkeypatch, capsys, code):
    parent = tmp_path / "out"
    parent.mkdir()
    failing_writes(monkeypatch, code, "/cmb/")           # half-way through the template's metadata
    target = str(parent / "new.zarr")
    assert cli.main(["simulate", recipe_file, "--store", target, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert target in err and os.strerror(code) in err and "nothing was created" in err
    assert os.listdir(parent) == []                        # no store, no temporary folder


@needs_permissions
def test_read_only_parent_directory(tmp_path, recipe_file, capsys):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        target = str(parent / "new.zarr")
        assert cli.main(["simulate", recipe_file, "--store", target, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert target in err and "Permission denied" in err
        assert os.listdir(parent) == []
    finally:
        parent.chmod(0o755)


@needs_permissions
def test_read_only_store_is_untouched(store, capsys):
    before = zarr_files(store)
    modes = {}
    for root, dirs, files in os.walk(store):
        for name in dirs + files:
            full = os.path.join(root, name)
            modes[full] = os.stat(full).st_mode
            os.chmod(full, modes[full] & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    os.chmod(store, 0o555)
    try:
        assert cli.main(["preprocess", store, "--scheduler", "synchronous"]) == 2
        err = capsys.readouterr().err
        assert store in err and "Permission denied" in err
    finally:
        os.chmod(store, 0o755)
        for full, mode in modes.items():
            os.chmod(full, mode)
    assert zarr_files(store) == before


def test_disk_full_while_writing_statistics_leaves_the_store_as_it_was(store, monkeypatch, capsys):
    before = zarr_files(store)
    failing_writes(monkeypatch, errno.ENOSPC, "stats_cmb")   # stats_obs and stat already written by then
    assert cli.main(["preprocess", store, "--scheduler", "synchronous"]) == 2
    err = capsys.readouterr().err
    assert store in err and "No space left on device" in err and "metadata was left as it was" in err
    assert zarr_files(store) == before                      # the new arrays and the root metadata rolled back
    monkeypatch.undo()
    assert cli.main(["preprocess", store, "--scheduler", "synchronous"]) == 0   # space freed: it works


def test_disk_full_while_adding_a_run(store, monkeypatch):
    before = zarr_files(store)
    failing_writes(monkeypatch, errno.ENOSPC, "pred_done")   # after run, run_method, ..., pred exist
    with pytest.raises(cube.StoreError, match="No space left on device"):
        cube.ensure_run(store, "nilc", "nilc", {"a": 1}, 20.6)
    assert zarr_files(store) == before
    monkeypatch.undo()
    assert cube.ensure_run(store, "nilc", "nilc", {"a": 1}, 20.6) == 0


def test_disk_full_in_consolidation_keeps_the_old_metadata(store, monkeypatch):
    before = zarr_files(store)
    failing_writes(monkeypatch, errno.ENOSPC, os.path.join(store, "zarr.json"))
    with pytest.raises(cube.StoreError, match="consolidated metadata"):
        cube.consolidate(store)
    assert zarr_files(store) == before


def test_disk_full_in_a_sim_task_leaves_no_flag_and_a_rerun_completes(clean, store, monkeypatch, capsys, tmp_path):
    cube.clear_done(store, "train", 1)
    os.remove(os.path.join(store, "noise", "c", "0", "1", "0", "0", "0"))
    failing_writes(monkeypatch, errno.ENOSPC, os.path.join("noise", "c", "0", "1"))
    report = simulate(_recipe(), store, scheduler="synchronous", progress=False)
    assert [f[:2] for f in report.failed] == [("train", 1)] and "No space left on device" in report.failed[0][2]
    assert not cube.done_flags(store)[0, 1]                 # data without its flag is never trusted
    monkeypatch.undo()
    assert simulate(_recipe(), store, scheduler="synchronous", progress=False).written == [("train", 1)]
    assert zarr_files(store) == zarr_files(clean)
    assert np.all(cube.done_flags(store) == cube.done_flags(clean))
