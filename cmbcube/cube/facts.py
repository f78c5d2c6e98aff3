"""The store's facts, each read by one function: its HEALPix nside, the units of its maps, its fields,
detectors and their bandpass, and the beams its maps carry.

``source`` is a store path (opened read-only through the guard, :func:`cmbcube.cube.opener.open_group`),
an open root group or xarray Dataset of the cube (read as it is), or, for the facts kept in the root
attributes (:func:`nside`, :func:`cmb_unit`, :func:`bandpass`), a dict of those attributes
(:func:`cmbcube.cube.opener.read_attrs`).  No other code reads these attributes or arrays itself.
"""
from __future__ import annotations

import numpy as np

from cmbcube.cube.base import StoreError
from cmbcube.cube.opener import source_group
from cmbcube.recipe import from_store_attrs


def _root_attrs(source):
    return source if isinstance(source, dict) else source_group(source).attrs


def nside(source) -> int:
    """The store's HEALPix nside (its maps are 12 nside^2 NESTED pixels)."""
    return int(_root_attrs(source)["nside"])


def cmb_unit(source) -> str:
    """The unit of the store's CMB maps and predictions (uK_CMB or K_CMB)."""
    return str(_root_attrs(source)["cmb_unit"])


def bandpass(source) -> str:
    """How the store's detectors integrate over frequency (``delta`` or ``tophat``; old stores: delta)."""
    return from_store_attrs(dict(_root_attrs(source))).detectors()[0].bandpass


def fields(source) -> list[str]:
    """The store's fields (I, Q, U: those the recipe asked for), in store order."""
    return [str(f) for f in source_group(source)["field"][...]]


def detectors(source) -> list[int]:
    """The store's detectors (integer GHz), in store order."""
    return [int(d) for d in source_group(source)["detector"][...]]


def detector_units(source, wanted=None) -> list[str]:
    """Unit of each detector's obs / components / noise maps (``uK_CMB``, ``K_CMB``, ``MJy/sr``), for the
    detectors ``wanted`` (default all, in store order)."""
    group = source_group(source)
    units = [str(u) for u in group["unit"][...]]
    if wanted is None:
        return units
    have = detectors(group)
    return [units[have.index(int(d))] for d in wanted]


# ----------------------------------------------------------------------------- beams
# The one place that says which beam a map of the store carries.  Every stage that
# deconvolves, re-beams or writes a beam (ilc, analysis, train, export) asks here;
# none of them may fall back on an instrument preset: the store records what the
# simulator used (preset + recipe overrides) or what the ingested files' FWHM cards said.
def detector_beams(source, detectors=None) -> dict[int, float]:
    """{detector GHz: Gaussian beam FWHM in arcmin} as the store records it (``beam_fwhm_arcmin``).

    ``detectors``: the ones wanted (default all, in store order); one the store lacks is an error.
    """
    src = source_group(source)
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
    return float(source_group(source)["cmb"].attrs.get("beam_fwhm_arcmin", 0.0))


def run_beam(source, run: int) -> float:
    """FWHM (arcmin) of run ``run``'s output maps."""
    return float(np.asarray(source_group(source)["run_beam_fwhm_arcmin"][run]))
