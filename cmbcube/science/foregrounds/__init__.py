"""Galactic and extragalactic foregrounds: a registry of synthetic components.

The embedded skies are synthetic but physical Galaxies built from pysm3's own model classes
(``ModifiedBlackBody``, ``PowerLaw``, ``CurvedPowerLaw``) fed with in-memory templates shaped by
a plane-parallel (cosecant) latitude law, with spatially varying spectral indices.  ``synthetic``
(the default, version 3.0) is the filamentary Galaxy (:mod:`.galaxy`); ``synthetic-gaussian``
(version 1.0) has Gaussian random-field polarisation templates (``PARAMS``).  Extragalactic: CIB
(isotropic modified black body), thermal SZ (compact clusters, y-distortion SED) and radio sources
(steep power laws).

Each synthetic component is a :class:`Component` in :data:`COMPONENTS` (name -> builder, SED,
polarised).  Adding one is one new module defining its ``Component`` plus one
``COMPONENTS.register`` line below; recipe validation (``foregrounds.components``), the simulator,
the component axis of the store and the ILC's deprojection read the registry.

Layout: :mod:`.params` (parameter tables), :mod:`.fields` (random fields, envelopes, source
counts), :mod:`.seds` (SEDs, constants), :mod:`.galaxy` (dust, synchrotron), :mod:`.diffuse`
(free-free, AME, CIB), :mod:`.compact` (tSZ, radio), :mod:`.pysm` (evaluating model objects).
Real pysm3 presets (d9, s4, ...) are read from local template files by
:mod:`cmbcube.interop.templates`.
"""
from __future__ import annotations

from cmbcube.errors import InputError
from cmbcube.science.foregrounds import compact, diffuse, galaxy
from cmbcube.science.foregrounds.base import COMPONENTS, Component, SkyContext
from cmbcube.science.foregrounds.fields import (
    galactic_coords,
    gaussian_field,
    lognormal,
    polarised_field,
    random_frame,
    slab_envelope,
)
from cmbcube.science.foregrounds.galaxy import field_layers
from cmbcube.science.foregrounds.params import GALAXY, PARAMS, SKY_MODELS
from cmbcube.science.foregrounds.pysm import (
    PresetSum,
    add_emission,
    emission,
    is_uniform,
    reference_maps,
    sed_factors,
    uniform_sed,
)
from cmbcube.science.foregrounds.seds import H_PLANCK, K_BOLTZMANN, T_CMB, tsz_sed, tsz_spectrum

# The built-in components, in the order a sky is built (each draws from its own streams, so the
# order changes no bytes; AME reads the dust intensity, which the dust shares when it is there).
COMPONENTS.register("dust", galaxy.DUST)
COMPONENTS.register("synchrotron", galaxy.SYNCHROTRON)
COMPONENTS.register("freefree", diffuse.FREEFREE)
COMPONENTS.register("ame", diffuse.AME)
COMPONENTS.register("cib", diffuse.CIB)
COMPONENTS.register("tsz", compact.TSZ)
COMPONENTS.register("radio", compact.RADIO)

# The default recipe's sky: the components registered above. One registered later (a plug-in, a
# test's toy) is simulated when a recipe names it, so registering it changes no existing recipe's
# hash or bytes.
DEFAULT_SKY = COMPONENTS.names()

__all__ = ["COMPONENTS", "Component", "GALAXY", "H_PLANCK", "K_BOLTZMANN", "PARAMS", "PresetSum", "SKY_MODELS",
           "SkyContext", "T_CMB", "add_emission", "component_names", "emission", "field_layers", "galactic_coords",
           "gaussian_field", "is_uniform", "lognormal", "model_attrs", "polarised_field", "random_frame",
           "reference_maps", "sed_factors", "slab_envelope", "synthetic_sky", "tsz_sed", "tsz_spectrum", "uniform_sed"]


def synthetic_sky(components, nside: int, template_rng, sed_rng_or_none, model: str = "synthetic",
                  shared_structure: float = 1.0) -> dict:
    """Build model objects for the chosen synthetic components at ``nside`` (RING), in their order.

    ``template_rng(name)`` returns the generator for a component's templates;
    ``sed_rng_or_none(name)`` the generator for its per-sim SED parameters, or
    None to use the central values (fixed foregrounds).  ``model`` is one of
    :data:`SKY_MODELS`: ``synthetic`` (the filamentary Galaxy, default) or
    ``synthetic-gaussian`` (the earlier Gaussian-template Galaxy, unchanged byte for byte);
    they differ in dust and synchrotron only.  Templates are handed to pysm3 as views, not
    copies: memory is what limits high nside.  ``shared_structure`` (recipe
    ``foregrounds.shared_structure``): 1 places every sky's Galaxy (disk, ordered magnetic field,
    Loop I) where the real one is, so sims share its large-scale geometry; below 1 the Galaxy is
    turned by a random rotation (``fields.random_frame``, drawn from the ``galaxy-frame`` stream)
    whose angle is scaled by 1 - shared_structure; 0 gives independent skies.
    """
    if model not in SKY_MODELS:
        raise InputError(f"foregrounds.model: {model!r} is not a synthetic sky; allowed: {', '.join(SKY_MODELS)}")
    entries = {name: COMPONENTS.get(name) for name in components}
    frame = random_frame(template_rng("galaxy-frame"), shared_structure) if shared_structure < 1 else None
    ctx = SkyContext(nside, model, tuple(components), template_rng, sed_rng_or_none, frame)
    built = {name: COMPONENTS.get(name).build(ctx) for name in COMPONENTS if name in entries}
    return {name: built[name] for name in components}


def component_names(fg: dict) -> list[str]:
    """Names along the store's ``component`` axis for a recipe's ``foregrounds`` section:
    the synthetic components or the pysm3 presets."""
    if fg["model"] in SKY_MODELS:
        return list(fg["components"])
    if fg["model"] == "pysm3":
        return list(fg["presets"])
    return []


def model_attrs(fg: dict) -> dict:
    """Store attributes naming the foreground model of a recipe's ``foregrounds`` section."""
    name = fg["model"]
    if name in SKY_MODELS:
        return {"foreground_model": name, "foreground_model_version": SKY_MODELS[name]["version"],
                "foreground_model_description": SKY_MODELS[name]["description"]}
    if name == "pysm3":
        import pysm3
        return {"foreground_model": "pysm3", "foreground_model_version": f"pysm3 {pysm3.__version__}: "
                + ", ".join(fg["presets"]), "foreground_model_description": "pysm3 presets from local templates"}
    return {"foreground_model": name, "foreground_model_version": "", "foreground_model_description": "no foregrounds"}
