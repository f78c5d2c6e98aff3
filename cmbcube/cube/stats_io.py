"""The normalisation statistics in the store (``stats_obs``, ``stats_cmb``) and the maps they are computed from.

``cmbcube preprocess`` computes them (:mod:`cmbcube.stages.preprocess`); this module is the only
place that knows their names, dims and attributes.
"""
from __future__ import annotations

import datetime
import json

import numpy as np

from cmbcube import cube

LONG_NAME = "normalisation statistics over pixels and sims (NaN for absent detector/field pairs)"


def finished_sims(ds, split: str) -> np.ndarray:
    """Indices of the finished sims of ``split`` in an open cube (xarray Dataset)."""
    return np.nonzero(ds.sim_done.sel(split=split).values.astype(bool))[0]


def up_to_date(ds, split: str, sims: np.ndarray) -> bool:
    """Whether the stored statistics were computed over exactly these sims of ``split``."""
    previous = ds.get("stats_obs")
    return previous is not None and json.loads(previous.attrs.get("sims", "[]")) == sims.tolist() \
        and previous.attrs.get("split") == split


def split_maps(ds, split: str, sims: np.ndarray):
    """Lazy (dask) obs (sim, detector, field, pixel) and cmb (sim, field, pixel) of these sims, and the
    (detector, field) has_field mask."""
    obs = ds.obs.sel(split=split).isel(sim=sims).data
    cmb = ds.cmb.sel(split=split).isel(sim=sims).data
    return obs, cmb, ds.has_field.values


def write_stats(store: str, ds, split: str, sims: np.ndarray, names, stats_obs: dict, stats_cmb: dict,
                histogram_bins: int) -> None:
    """Store the statistics (``names`` along the ``stat`` axis) with the split, sims and recipe they came from."""
    import xarray as xr
    attrs = {"split": split, "sims": json.dumps(sims.tolist()), "n_sims": int(sims.size),
             "recipe_hash": ds.attrs.get("recipe_hash", ""), "histogram_bins": histogram_bins,
             "computed": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "long_name": LONG_NAME}
    out = xr.Dataset(
        {"stats_obs": (("stat", "detector", "field"), np.stack([stats_obs[s] for s in names]), attrs),
         "stats_cmb": (("stat", "field"), np.stack([stats_cmb[s] for s in names]), attrs)},
        coords={"stat": np.array(names, dtype=object)})
    cube.write_variables(store, out)


def load_stats(store_or_ds):
    """The stored statistics (an xarray Dataset with stats_obs, stats_cmb), or None before preprocess."""
    ds = cube.open_dataset(store_or_ds) if isinstance(store_or_ds, str) else store_or_ds
    if "stats_obs" not in ds:
        return None
    return ds[["stats_obs", "stats_cmb"]].load()
