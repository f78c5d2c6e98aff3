"""Resource limits at the edge (sizes checked before anything is created) and strict recipe parsing."""
import collections
import os
import subprocess
import sys

import pytest

from cmbcube import cli, recipe
from cmbcube.compute import limits
from helpers import small_recipe

HUGE = """name: huge
nside: 16
splits: {train: 1000000000}
cluster: {kind: synchronous}
"""
SMALL = """name: small
nside: 8
sky_nside: 16
splits: {train: 1, test: 1}
detectors: [100, 143]
foregrounds: {components: [tsz]}
cluster: {kind: synchronous}
"""


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "cmbcube.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


@pytest.mark.parametrize("command", ["check-recipe", "simulate"])
def test_a_billion_sims_is_refused_with_the_figures(tmp_path, command):
    path = tmp_path / "huge.yaml"
    path.write_text(HUGE)
    store = tmp_path / "huge.zarr"
    args = [command, str(path)] + (["--store", str(store)] if command == "simulate" else [])
    proc = _cli(*args, "--force-size")            # the layout's hard limit cannot be forced
    assert proc.returncode == 2, proc.stderr
    assert "1,000,000,000 sims in one split exceed the layout's limit of 200,000" in proc.stderr
    assert "store size: " in proc.stderr and "TB" in proc.stderr and "memory per worker" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.yaml"]      # nothing created


def test_soft_cap_is_refused_and_forced(tmp_path):
    path = tmp_path / "many.yaml"
    path.write_text(HUGE.replace("1000000000", str(limits.MAX_SIMS_PER_SPLIT + 1)))
    proc = _cli("check-recipe", str(path))
    assert proc.returncode == 2
    assert f"{limits.MAX_SIMS_PER_SPLIT + 1:,} sims in one split exceed the cap" in proc.stderr
    assert "--force-size runs it anyway" in proc.stderr
    proc = _cli("check-recipe", str(path), "--force-size")
    assert proc.returncode == 0, proc.stderr
    assert "warning (--force-size)" in proc.stdout and "store size:" in proc.stdout


def _tiny_disk(monkeypatch, free):
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(limits.shutil, "disk_usage", lambda path: usage(10 * free, 9 * free, free))


