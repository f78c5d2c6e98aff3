"""Issue 21, items 5, 7, 10: what a user types or does to a store location ends in a clear message and
exit 2, no traceback, existing stores untouched.

- a YAML alias bomb (a recipe file, --set, check-recipe) is refused while loading, and every value echoed
  in a recipe error is bounded;
- a truncated per-array zarr.json: every writing stage names the file and refuses (exit 2), cmbcube.open
  reads the consolidated copy and warns, naming the file;
- a store folder that cannot be written (tried for real: root ignores modes, not an immutable folder),
  no loopback network for a local cluster, store names over NAME_MAX, a legal 250-byte store name;
- a killed `drop run`: open, stages and verify name the command that finishes it; the rerun does.
"""
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

import cmbcube
from cmbcube import cli, cube, recipe
from cmbcube.cube.drop import drop
from helpers import copy_store, small_recipe, zarr_files

ROOT = Path(__file__).resolve().parents[1]


def _bomb(levels: int = 9, width: int = 9) -> str:
    """A flow sequence of ``levels`` nested anchors, each ``width`` aliases of the previous: width^levels values."""
    text = "[&a0 [" + ", ".join(["lol"] * width) + "]"
    for i in range(1, levels + 1):
        text += f", &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]"
    return text + "]"


def _fail(capsys, argv) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


# ----------------------------------------------------------------------------- item 5: alias bombs

def test_alias_bomb_refused_in_well_under_a_second_from_a_file_from_set_and_by_check_recipe(tmp_path, capsys):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(f"name: bomb\ndescription: {_bomb()}\n")            # 9^10 values once expanded
    plain = tmp_path / "plain.yaml"
    plain.write_text("name: plain\nnside: 8\nsplits: {train: 1}\ncluster: {kind: synchronous}\n")
    store = tmp_path / "s.zarr"
    for argv in (["check-recipe", str(bomb)],
                 ["simulate", str(bomb), "--store", str(store)],
                 ["check-recipe", str(plain), "--set", f"description={_bomb()}"],
                 ["simulate", str(plain), "--store", str(store), "--set",
                  f"cluster.slurm.job_extra_directives={_bomb()}"]):
        t0 = time.perf_counter()
        err = _fail(capsys, argv)
        assert time.perf_counter() - t0 < 1.0, argv
        assert "aliases" in err and "100,000" in err and len(err) < 600, err
    assert not store.exists()
    with pytest.raises(recipe.RecipeError, match="refers to itself"):
        recipe.parse_yaml("name: x\na: &a [1, *a]\n")                  # a recursive alias


def test_values_echoed_in_recipe_errors_are_bounded(tmp_path, capsys):
    """Values under the alias limit but long to print (9^4 x 9 = 59,049 values; megabytes of repr on the old
    code), long strings, keys and integers: every message stays short."""
    texts = {"aliases": f"description: [&a {_bomb(3)}, {', '.join(['*a'] * 8)}]",
             "string": "nside: '" + "x" * 100_000 + "'",
             "integer": "seed: " + "1" * 4000,
             "key": "splits: {" + "y" * 5000 + ": 1}",
             "section key": "cluster: {" + "z" * 5000 + ": 1}",
             "list": "detectors: [" + ", ".join(["143"] * 1000) + "]"}
    for what, text in texts.items():
        path = tmp_path / "r.yaml"
        path.write_text(f"name: t\n{text}\n")
        err = _fail(capsys, ["check-recipe", str(path)])
        assert "recipe error" in err and len(err) < 600, (what, len(err))
    err = _fail(capsys, ["check-recipe", str(path), "--set", "seed=" + "9" * 5000])      # past int's digit limit
    assert "5,000 digits" in err and len(err) < 600


# ----------------------------------------------------------------------------- item 7: truncated zarr.json

