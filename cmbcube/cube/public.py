"""What ``cmbcube.open`` returns: the store's lazy xarray Dataset, made safe to read by hand.

On top of :func:`cmbcube.cube.opener.open_dataset` (guarded reads):

- **whole units**: the store is opened with the guard's ``consistent`` mode, so a sim (or a run's
  prediction or analysis of a sim) reads complete or as NaN, never in part, even while a stage writes
  it: each unit's done-flag is read at the first read touching the unit and holds for the Dataset's
  life (reopen to see units finished since);
- **beam values**: the analysis' ``beam`` dimension gets the common beams' FWHM (arcmin) as its
  coordinate, read from ``beam_fwhm`` (stored since analyses exist), so ``.sel(beam=20.6)`` works on
  every analysed store;
- **the padding made visible**: the ``sim`` axis is as long as the largest split, so the sims of a
  smaller split past its ``n_sims`` are padding that reads as NaN.  ``sim_exists`` (split, sim) marks
  the real ones; ``split=`` gives one split with only its own sims.
"""
from __future__ import annotations

import numpy as np

from cmbcube.cube.datasets import SelectionError
from cmbcube.cube.opener import open_dataset
from cmbcube.recipe import SPLITS

BEAM_ATTRS = {"units": "arcmin", "long_name": "FWHM of the common Gaussian beam the metrics are computed at"}
SIM_EXISTS_ATTRS = {"long_name": "the sim is one of its split's n_sims (False: padding up to the largest split, "
                                 "reads as NaN)"}


def open_cube(path, split: str | None = None, **storage_options):
    """The lazy Dataset of a store (local path or fsspec URL), whole units only; ``split``: one of
    train / valid / test, without the ``split`` dimension and with only that split's sims."""
    if split is not None and split not in SPLITS:
        raise SelectionError(f"split {split!r}: allowed: {', '.join(SPLITS)}")
    ds = open_dataset(str(path), consistent=True, **storage_options)
    if "beam" in ds.dims and "beam_fwhm" in ds.variables and ds["beam_fwhm"].dims == ("beam",):
        ds = ds.assign_coords(beam=("beam", np.asarray(ds["beam_fwhm"].values, dtype=np.float64), BEAM_ATTRS))
    if {"split", "sim"} <= set(ds.dims) and "n_sims" in ds.variables:
        n_sims = np.asarray(ds["n_sims"].values, dtype=np.int64)
        exists = np.arange(ds.sizes["sim"])[None, :] < n_sims[:, None]
        ds = ds.assign_coords(sim_exists=(("split", "sim"), exists, SIM_EXISTS_ATTRS))
    if split is not None:
        one = ds.sel(split=split)
        return one.isel(sim=one["sim_exists"].values) if "sim_exists" in one.coords else one
    return ds
