"""A recipe's simulation settings as the simulator's :class:`~cmbcube.science.sky.SimSpec`.

The stage side of the simulator: it reads the recipe and wires in the readers of the files the
recipe names (:mod:`cmbcube.interop.templates` for pysm3 templates, :mod:`cmbcube.interop.planck`
for variance maps and parameter chains), so the science layer sees values and functions only.
"""
from __future__ import annotations

import functools

from cmbcube.recipe import Recipe


def from_recipe(recipe: Recipe):
    """The :class:`~cmbcube.science.sky.SimSpec` of ``recipe`` (reads the chain file, if the prior is one)."""
    from cmbcube.interop import planck, templates
    from cmbcube.science import foregrounds
    from cmbcube.science.sky import SimSpec
    r = recipe.data
    fg, cmb, noise_cfg = r["foregrounds"], r["cmb"], r["noise"]
    uses_chain = cmb["enabled"] and cmb["prior"] == "chain"
    return SimSpec(
        seed=r["seed"], nside=r["nside"], sky_nside=r["sky_nside"], fields=tuple(r["fields"]),
        detectors=tuple(recipe.detectors()), units=r["units"],
        pixel_window=r["instrument"]["pixel_window"], analysis_lmax=r["instrument"]["analysis_lmax"],
        map2alm_iterations=r["instrument"]["map2alm_iterations"],
        cmb_enabled=cmb["enabled"], cmb_prior=cmb["prior"], cmb_prior_width=cmb["prior_width"],
        lens_potential_accuracy=cmb["lens_potential_accuracy"], target_beam_arcmin=cmb["target_beam_arcmin"],
        foreground_model=fg["model"], components=tuple(foregrounds.component_names(fg)),
        foreground_vary=fg["vary"],
        noise_model=noise_cfg["model"], noise_scale=noise_cfg["scale"], noise_hits=noise_cfg["hits"],
        keep=tuple(r["keep"]),
        chain=planck.read_chain(cmb["chain_file"]) if uses_chain else None,
        load_presets=functools.partial(templates.pysm_sky, tuple(fg["presets"]), r["sky_nside"], fg["data_dir"])
        if fg["model"] == "pysm3" else None,
        variance_map=functools.partial(planck.read_variance_map, noise_cfg["variance_dir"], nside=r["nside"])
        if noise_cfg["model"] == "variance_maps" else None)


def simulator(recipe: Recipe):
    """A :class:`~cmbcube.science.sky.Simulator` for ``recipe``."""
    from cmbcube.science.sky import Simulator
    return Simulator(from_recipe(recipe))
