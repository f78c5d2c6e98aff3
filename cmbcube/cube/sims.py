"""Sims: typed reads and writes of the simulated products (obs, cmb, components, noise,
cosmo_params, cl_theory), their done-flags, and the beams the store records."""
from __future__ import annotations

import os

import numpy as np

from cmbcube.cube.store import StoreError, open_group
from cmbcube.recipe import SPLITS


# ----------------------------------------------------------------------------- beams
# The one place that says which beam a map of the store carries.  Every stage that
# deconvolves, re-beams or writes a beam (ilc, analysis, train, export) asks here;
# none of them may fall back on an instrument preset: the store records what the
# simulator used (preset + recipe overrides) or what the ingested files' FWHM cards said.
def _beam_source(source):
    """A path (opened read-only), or an already open zarr group / xarray Dataset of the cube."""
    return open_group(str(source)) if isinstance(source, (str, os.PathLike)) else source


def detector_beams(source, detectors=None) -> dict[int, float]:
    """{detector GHz: Gaussian beam FWHM in arcmin} as the store records it (``beam_fwhm_arcmin``).

    ``detectors``: the ones wanted (default all, in store order); one the store lacks is an error.
    """
    src = _beam_source(source)
    try:
        have = [int(d) for d in np.asarray(src["detector"][...])]
        fwhm = np.asarray(src["beam_fwhm_arcmin"][...], dtype=float)
    except KeyError:
        raise StoreError("the store has no 'beam_fwhm_arcmin' coordinate: it cannot say which beam its "
                         "maps carry") from None
    beams = dict(zip(have, (float(x) for x in fwhm)))
    wanted = have if detectors is None else [int(d) for d in detectors]
    missing = [d for d in wanted if d not in beams]
    if missing:
        raise StoreError(f"detectors {missing} are not in the store; it holds {', '.join(map(str, have))}")
    bad = [d for d in wanted if not (np.isfinite(beams[d]) and beams[d] >= 0)]
    if bad:
        raise StoreError(f"beam_fwhm_arcmin of detector(s) {bad} is not a FWHM >= 0 arcmin")
    return {d: beams[d] for d in wanted}


def truth_beam(source) -> float:
    """FWHM (arcmin) of the CMB truth maps (0: no beam)."""
    return float(_beam_source(source)["cmb"].attrs.get("beam_fwhm_arcmin", 0.0))


def run_beam(source, run: int) -> float:
    """FWHM (arcmin) of run ``run``'s output maps."""
    return float(np.asarray(_beam_source(source)["run_beam_fwhm_arcmin"][run]))


def done_flags(path: str) -> np.ndarray:
    """(split, sim) bool: sims whose every product is written."""
    return np.asarray(open_group(path)["sim_done"][...]) == 1


def planned(path: str) -> np.ndarray:
    group = open_group(path)
    n = np.asarray(group["n_sims"][...])
    nsim = group["sim"].shape[0]
    return np.arange(nsim)[None, :] < n[:, None]


def pending(path: str) -> list[tuple[str, int]]:
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



def fields(path: str) -> list[str]:
    return [str(f) for f in open_group(path)["field"][...]]



def clear_done(path: str, split: str, sim: int) -> None:
    open_group(path, "r+")["sim_done"][SPLITS.index(split), sim] = 0


