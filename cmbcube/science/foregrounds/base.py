"""The foreground-component registry: what a synthetic component is and what it is given.

A component is a :class:`Component` registered under its name in :data:`COMPONENTS`; its
``build(ctx)`` returns a model with pysm3's ``get_emission`` interface (a pysm3 model object,
usually ``ModifiedBlackBody``, ``PowerLaw``, ``CurvedPowerLaw``, which the simulator evaluates
as reference maps x SED factors, see :mod:`.pysm`).  The :class:`SkyContext` hands it the
resolution, the random generators of this sim and what other components share.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from cmbcube.registry import Registry

COMPONENTS = Registry("foreground component", "foregrounds.components")


@dataclasses.dataclass(frozen=True)
class Component:
    """One synthetic foreground component.

    ``build(ctx)``: the component's model for one sim (or for every sim when foregrounds are fixed).
    ``polarised``: whether it emits Q and U.  ``sed(freq_ghz)``: its central SED per unit amplitude in
    ``sed_unit`` (what the ILC deprojects), or None when it has no single SED to deproject.
    """

    build: Callable[[SkyContext], Any]
    polarised: bool
    sed: Callable[[float], float] | None = None
    sed_unit: str = "uK_RJ"
    description: str = ""


@dataclasses.dataclass
class SkyContext:
    """What a component's builder is given for one sky.

    ``template_rng(name)`` returns the generator of a component's templates; ``sed_rng(name)`` the
    generator of its per-sim SED parameters, or None for the central values (fixed foregrounds).
    Both return a fresh generator at each call: draws never depend on what else is built.
    ``components``: every component of this sky (a builder may depend on a neighbour: AME follows
    the dust).  ``model``: the synthetic sky model (``synthetic`` or ``synthetic-gaussian``).
    ``frame``: the rotation into the Galaxy's own frame, in which a builder places the disk, the
    ordered field and the loops (``fields.random_frame``; None: this sky's Galaxy is the Galactic one).
    """

    nside: int
    model: str
    components: tuple
    template_rng: Callable[[str], np.random.Generator]
    sed_rng: Callable[[str], np.random.Generator | None]
    frame: tuple | None = None          # the Galaxy's frame (fields.random_frame); None: Galactic
    _shared: dict = dataclasses.field(default_factory=dict, repr=False)

    @property
    def npix(self) -> int:
        return 12 * self.nside * self.nside

    def shared(self, key: str, make: Callable[[], Any]) -> Any:
        """``make()`` once per sky: state several components use (the Galaxy's magnetic field...)."""
        if key not in self._shared:
            self._shared[key] = make()
        return self._shared[key]

    def sed(self, name: str, key: str, params: dict) -> float:
        """SED parameter ``key`` of component ``name``: its centre ``params[key]``, drawn around it with
        spread ``params[key + '_sim']`` from the component's SED generator when the sky varies per sim."""
        r = self.sed_rng(name)
        spread = params.get(key + "_sim", 0.0)
        return params[key] if r is None or spread == 0 else float(r.normal(params[key], spread))

    def zeros(self):
        """One (npix,) zero map in uK_RJ shared by every unpolarised component's Q and U."""
        def make():
            import pysm3.units as u
            return np.zeros(self.npix) << u.uK_RJ
        return self.shared("zeros", make)