def test_truncated_array_metadata_stages_refuse_by_name_and_open_warns(tiny_store, tiny_recipe, tmp_path, capsys,
                                                                       caplog):
    store = copy_store(tiny_store, tmp_path)
    with open(os.path.join(store, "obs", "zarr.json"), "r+b") as fh:
        fh.truncate(100)
    before = zarr_files(store)
    recipe_file = tmp_path / "tiny.yaml"
    recipe_file.write_text(yaml.safe_dump(tiny_recipe.data))
    damaged = os.path.join(store, "obs", "zarr.json")
    for argv in (["simulate", str(recipe_file), "--store", store],
                 ["simulate", str(recipe_file), "--store", store, "--dry-run"],
                 ["preprocess", store, "--scheduler", "synchronous"],
                 ["ilc", store, "--method", "hilc", "--scheduler", "synchronous"],
                 ["analyze", store, "--scheduler", "synchronous"],
                 ["predict", store, "--run", "unet"],
                 ["train", store, "--epochs", "1"]):
        err = _fail(capsys, argv)
        assert damaged in err and "not valid JSON" in err and f"cmbcube verify {store}" in err, (argv, err)
    assert zarr_files(store) == before
    caplog.clear()
    ds = cmbcube.open(store)                                  # the consolidated copy still describes obs
    assert ds.obs.shape[0] == 3
    assert damaged in caplog.text and "consolidated copy" in caplog.text


# ----------------------------------------------------------------------------- item 10: the store's location

def _chattr(flag: str, path) -> bool:
    try:
        return subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0
    except OSError:
        return False


def test_unwritable_location_is_refused_before_any_work_even_for_root(tiny_store, tiny_recipe, tmp_path, capsys):
    """An immutable folder (chattr +i) refuses every process, root included, as a read-only mount does;
    os.access says yes to root."""
    folder = tmp_path / "locked"
    folder.mkdir()
    store = copy_store(tiny_store, tmp_path)
    cube.clear_done(store, "test", 1)                         # a sim to do: the old code computed it
    if not _chattr("+i", folder):
        pytest.skip("chattr +i is not available here (needs root and a file system with attributes)")
    try:
        assert _chattr("+i", store)
        before = zarr_files(store)
        recipe_file = tmp_path / "tiny.yaml"
        recipe_file.write_text(yaml.safe_dump(tiny_recipe.data))
        t0 = time.perf_counter()
        err = _fail(capsys, ["simulate", str(recipe_file), "--store", str(folder / "new.zarr")])
        assert str(folder) in err and "Operation not permitted" in err and "nothing was written" in err
        err = _fail(capsys, ["simulate", str(recipe_file), "--store", store])
        assert store in err and "Operation not permitted" in err
        err = _fail(capsys, ["preprocess", store, "--scheduler", "synchronous"])
        assert store in err and "Operation not permitted" in err
        assert time.perf_counter() - t0 < 5
        assert os.listdir(folder) == [] and zarr_files(store) == before
    finally:
        _chattr("-i", folder)
        _chattr("-i", store)


