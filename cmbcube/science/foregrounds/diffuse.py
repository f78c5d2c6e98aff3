"""Unpolarised diffuse components: free-free, anomalous microwave emission and the CIB.

Their random fields are defined on the sky, not on the pixels: a sky at any nside has the
same angular power spectrum at the multipoles both resolve, a higher resolution only adds
small scales.  The CIB is a Gaussian field with a measured power spectrum in physical units
(``CIB_CL``); free-free and AME are lognormal modulations exp(sigma g - ...) of a Gaussian
field g whose spectrum is normalised to unit variance over the multipoles up to REFERENCE_LMAX
(not over those the pixels happen to carry).  Multipoles up to COHERENT_LMAX are drawn one
multipole after another, so skies of one seed at two resolutions share their large scales.
"""
from __future__ import annotations

import functools

import numpy as np

from cmbcube.science import sht
from cmbcube.science.foregrounds import fields, seds
from cmbcube.science.foregrounds.base import Component, SkyContext
from cmbcube.science.foregrounds.galaxy import dust_intensity
from cmbcube.science.foregrounds.params import PARAMS

REFERENCE_LMAX = 191      # a lognormal's sigma: the Gaussian field's rms over ell <= 191 (nside 64's band limit)
COHERENT_LMAX = 383       # multipoles drawn in ell order (the same at every nside that resolves them)
# CIB anisotropies at 545 GHz, I_nu in Jy^2/sr: clustered C_ell = amplitude (ell / pivot)^index plus shot noise.
# Shot noise: Planck 2013 results XXX (A&A 571, A30), Tables 6-7, 545 GHz: 1454 Jy^2/sr.  Clustered: of the order
# of Planck 2013 XXX's 545 GHz CIB spectrum (Table D.2: ~1e4 Jy^2/sr at ell ~ 500, falling as ~ell^-1.2 at
# ell < 1000); the amplitude is a rounded value, not a fit to the table.
CIB_CL = dict(freq_ghz=545.0, amplitude_jy2_sr=1.0e4, pivot_ell=500.0, index=-1.2, shot_jy2_sr=1454.0)


def _rj_per_jy_sr(freq_ghz: float) -> float:
    """uK_RJ per Jy/sr at ``freq_ghz`` (Rayleigh-Jeans: I_nu = 2 k nu^2 T / c^2)."""
    return 1.0 / (2 * 1.380649e-23 * (freq_ghz * 1e9) ** 2 / 2.99792458e8 ** 2 * 1e26 * 1e-6)


@functools.lru_cache(maxsize=4)
def _ell_major(lmax: int) -> tuple[np.ndarray, np.ndarray]:
    """(ell, m) of every alm up to ``lmax``, in multipole order (ell = 0, 1, 1, 2, 2, 2, ...)."""
    ell = np.repeat(np.arange(lmax + 1), np.arange(1, lmax + 2))
    m = np.arange(ell.size) - np.repeat(np.cumsum(np.arange(lmax + 1)), np.arange(1, lmax + 2))
    return ell, m


