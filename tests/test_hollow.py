"""Issue 21, item 9: simulate's check for finished sims whose data files are gone covers every product the
store keeps (it looked at obs and cmb only, so a missing components or cosmo_params chunk was 'nothing to
do' while verify saw it): the sim is simulated again, to the same bytes."""
import glob
import os

import pytest

from cmbcube.stages.simulate import run as simulate
from helpers import small_recipe, zarr_files


@pytest.mark.parametrize("product", ["components", "noise", "cosmo_params", "cl_theory"])
def test_a_finished_sim_missing_any_product_is_simulated_again(product, tmp_path):
    store = str(tmp_path / "h.zarr")
    r = small_recipe(nside=8, splits={"train": 2, "valid": 0, "test": 0}, detectors=[143, 353])
    assert simulate(r, store, scheduler="synchronous", progress=False).ok
    before = zarr_files(store)
    victims = sorted(glob.glob(os.path.join(store, product, "c", "0", "1", "*")))   # train (split 0), sim 1
    assert victims
    for path in victims:
        if os.path.isdir(path):
            for root, _, files in os.walk(path):
                for name in files:
                    os.remove(os.path.join(root, name))
        else:
            os.remove(path)
    report = simulate(r, store, scheduler="synchronous", progress=False)
    assert report.ok and [tuple(w) for w in report.written] == [("train", 1)], report.written
    after = zarr_files(store)
    changed = [k for k in before if not k.endswith("zarr.json") and after.get(k) != before[k]]
    assert not changed, changed