def test_store_larger_than_the_free_disk_is_refused_then_forced(tmp_path, monkeypatch, capsys):
    path = tmp_path / "small.yaml"
    path.write_text(SMALL)
    store = tmp_path / "small.zarr"
    plan = limits.simulate_plan(recipe.load(path))
    _tiny_disk(monkeypatch, plan.store_bytes // 2)
    assert cli.main(["check-recipe", str(path), "--store", str(store)]) == 2
    err = capsys.readouterr().err
    assert f"needs {limits.human(plan.store_bytes + plan.metadata_bytes)} on disk but {tmp_path} has " \
           f"{limits.human(plan.store_bytes // 2)} free" in err
    assert cli.main(["simulate", str(path), "--store", str(store), "--no-progress"]) == 2
    assert "simulate refused before creating anything" in capsys.readouterr().err
    assert not store.exists()
    # the deliberate case: forced, with the problem logged, and the store is written
    assert cli.main(["simulate", str(path), "--store", str(store), "--no-progress", "--force-size"]) == 0
    assert store.exists()
    # a finished store adds nothing: nothing to check against the disk
    _tiny_disk(monkeypatch, 1)
    assert cli.main(["simulate", str(path), "--store", str(store), "--no-progress"]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_memory_per_worker_is_checked_against_the_workers_limit(monkeypatch):
    r = small_recipe(nside=1024, splits={"train": 1}, cluster={"kind": "local", "workers": 2, "memory_limit": "1GB"})
    plan = limits.simulate_plan(r)
    assert plan.worker_bytes > 2 ** 30
    with pytest.raises(limits.LimitError, match=r"one task needs ~.* of memory but a worker may use 953.7 MB "
                                                r"\(cluster.memory_limit 1GB\)"):
        limits.check_simulate(r, None)
    assert limits.check_simulate(r, None, force=True)[1]           # forced: reported, not raised
    # the estimate follows the sky model: measured ~460 MB peak for nside 64 with every product kept
    assert 350 * 2 ** 20 < limits.simulate_plan(small_recipe(nside=64)).worker_bytes < 560 * 2 ** 20


def test_duplicate_keys_are_refused_naming_key_line_and_file(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("name: dup\nnside: 16\nsplits: {train: 2}\nnside: 32\n")
    with pytest.raises(recipe.RecipeError) as err:
        recipe.load(path)
    assert str(err.value) == f"{path}: line 4, column 1: duplicate key 'nside' (first given on line 2)"
    path.write_text("name: dup\ninstrument:\n  beams: cmb-ml\n  pixel_window: true\n  beams: planck2018\n")
    with pytest.raises(recipe.RecipeError, match=r"dup.yaml: line 5, column 3: duplicate key 'beams' "
                                                 r"\(first given on line 3\)"):
        recipe.load(path)
    path.write_text("name: dup\nsplits: {train: 2, train: 3}\n")
    with pytest.raises(recipe.RecipeError, match="duplicate key 'train'"):
        recipe.load(path)


def test_undecodable_or_malformed_recipes_name_the_file(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\u00e9\nnside: 16\n".encode("latin-1"))
    assert cli.main(["check-recipe", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: not UTF-8 text (byte 0xe9 at offset 9, line 1)" in err
    path = tmp_path / "broken.yaml"
    path.write_text("name: [broken\n")
    with pytest.raises(recipe.RecipeError, match=r"broken.yaml: line 2, column 1: .*not valid YAML"):
        recipe.load(path)
    path.write_text("- a\n- b\n")
    with pytest.raises(recipe.RecipeError, match="broken.yaml: a recipe is a YAML mapping"):
        recipe.load(path)


def test_metadata_of_a_big_store_is_built_without_a_graph_per_sim(tmp_path):
    """20,000 sims (the cap): the empty store is created from one Dask chunk per array."""
    from cmbcube import cube
    r = small_recipe(splits={"train": limits.MAX_SIMS_PER_SPLIT, "valid": 0, "test": 0})
    ds, encoding = cube.template(r)
    assert all(v.data.npartitions == 1 for v in ds.data_vars.values())
    assert encoding["obs"]["shards"][:2] == (1, 1) and encoding["sim_done"]["chunks"] == (1, 1)


def test_ilc_refuses_predictions_larger_than_the_free_disk_before_adding_the_run(tmp_path, monkeypatch, capsys):
    from cmbcube import cube
    store = str(tmp_path / "ilc.zarr")
    r = small_recipe(nside=16, splits={"train": 0, "valid": 0, "test": 1}, detectors=[100, 143, 217],
                     foregrounds__components=["tsz"], keep=["cmb"])
    from cmbcube.stages.simulate import run as simulate
    assert simulate(r, store, scheduler="synchronous", progress=False).ok
    need, files = limits.prediction_bytes(store, 1)
    assert need == 3 * (12 * 16 ** 2 * 4 + 20) + 5 and files == 2
    _tiny_disk(monkeypatch, need // 2)
    args = ["ilc", store, "--method", "hilc", "--detectors", "100,143,217", "--scheduler", "synchronous",
            "--no-progress"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "ilc hilc refused before creating anything" in err and f"has {limits.human(need // 2)} free" in err
    assert "run" not in cube.read_group(store).array_keys()             # the run was not added
    assert cli.main(args + ["--force-size"]) == 0
    assert "cleaned 1 sim(s)" in capsys.readouterr().out


def test_ingest_refuses_a_tree_larger_than_the_free_disk(tmp_path, monkeypatch, capsys):
    from cmbcube.testing import make_example_tree
    tree = tmp_path / "tree"
    make_example_tree(tree, nside=16, splits={"train": 1, "valid": 1, "test": 1}, seed=3)
    store = tmp_path / "ingested.zarr"
    _tiny_disk(monkeypatch, 1000)
    args = ["ingest-cmbml", str(tree), "--store", str(store), "--scheduler", "synchronous", "--no-progress"]
    assert cli.main(args) == 2
    assert "ingest-cmbml refused before creating anything" in capsys.readouterr().err
    assert not store.exists()
    assert cli.main(args + ["--force-size"]) == 0 and store.exists()


def test_component_maps_are_counted_for_both_embedded_skies():
    """The size estimate counts the kept component maps whichever embedded Galaxy the recipe uses
    (the component axis is foregrounds.component_names for both synthetic skies)."""
    from cmbcube.science import foregrounds
    sizes = {}
    for model in ("synthetic", "synthetic-gaussian"):
        r = small_recipe(foregrounds__model=model, keep=["cmb", "components"])
        assert foregrounds.component_names(r["foregrounds"]) != []
        sizes[model] = limits.simulate_plan(r).store_bytes
    without = limits.simulate_plan(small_recipe(keep=["cmb"])).store_bytes
    assert sizes["synthetic"] == sizes["synthetic-gaussian"] > without
