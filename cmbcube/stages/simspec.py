"""A recipe's simulation settings as the simulator's :class:`~cmbcube.science.sky.SimSpec`.

The stage side of the simulator: it reads the recipe and wires in the readers of the files the
recipe names (:mod:`cmbcube.interop.templates` for pysm3 templates, :mod:`cmbcube.interop.planck`
for variance maps and parameter chains), so the science layer sees values and functions only.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import os
from pathlib import Path

import numpy as np

from cmbcube.recipe import Recipe

CACHE_FORMAT = 1        # bump when what a cached lensing correction holds changes


def from_recipe(recipe: Recipe):
    """The :class:`~cmbcube.science.sky.SimSpec` of ``recipe`` (reads the chain file, if the prior is one)."""
    from cmbcube.interop import planck, templates
    from cmbcube.science import foregrounds
    from cmbcube.science.sky import SimSpec
    r = recipe.data
    fg, cmb, noise_cfg = r["foregrounds"], r["cmb"], r["noise"]
    uses_chain = cmb["enabled"] and cmb["prior"] == "chain"
    chain = planck.read_chain(cmb["chain_file"]) if uses_chain else None
    return SimSpec(
        seed=r["seed"], nside=r["nside"], sky_nside=r["sky_nside"], fields=tuple(r["fields"]),
        detectors=tuple(recipe.detectors()), units=r["units"],
        pixel_window=r["instrument"]["pixel_window"], analysis_lmax=r["instrument"]["analysis_lmax"],
        map2alm_iterations=r["instrument"]["map2alm_iterations"],
        cmb_enabled=cmb["enabled"], cmb_prior=cmb["prior"], cmb_prior_width=cmb["prior_width"],
        lens_potential_accuracy=cmb["lens_potential_accuracy"], lensing=cmb["lensing"],
        target_beam_arcmin=cmb["target_beam_arcmin"],
        foreground_model=fg["model"], components=tuple(foregrounds.component_names(fg)),
        foreground_vary=fg["vary"], foreground_shared=float(fg["shared_structure"]),
        noise_model=noise_cfg["model"], noise_scale=noise_cfg["scale"], noise_hits=noise_cfg["hits"],
        keep=tuple(r["keep"]),
        chain=chain, lensing_correction=lensing_correction(recipe, chain),
        load_presets=functools.partial(templates.pysm_sky, tuple(fg["presets"]), r["sky_nside"], fg["data_dir"])
        if fg["model"] == "pysm3" else None,
        variance_map=functools.partial(planck.read_variance_map, noise_cfg["variance_dir"], nside=r["nside"])
        if noise_cfg["model"] == "variance_maps" else None)


def simulator(recipe: Recipe):
    """A :class:`~cmbcube.science.sky.Simulator` for ``recipe``."""
    from cmbcube.science.sky import Simulator
    return Simulator(from_recipe(recipe))


def cache_dir() -> Path:
    """Where computed lensing corrections are kept: $CMBCUBE_CACHE_DIR, else $XDG_CACHE_HOME/cmbcube,
    else ~/.cache/cmbcube."""
    if os.environ.get("CMBCUBE_CACHE_DIR"):
        return Path(os.environ["CMBCUBE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cmbcube"


def lensing_correction(recipe: Recipe, chain: dict | None = None) -> tuple | None:
    """The recipe's :func:`cmbcube.science.cosmology.lensing_correction` (None when the CMB is off or
    the lensing is ``direct``), computed once per machine: 7 high-accuracy CAMB runs (~20-40 s), then
    read back from :func:`cache_dir` by every process (Dask workers, later runs) as the same bytes.
    The cache key holds everything the correction depends on, CAMB's version included; a cache that
    cannot be written is skipped (the correction is then computed per process)."""
    import camb

    from cmbcube.science import cosmology
    cmb = recipe["cmb"]
    if not cmb["enabled"] or cmb["lensing"] != "corrected":
        return None
    if cmb["prior"] == "chain" and chain is None:
        from cmbcube.interop import planck
        chain = planck.read_chain(cmb["chain_file"])
    centre, step = cosmology.expansion_point(cmb["prior"], cmb["prior_width"], chain)
    lmax, accuracy = 3 * recipe["nside"] - 1, cmb["lens_potential_accuracy"]
    # the key holds the source of the module that computes it: any change to the CAMB calls or the
    # expansion makes a new entry (no stale correction after an upgrade of cmbcube or CAMB)
    source = hashlib.sha256(inspect.getsource(cosmology).encode()).hexdigest()[:16]
    key = repr((CACHE_FORMAT, centre, step, lmax, accuracy, cosmology.REFERENCE_LMAX,
                cosmology.REFERENCE_MARGIN, camb.__version__, source))
    path = cache_dir() / "lensing" / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".npy")
    try:
        table = np.load(path)
        return table[0], table[1:]
    except (OSError, ValueError):
        pass
    gap, slopes = cosmology.lensing_correction(centre, step, lmax, accuracy)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_suffix(f".{os.getpid()}.part")
        with open(part, "wb") as fh:
            np.save(fh, np.concatenate([gap[None], slopes]))
        os.replace(part, path)           # atomic: a reader sees the whole table or none
    except OSError:
        pass
    return gap, slopes