def _unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _unshare_works(), reason="unshare -n (a network namespace without loopback) needs root")
def test_no_loopback_network_is_a_clear_error_naming_synchronous_and_leaves_no_store(tmp_path):
    recipe_file = tmp_path / "local.yaml"
    recipe_file.write_text("name: offline\nnside: 8\nsplits: {train: 1}\ndetectors: [143]\ncluster: {kind: local}\n")
    store = tmp_path / "offline.zarr"
    t0 = time.perf_counter()
    done = subprocess.run(["unshare", "-n", sys.executable, "-c",
                           "import sys; from cmbcube.cli import main; sys.exit(main(sys.argv[1:]))",
                           "simulate", str(recipe_file), "--store", str(store)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2, done.stderr
    assert "loopback" in done.stderr and "cluster.kind: synchronous" in done.stderr
    assert "Traceback" not in done.stderr and time.perf_counter() - t0 < 20
    assert not store.exists() and os.listdir(tmp_path) == ["local.yaml"]


def test_a_cluster_that_fails_to_start_leaves_no_store_behind(tmp_path, monkeypatch):
    """Whatever stops a local cluster after the store was created (here distributed's own error, raised
    by a stand-in): a ClusterError naming the cause and the offline alternative; the new store is removed."""
    import distributed

    from cmbcube.compute import cluster
    from cmbcube.stages.simulate import run as simulate

    def refuse(*args, **kwargs):
        raise RuntimeError("Cluster failed to start: Timed out trying to connect to tcp://127.0.0.1:1 after 30 s")
    monkeypatch.setattr(distributed, "LocalCluster", refuse)
    r = small_recipe(nside=8, sky_nside=16, splits={"train": 1, "valid": 0, "test": 0}, detectors=[143],
                     cmb__enabled=False, foregrounds__model="none", keep=["cmb"], cluster={"kind": "local"})
    store = tmp_path / "s.zarr"
    with pytest.raises(cluster.ClusterError, match="synchronous") as caught:
        simulate(r, str(store), progress=False)
    assert "Timed out" in str(caught.value) and "was not created" in str(caught.value)
    assert os.listdir(tmp_path) == []


def _noise_only(name="n"):
    return small_recipe(name=name, nside=8, sky_nside=16, splits={"train": 1, "valid": 0, "test": 0},
                        detectors=[143], cmb__enabled=False, foregrounds__model="none", keep=["cmb"])


def test_store_names_over_the_file_system_limit_are_refused_and_a_250_byte_name_works(tmp_path, capsys):
    from cmbcube.cube import analysis_io
    from cmbcube.stages.simulate import run as simulate
    recipe_file = tmp_path / "n.yaml"
    recipe_file.write_text(yaml.safe_dump(_noise_only().data))
    name_max = os.pathconf(tmp_path, "PC_NAME_MAX")
    too_long = str(tmp_path / ("a" * (name_max + 45)))
    for argv in (["simulate", str(recipe_file), "--store", too_long],
                 ["simulate", str(recipe_file), "--store", too_long, "--dry-run"],
                 ["check-recipe", str(recipe_file), "--store", too_long]):
        err = _fail(capsys, argv)
        assert f"allows {name_max} per name" in err and f"at most {name_max - 5} bytes" in err
    err = _fail(capsys, ["simulate", str(recipe_file), "--store", str(tmp_path / ("b" * 300) / "s.zarr")])
    assert "folder name" in err
    legal = str(tmp_path / ("c" * (name_max - 10) + ".zarr"))        # 250 bytes: the old code refused it
    assert simulate(_noise_only(), legal, scheduler="synchronous", progress=False).ok
    from cmbcube.cube.verify import verify
    assert verify(legal, progress=False).ok
    assert sorted(os.listdir(tmp_path)) == sorted(["n.yaml", os.path.basename(legal)])   # no temporary left
    assert len(os.path.basename(analysis_io.namaster_dir(legal))) <= name_max
    assert len(cube.runs_dir(legal).name) <= name_max


# ----------------------------------------------------------------------------- item 10: a killed drop run

@pytest.fixture
def three_runs(tiny_store, tmp_path):
    store = copy_store(tiny_store, tmp_path)
    rng = np.random.default_rng(2)
    for name in ("alpha", "beta", "gamma"):
        irun = cube.ensure_run(store, name, "fake", {"name": name}, 0.0)
        cube.write_prediction(store, irun, "test", 0, rng.normal(size=(3, 12 * 16 ** 2)).astype(np.float32))
        cube.write_losses(store, irun, [1.0 + irun], [2.0 + irun])
    cube.consolidate(store)
    return store


def test_killed_run_removal_readers_and_stages_name_the_command_that_finishes_it(three_runs, tmp_path, capsys,
                                                                               monkeypatch):
    store = three_runs
    reference = copy_store(store, tmp_path, "reference.zarr")
    drop(reference, "run", "alpha")
    from cmbcube.cube import runs
    original, calls = runs.remove_run_slot, []

    def killed_on_the_third(array_dir, index):
        calls.append(array_dir)
        if len(calls) == 3:                   # two arrays moved and resized, the others not: the run axis disagrees
            raise KeyboardInterrupt("killed")
        original(array_dir, index)
    monkeypatch.setattr(runs, "remove_run_slot", killed_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        drop(store, "run", "alpha")
    monkeypatch.undo()
    finish = f"cmbcube drop {store} run --run alpha"
    with pytest.raises(cube.StoreError, match="interrupted") as caught:
        cmbcube.open(store)                   # was xarray's "conflicting sizes for dimension 'run'"
    assert f"drop({store!r}, 'run', run='alpha')" in str(caught.value)    # Python words; the CLI's below
    for argv in (["info", store], ["analyze", store, "--scheduler", "synchronous"],
                 ["ilc", store, "--method", "hilc", "--scheduler", "synchronous"], ["preprocess", store]):
        assert finish in _fail(capsys, argv), argv
    assert cli.main(["verify", store, "--no-progress"]) == 1
    assert finish in capsys.readouterr().out
    assert cli.main(["drop", store, "run", "--run", "alpha"]) == 0
    capsys.readouterr()
    assert list(cmbcube.open(store).run.values) == ["beta", "gamma"]
    assert zarr_files(store) == zarr_files(reference)