def sky_alm(rng: np.random.Generator, lmax: int, cl: np.ndarray) -> np.ndarray:
    """Gaussian alm (healpy layout) with spectrum ``cl``; those with ell <= COHERENT_LMAX are drawn in
    multipole order, so they are the same for every ``lmax`` (every nside) at one seed."""
    low = min(lmax, COHERENT_LMAX)
    z = np.zeros(sht.alm_size(lmax), dtype=np.complex128)
    ell, m = _ell_major(low)
    draw = rng.standard_normal((ell.size, 2))
    z[m * (2 * lmax + 1 - m) // 2 + ell] = np.where(m == 0, draw[:, 0], (draw[:, 0] + 1j * draw[:, 1]) / np.sqrt(2))
    for mm in range(lmax + 1):                     # the small scales, m by m
        first = max(mm, low + 1)
        if first > lmax:
            continue
        start = mm * (2 * lmax + 1 - mm) // 2 + first
        count = lmax + 1 - first
        draw = rng.standard_normal((count, 2))
        z[start: start + count] = draw[:, 0] if mm == 0 else (draw[:, 0] + 1j * draw[:, 1]) / np.sqrt(2)
    return sht.almxfl(z, np.sqrt(cl[: lmax + 1]))


def sky_field(rng: np.random.Generator, nside: int, cl: np.ndarray) -> np.ndarray:
    """RING map of a Gaussian field with spectrum ``cl`` (in the map's units squared), band-limited at 3 nside - 1."""
    lmax = 3 * nside - 1
    # single-precision synthesis: a random template needs no more, and it halves the cost
    return sht.alm2map(sky_alm(rng, lmax, cl).astype(np.complex64), nside).astype(np.float64)


def reference_cl(lmax: int, index: float) -> np.ndarray:
    """C_ell ~ ell^index (zero below ell = 2) of unit variance over 2 <= ell <= REFERENCE_LMAX, to ``lmax``."""
    ell = np.arange(max(lmax, REFERENCE_LMAX) + 1, dtype=float)
    cl = np.zeros(ell.size)
    cl[2:] = (ell[2:] / 80.0) ** index
    cl /= np.sum((2 * ell[: REFERENCE_LMAX + 1] + 1) * cl[: REFERENCE_LMAX + 1]) / (4 * np.pi)
    return cl[: lmax + 1]


def lognormal_field(rng: np.random.Generator, nside: int, sigma: float, index: float) -> np.ndarray:
    """exp(sigma g - sigma^2 var(g) / 2): a lognormal modulation of mean one, g with C_ell ~ ell^index of unit
    variance up to REFERENCE_LMAX (var(g), over all the multipoles the map carries, grows slowly with nside)."""
    cl = reference_cl(3 * nside - 1, index)
    var = np.sum((2 * np.arange(cl.size) + 1) * cl) / (4 * np.pi)
    return np.exp(sigma * sky_field(rng, nside, cl) - sigma ** 2 * var / 2)


def cib_cl(lmax: int) -> np.ndarray:
    """C_ell of the CIB anisotropies in uK_RJ^2 at CIB_CL's frequency (zero below ell = 2)."""
    p = CIB_CL
    ell = np.arange(lmax + 1, dtype=float)
    cl = np.zeros(lmax + 1)
    cl[2:] = p["amplitude_jy2_sr"] * (ell[2:] / p["pivot_ell"]) ** p["index"] + p["shot_jy2_sr"]
    return cl * _rj_per_jy_sr(p["freq_ghz"]) ** 2


def build_freefree(ctx: SkyContext):
    """Free-free: a lognormal field under a thin slab, power law beta = -2.14."""
    import pysm3.models as m
    import pysm3.units as u
    p, r = PARAMS["freefree"], ctx.template_rng("freefree")
    amp = p["high_lat_uK_RJ"] * fields.slab_envelope(ctx.nside, p["slab_height"], 1.0, ctx.frame) * \
        lognormal_field(r, ctx.nside, p["log_sigma"], p["cl_index"])
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
    amp = p["dust_ratio"] * dust_intensity(ctx) * lognormal_field(r, ctx.nside, p["log_sigma"], p["cl_index"])
    zeros = ctx.zeros()
    return m.CurvedPowerLaw(
        map_I=amp << u.uK_RJ, map_Q=zeros, map_U=zeros, freq_ref_I=f"{p['freq_ref_ghz']} GHz",
        freq_ref_P=f"{p['freq_ref_ghz']} GHz", map_pl_index=p["beta"] * one,
        spectral_curvature=ctx.sed("ame", "curvature", p) * one, freq_curve=f"{p['freq_ref_ghz']} GHz",
        nside=ctx.nside)


def build_cib(ctx: SkyContext):
    """Cosmic infrared background: its mean plus isotropic Gaussian anisotropies with the measured 545 GHz
    power spectrum (CIB_CL, its reference frequency), modified black body."""
    import pysm3.models as m
    import pysm3.units as u
    p, r = PARAMS["cib"], ctx.template_rng("cib")
    if p["freq_ref_ghz"] != CIB_CL["freq_ghz"]:
        raise ValueError("the CIB's reference frequency must be that of its power spectrum (CIB_CL)")
    amp = p["mean_uK_RJ"] + sky_field(r, ctx.nside, cib_cl(3 * ctx.nside - 1))
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

