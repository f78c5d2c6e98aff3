"""Unpolarised diffuse components: free-free, anomalous microwave emission and the CIB."""
from __future__ import annotations

from cmbcube.science.foregrounds import fields, seds
from cmbcube.science.foregrounds.base import Component, SkyContext
from cmbcube.science.foregrounds.galaxy import dust_intensity
from cmbcube.science.foregrounds.params import PARAMS


def build_freefree(ctx: SkyContext):
    """Free-free: a lognormal field under a thin slab, power law beta = -2.14."""
    import pysm3.models as m
    import pysm3.units as u
    p, r = PARAMS["freefree"], ctx.template_rng("freefree")
    amp = p["high_lat_uK_RJ"] * fields.slab_envelope(ctx.nside, p["slab_height"], 1.0) * \
        fields.lognormal(r, ctx.nside, p["log_sigma"], p["cl_index"])
    zeros = ctx.zeros()
    return m.PowerLaw(
        map_I=amp << u.uK_RJ, map_Q=zeros, map_U=zeros, freq_ref_I=f"{p['freq_ref_ghz']} GHz",
        freq_ref_P=f"{p['freq_ref_ghz']} GHz", map_pl_index=p["beta"] * u.dimensionless_unscaled, nside=ctx.nside)


def build_ame(ctx: SkyContext):
    """Anomalous microwave emission: the dust intensity x a lognormal modulation, curved power law."""
    import pysm3.models as m
    import pysm3.units as u
    one = u.dimensionless_unscaled
    p, r = PARAMS["ame"], ctx.template_rng("ame")
    amp = p["dust_ratio"] * dust_intensity(ctx) * fields.lognormal(r, ctx.nside, p["log_sigma"], p["cl_index"])
    zeros = ctx.zeros()
    return m.CurvedPowerLaw(
        map_I=amp << u.uK_RJ, map_Q=zeros, map_U=zeros, freq_ref_I=f"{p['freq_ref_ghz']} GHz",
        freq_ref_P=f"{p['freq_ref_ghz']} GHz", map_pl_index=p["beta"] * one,
        spectral_curvature=ctx.sed("ame", "curvature", p) * one, freq_curve=f"{p['freq_ref_ghz']} GHz",
        nside=ctx.nside)


def build_cib(ctx: SkyContext):
    """Cosmic infrared background: an isotropic Gaussian modulation of its mean, modified black body."""
    import pysm3.models as m
    import pysm3.units as u
    p, r = PARAMS["cib"], ctx.template_rng("cib")
    amp = p["mean_uK_RJ"] * (1 + p["rel_rms"] * fields.gaussian_field(r, ctx.nside, p["cl_index"]))
    zeros = ctx.zeros()
    return m.ModifiedBlackBody(
        map_I=amp << u.uK_RJ, map_Q=zeros, map_U=zeros,
        freq_ref_I=f"{p['freq_ref_ghz']} GHz", freq_ref_P=f"{p['freq_ref_ghz']} GHz",
        map_mbb_index=ctx.sed("cib", "beta", p) * u.dimensionless_unscaled,
        map_mbb_temperature=ctx.sed("cib", "temp_K", p) * u.K, nside=ctx.nside)


FREEFREE = Component(build_freefree, polarised=False, description="free-free: power law")
AME = Component(build_ame, polarised=False, description="anomalous microwave emission: curved power law")
CIB = Component(build_cib, polarised=False,
                sed=lambda nu: seds.modified_black_body(nu, PARAMS["cib"]["freq_ref_ghz"], PARAMS["cib"]["beta"],
                                                        PARAMS["cib"]["temp_K"]),
                description="cosmic infrared background: modified black body")

