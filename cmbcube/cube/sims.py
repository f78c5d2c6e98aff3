"""Sims: typed reads and writes of the simulated products (obs, cmb, components, noise,
cosmo_params, cl_theory) and their done-flags (the store's facts, beams included: :mod:`cmbcube.cube.facts`)."""
from __future__ import annotations

import os

import numpy as np

from cmbcube.cube import icechunk_store as ics, objstore
from cmbcube.cube.base import unit_files
from cmbcube.cube.facts import detectors
from cmbcube.cube.opener import fresh_group, open_group, read_attrs, source_group
from cmbcube.recipe import SPLITS


def done_flags(path: str) -> np.ndarray:
    """(split, sim) bool: sims whose every product is written."""
    return np.asarray(open_group(path)["sim_done"][...]) == 1


def predicted_counts(path: str) -> np.ndarray:
    """(run, split) int: sims each run has predicted, from one read of ``pred_done`` (zarr fetches its
    many one-sim chunks concurrently: ~10x faster than summing them through xarray run by run)."""
    return (np.asarray(open_group(path)["pred_done"][...]) == 1).sum(axis=-1)


def planned(path: str) -> np.ndarray:
    """Return the (split, sim) mask of the sims the recipe plans."""
    group = open_group(path)
    n = np.asarray(group["n_sims"][...])
    nsim = group["sim"].shape[0]
    return np.arange(nsim)[None, :] < n[:, None]


def holds_recipe(path: str, recipe) -> bool:
    """Whether a local store exists at ``path`` and was made from this recipe (same hash)."""
    present = ics.exists(path) if ics.handles(path) else objstore.exists(path) if objstore.handles(path) \
        else os.path.isdir(path)
    return present and read_attrs(path).get("recipe_hash") == recipe.hash


def finished(path: str) -> int:
    """How many of the store's planned sims are done."""
    return int((done_flags(path) & planned(path)).sum())


def pending(path: str) -> list[tuple[str, int]]:
    """List the planned (split, sim) not flagged done yet."""
    todo = planned(path) & ~done_flags(path)
    return [(SPLITS[i], int(j)) for i, j in zip(*np.nonzero(todo))]


def write_sim(path: str, split: str, sim: int, result) -> None:
    """Write one sim's products (whole shards), then its done-flag."""
    group = open_group(path, "r+")
    isplit = SPLITS.index(split)
    group["obs"][isplit, sim] = result.obs
    group["cmb"][isplit, sim] = result.cmb
    group["cosmo_params"][isplit, sim] = result.params
    cls = group["cl_theory"]
    block = np.full(cls.shape[2:], np.nan)
    block[:, : result.cls.shape[1]] = result.cls[:, : block.shape[1]]
    cls[isplit, sim] = block
    if "components" in group and result.components is not None:
        group["components"][isplit, sim] = result.components
    if "noise" in group and result.noise is not None:
        group["noise"][isplit, sim] = result.noise
    group["sim_done"][isplit, sim] = 1



def read_obs(source, split: str, sim: int, wanted=None) -> np.ndarray:
    """(detector, field, pixel) float32 observed maps of one sim, NESTED, in each detector's unit, for the
    detectors ``wanted`` (default all, in store order).  Through the guard: a damaged finished sim raises."""
    group = source_group(source)
    if wanted is None:
        return np.asarray(group["obs"][SPLITS.index(split), sim])
    have = detectors(group)
    index = [have.index(int(d)) for d in wanted]
    return group["obs"].get_orthogonal_selection((SPLITS.index(split), sim, index, slice(None), slice(None)))


def has_noise(source) -> bool:
    """Whether the store keeps the noise realisations (recipe ``keep: [noise]``)."""
    return "noise" in set(source_group(source).array_keys())


def read_noise(source, split: str, sim: int) -> np.ndarray | None:
    """(detector, field, pixel) float32 noise realisation inside one sim's obs (same units), or None when the
    store does not keep noise."""
    group = source_group(source)
    if "noise" not in set(group.array_keys()):
        return None
    return np.asarray(group["noise"][SPLITS.index(split), sim])


def read_cmb(source, split: str, sim: int) -> np.ndarray:
    """(field, pixel) float32 CMB truth of one sim, NESTED, in ``cmb_unit``, at ``truth_beam``."""
    return np.asarray(source_group(source)["cmb"][SPLITS.index(split), sim])


def component_names(source) -> list[str]:
    """Names along the store's component axis ([] when the store keeps no component truths)."""
    group = source_group(source)
    if "components" not in set(group.array_keys()):
        return []
    return [str(c) for c in group["component"][...]]


def read_components(source, split: str, sim: int) -> np.ndarray | None:
    """(component, detector, field, pixel) float32 foreground truths of one sim (beam-convolved, the units
    of obs), or None when the store does not keep them."""
    group = source_group(source)
    if "components" not in set(group.array_keys()):
        return None
    return np.asarray(group["components"][SPLITS.index(split), sim])


def read_theory(source, split: str, sim: int) -> tuple[dict, np.ndarray]:
    """({parameter: value}, (spectrum, ell) lensed C_ell in uK_CMB^2) of one sim: cosmo_params, cl_theory."""
    group = source_group(source)
    names = [str(p) for p in group["param"][...]]
    values = np.asarray(group["cosmo_params"][SPLITS.index(split), sim], dtype=float)
    return dict(zip(names, values.tolist())), np.asarray(group["cl_theory"][SPLITS.index(split), sim])


def flagged_without_data(path: str, products=("obs", "cmb")) -> list[tuple[str, int]]:
    """Sims flagged done whose shard file of one of ``products`` is absent.

    A flag set by hand, or data deleted: one existence check per file.  (Zarr skips chunks equal to the
    fill value, so an all-NaN cosmo_params or cl_theory, with the CMB disabled, has no file: ask for them
    only when the CMB is on.)"""
    group = fresh_group(path)
    names = set(group.array_keys())
    arrays = [(name, group[name]) for name in products if name in names]
    out = []
    for isplit, sim in zip(*np.nonzero(done_flags(path))):
        for name, arr in arrays:
            files = unit_files(path, arr, name, (isplit, sim))
            if not all(ics.chunk_exists(path, f"{name}/{key}") if ics.handles(path) else
                       objstore.chunk_exists(path, f"{name}/{key}") if objstore.handles(path) else os.path.exists(f)
                       for key, f in files):
                out.append((SPLITS[int(isplit)], int(sim)))
                break
    return out



def clear_done(path: str, split: str, sim: int) -> None:
    """Clear the done-flag of one sim."""
    open_group(path, "r+")["sim_done"][SPLITS.index(split), sim] = 0


