"""Compact extragalactic sources: thermal SZ clusters and radio sources."""
from __future__ import annotations

import numpy as np

from cmbcube.science.foregrounds import fields, seds
from cmbcube.science.foregrounds.base import Component, SkyContext
from cmbcube.science.foregrounds.params import PARAMS


def thermal_sz_class():
    """The pysm3 model class of thermal SZ from an in-memory Compton-y map (pysm3 imported here)."""
    import pysm3
    import pysm3.units as u

    class ThermalSZ(pysm3.Model):
        """Thermal SZ from an in-memory Compton-y map (pysm3 model interface)."""

        sed_kind = "tsz"

        def __init__(self, y_map, nside):
            super().__init__(nside=nside)
            self.y_map = np.asarray(y_map)

        def get_emission(self, freqs, weights=None):
            nu = np.atleast_1d(freqs.to_value(u.GHz)).astype(np.float64)
            sed = np.array([seds.tsz_sed(f) for f in nu])
            if nu.size > 1:         # pysm3's bandpass integration: weights flat in power, back to RJ
                from pysm3.utils import normalize_weights
                sed = np.trapezoid(normalize_weights(nu, weights) * sed, nu)
            out = np.zeros((3, self.y_map.size))
            out[0] = self.y_map * float(np.ravel(sed)[0])
            return out * u.uK_RJ

    return ThermalSZ


def _pixel_arcmin2(nside: int) -> float:
    return 4 * np.pi / (12 * nside * nside) * (180 * 60 / np.pi) ** 2


def build_tsz(ctx: SkyContext):
    """Thermal SZ: Poisson-many clusters with integrated y drawn from a power-law count."""
    p, r = PARAMS["tsz"], ctx.template_rng("tsz")
    count = int(r.poisson(p["mean_count"]))
    areas = fields.pareto(r, count, p["y_area_min_arcmin2"], p["count_slope"], p["y_area_max_arcmin2"])
    y_map, _ = fields.point_sources(r, ctx.nside, count, areas / _pixel_arcmin2(ctx.nside))
    return thermal_sz_class()(y_map, ctx.nside)


def build_radio(ctx: SkyContext):
    """Radio sources: power-law counts, steep spectra with a spread of indices, a few % polarised."""
    import pysm3.models as m
    import pysm3.units as u
    nside, npix = ctx.nside, ctx.npix
    p, r = PARAMS["radio"], ctx.template_rng("radio")
    mean_count = p["count_above_0p5Jy"] * (p["flux_min_jy"] / 0.5) ** (1 - p["count_slope"])
    count = int(r.poisson(mean_count))
    flux = fields.pareto(r, count, p["flux_min_jy"], p["count_slope"], 100.0)
    freq = p["freq_ref_ghz"] * 1e9
    omega = 4 * np.pi / npix
    t_rj = flux * 1e-26 * 2.99792458e8 ** 2 / (2 * 1.380649e-23 * freq ** 2 * omega) * 1e6  # uK_RJ
    amp, pix = fields.point_sources(r, nside, count, t_rj)
    angle = r.uniform(0, np.pi, count)
    q = np.zeros(npix)
    uu = np.zeros(npix)
    np.add.at(q, pix, p["pol_fraction"] * t_rj * np.cos(2 * angle))
    np.add.at(uu, pix, p["pol_fraction"] * t_rj * np.sin(2 * angle))
    index = np.full(npix, p["flux_index"] - 2.0)
    index[pix] = r.normal(p["flux_index"], p["flux_index_spread"], count) - 2.0
    return m.PowerLaw(
        map_I=amp << u.uK_RJ, map_Q=q << u.uK_RJ, map_U=uu << u.uK_RJ,
        freq_ref_I=f"{p['freq_ref_ghz']} GHz", freq_ref_P=f"{p['freq_ref_ghz']} GHz",
        map_pl_index=index << u.dimensionless_unscaled, nside=nside)


TSZ = Component(build_tsz, polarised=False, sed=seds.tsz_uk_cmb, sed_unit="uK_CMB",
                description="thermal Sunyaev-Zel'dovich effect of clusters (Compton y)")
RADIO = Component(build_radio, polarised=True, description="radio point sources: power laws")
