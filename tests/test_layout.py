"""The product table (cmbcube.cube.layout.PRODUCTS) is the layout: the template, store_layout.md,
drop and verify follow it, and a product registered in it is handled by drop without other code."""
import re
from pathlib import Path

import numpy as np
import pytest

from cmbcube import cube
from cmbcube.cube import layout
from cmbcube.cube.drop import drop
from cmbcube.errors import InputError
from cmbcube.stages.simulate import run as simulate
from helpers import tsz_recipe, zarr_files

DOC = Path(__file__).resolve().parent.parent / "store_layout.md"


def _documented_dims() -> dict:
    """name -> dims of every row of store_layout.md's data-variable tables."""
    out = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"\| `([a-z_]+)`(?:, `([a-z_]+)`)? \| ([a-z_, ]+) \|", line)
        if m:
            dims = tuple(d.strip() for d in m.group(3).split(","))
            for name in filter(None, (m.group(1), m.group(2))):
                out[name] = dims
    return out


def test_the_template_is_the_tables_sim_products_as_store_layout_md_documents_them():
    recipe = tsz_recipe(keep=["components", "noise"])
    ds, encoding = cube.template(recipe)
    expected = {name for name, p in layout.PRODUCTS.items() if p.flag == "sim_done" for name in p.arrays}
    assert set(ds.data_vars) == expected | {"sim_done"}
    documented = _documented_dims()
    for name, var in ds.data_vars.items():
        assert var.dims == layout.array_spec(name).dims == documented[name], name
        spec = layout.array_spec(name)
        unit = (1, 1) + var.shape[2:]                      # one shard (or chunk) per (split, sim)
        assert encoding[name].get("shards", encoding[name]["chunks"]) == unit, name
        if spec.maps:                                      # one inner chunk per map
            assert encoding[name]["chunks"] == (1,) * (var.ndim - 1) + (12 * 8 ** 2,)
    # every product array the table describes along a unit axis is documented with the same dims
    for name in layout.unit_products():
        assert documented[name] == layout.array_spec(name).dims, name


def test_a_product_registered_in_the_table_is_dropped_by_drop(tmp_path):
    store = str(tmp_path / "toy.zarr")
    recipe = tsz_recipe(splits={"train": 1, "valid": 0, "test": 0}, detectors=[143])
    assert simulate(recipe, store, scheduler="synchronous", progress=False).ok
    with pytest.raises(InputError, match="unknown product 'toy'"):
        drop(store, "toy")
    layout.PRODUCTS.register("toy", layout.Product(
        "a toy mask", "a test", {"toy_mask": layout.Array(("pixel",), "f4", "toy")}, coords=("toy_axis",)))
    try:
        before = zarr_files(store)
        cube.create_array(store, "toy_mask", (12 * 8 ** 2,), ("pixel",), dtype="f4")
        cube.create_array(store, "toy_axis", (2,), ("toy_axis",), dtype="i8", fill_value=0)
        cube.consolidate(store)
        assert {"toy_mask", "toy_axis"} <= set(cube.open_dataset(store).variables)
        report = drop(store, "toy")
        assert report.removed == ["toy (toy_mask, toy_axis)"]
        after = zarr_files(store)
        assert set(after) == {k for k in before if k != "zarr.json"} | {"zarr.json"}
        assert all(after[k] == before[k] for k in after if k != "zarr.json")   # the rest byte for byte
        assert "toy_mask" not in cube.open_dataset(store).variables
        with pytest.raises(cube.StoreError, match="no toy in this store"):
            drop(store, "toy")
    finally:
        layout.PRODUCTS.unregister("toy")
    with pytest.raises(InputError, match="allowed: obs, cmb, components, noise, stats, pred, analysis, run$"):
        drop(store, "toy")
    assert np.all(cube.done_flags(store)[0, :1])
