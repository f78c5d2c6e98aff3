"""Galactic and extragalactic foregrounds.

The embedded skies are synthetic but physical Galaxies built from pysm3's own
model classes (``ModifiedBlackBody``, ``PowerLaw``, ``CurvedPowerLaw``) fed with
in-memory templates shaped by a plane-parallel (cosecant) latitude law, with
spatially varying spectral indices.  ``synthetic`` (the default, version 2.0) is
the filamentary Galaxy described above :data:`GALAXY`; ``synthetic-gaussian``
(version 1.0) has Gaussian random-field polarisation templates (``PARAMS``).
Extragalactic: CIB (isotropic modified black body), thermal SZ (compact clusters,
y-distortion SED) and radio sources (steep power laws).
Centres and spreads of the parameters follow the Planck 2018 component
separation results and pysm3's documentation; they are collected in PARAMS.

Real pysm3 presets (d9, s4, ...) are used when their template files exist
locally; :func:`missing_pysm_files` lists what is absent before anything runs.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from cmbcube.science import sht
from cmbcube.errors import InputError, MissingFileError

T_CMB = 2.7255  # K
H_PLANCK = 6.62607015e-34   # J s
K_BOLTZMANN = 1.380649e-23  # J / K

# name: dict of SED centres (per-sim spread in *_sim) and template shapes.
PARAMS = {
    "dust": dict(freq_ref_ghz=353.0, high_lat_uK_RJ=10.0, slab_height=0.02, log_sigma=0.6, cl_index=-2.5,
                 pol_fraction=0.07, pol_cl_index=-2.4, eb_ratio=2.0,
                 beta=1.53, beta_sim=0.03, beta_spatial=0.05, temp_K=19.6, temp_sim=0.5, temp_spatial=1.0),
    "synchrotron": dict(freq_ref_ghz=23.0, high_lat_uK_RJ=40.0, slab_height=0.08, log_sigma=0.5, cl_index=-2.8,
                        pol_fraction=0.12, pol_cl_index=-2.8, eb_ratio=2.0,
                        beta=-3.05, beta_sim=0.03, beta_spatial=0.1),
    "freefree": dict(freq_ref_ghz=30.0, high_lat_uK_RJ=1.0, slab_height=0.015, log_sigma=1.0, cl_index=-2.0,
                     beta=-2.14),
    "ame": dict(freq_ref_ghz=23.0, dust_ratio=0.3, log_sigma=0.3, cl_index=-2.5,
                beta=-2.0, curvature=-0.7, curvature_sim=0.05),
    "cib": dict(freq_ref_ghz=545.0, mean_uK_RJ=65.0, rel_rms=0.12, cl_index=-1.2,
                beta=1.6, beta_sim=0.05, temp_K=22.0, temp_sim=1.0),
    "tsz": dict(mean_count=4000, y_area_min_arcmin2=3e-4, y_area_max_arcmin2=0.1, count_slope=2.5),
    "radio": dict(freq_ref_ghz=30.0, count_above_0p5Jy=1000, flux_min_jy=0.1, count_slope=2.5,
                  flux_index=-0.7, flux_index_spread=0.3, pol_fraction=0.03),
}
_SMOOTH_LMAX = 96      # spectral-index maps are smooth: band-limit them (cheap at any nside)


@functools.lru_cache(maxsize=8)
def galactic_coords(nside: int) -> tuple[np.ndarray, np.ndarray]:
    """Galactic (longitude, latitude) in radians of RING pixels."""
    import healpy as hp
    theta, phi = hp.pix2ang(nside, np.arange(12 * nside * nside))
    return phi, np.pi / 2 - theta


def _power_law_cl(lmax: int, index: float, ell0: float = 80.0) -> np.ndarray:
    ell = np.arange(lmax + 1, dtype=float)
    cl = np.zeros(lmax + 1)
    cl[2:] = (ell[2:] / ell0) ** index
    var = np.sum((2 * ell + 1) * cl) / (4 * np.pi)
    return cl / var                                   # unit pixel variance


def gaussian_field(rng: np.random.Generator, nside: int, index: float, lmax: int | None = None) -> np.ndarray:
    """Unit-variance isotropic Gaussian field (RING) with C_ell ~ ell^index."""
    lmax = min(3 * nside - 1, lmax or 3 * nside - 1)
    cl = _power_law_cl(lmax, index)
    z = (rng.standard_normal(sht.alm_size(lmax)) + 1j * rng.standard_normal(sht.alm_size(lmax))) / np.sqrt(2)
    z[: lmax + 1] = rng.standard_normal(lmax + 1)
    # single-precision synthesis: a random template needs no more, and it halves the cost
    return sht.alm2map(sht.almxfl(z, np.sqrt(cl)).astype(np.complex64), nside).astype(np.float64)


def polarised_field(rng: np.random.Generator, nside: int, index: float, eb_ratio: float) -> np.ndarray:
    """(2, npix) Q, U with C_EE ~ ell^index and C_BB = C_EE / eb_ratio, each of unit rms."""
    lmax = 3 * nside - 1
    cl = _power_law_cl(lmax, index)
    eb = np.zeros((2, sht.alm_size(lmax)), dtype=np.complex64)   # single precision: a random template
    for k, scale in ((0, 1.0), (1, 1.0 / np.sqrt(eb_ratio))):
        z = (rng.standard_normal(eb.shape[1]) + 1j * rng.standard_normal(eb.shape[1])) / np.sqrt(2)
        z[: lmax + 1] = rng.standard_normal(lmax + 1)
        eb[k] = sht.almxfl(z, np.sqrt(cl) * scale)
        del z
    qu = sht.alm2map_spin2(eb, nside).astype(np.float64)
    return qu / np.sqrt(np.mean(qu ** 2))


def slab_envelope(nside: int, height: float, centre_boost: float = 0.6) -> np.ndarray:
    """Plane-parallel slab: 1 / sqrt(sin^2 b + h^2), brighter towards the Galactic centre."""
    lon, lat = galactic_coords(nside)
    dlon = np.mod(lon + np.pi, 2 * np.pi) - np.pi         # longitude in [-pi, pi)
    return (1 + centre_boost * np.exp(-dlon ** 2 / (2 * np.radians(60) ** 2))) / np.sqrt(np.sin(lat) ** 2 + height ** 2)


def lognormal(rng, nside, sigma, index):
    g = gaussian_field(rng, nside, index)
    return np.exp(sigma * g - sigma ** 2 / 2)      # mean one


def tsz_spectrum(freq_ghz: float) -> float:
    """Delta T / (T_CMB y) of the thermal SZ effect (non-relativistic)."""
    x = 6.62607015e-34 * freq_ghz * 1e9 / (1.380649e-23 * T_CMB)
    return x / np.tanh(x / 2) - 4


def tsz_sed(freq_ghz: float) -> float:
    """uK_RJ of thermal SZ per unit Compton y at ``freq_ghz``."""
    return T_CMB * tsz_spectrum(freq_ghz) * _rj_factor(freq_ghz, "K_CMB")


def _rj_factor(freq_ghz, unit_from):
    from cmbcube.science.instrument import unit_factor
    return unit_factor(freq_ghz, unit_from, "uK_RJ")


def _make_thermal_sz_class():
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
            sed = np.array([tsz_sed(f) for f in nu])
            if nu.size > 1:         # pysm3's bandpass integration: weights flat in power, back to RJ
                from pysm3.utils import normalize_weights
                sed = np.trapezoid(normalize_weights(nu, weights) * sed, nu)
            out = np.zeros((3, self.y_map.size))
            out[0] = self.y_map * float(np.ravel(sed)[0])
            return out * u.uK_RJ

    return ThermalSZ


def _point_sources(rng, nside, count, values):
    """Deposit ``values`` at ``count`` isotropic random positions; returns (map, pixel ids)."""
    import healpy as hp
    z = rng.uniform(-1, 1, count)
    phi = rng.uniform(0, 2 * np.pi, count)
    pix = hp.ang2pix(nside, np.arccos(z), phi)
    out = np.zeros(12 * nside * nside)
    np.add.at(out, pix, values)
    return out, pix


def _pareto(rng, count, minimum, slope, maximum=np.inf):
    """Draws with dN/dS ~ S^-slope above ``minimum``, truncated at ``maximum``."""
    x = minimum * (1 - rng.uniform(size=count)) ** (-1 / (slope - 1))
    return np.minimum(x, maximum)


# ---------------------------------------------------------------- the filamentary Galaxy (model "synthetic")
#
# Dust intensity is a lognormal field under the latitude law.  Polarisation follows the
# approach of Planck Int. XLIV (2016), Vansyngel et al. (2017) and Ghosh et al. (2017): a
# large-scale ordered magnetic field (fixed direction l0 = 70 deg, b0 = 24 deg) plus a Gaussian
# random turbulent field with C_ell ~ ell^alpha_M (alpha_M = -2.5, f_M = 0.9 as in Planck Int. XLIV),
# summed over three independent layers along the line of sight (Ghosh et al. 2017's number; Planck
# Int. XLIV found N ~ 4-7 on its own).  The field is band-limited at ell <= 191 (built at nside 64
# and interpolated harmonically above: ~1 deg), which keeps its cost flat in nside.  In each layer
# the field's angle to the plane of the sky (gamma) and its projected orientation set the Stokes parameters: for dust p0 cos^2(gamma) (cos 2psi, sin 2psi)
# with the polarisation perpendicular to B_perp, and I (1 - p0 (cos^2 gamma - 2/3)); the sum over
# layers depolarises.  Matter filaments are aligned with the field (Planck Int. XXXII, XXXVIII;
# Clark et al. 2015): part of the plane-of-sky orientation follows the ridges of the intensity
# field, which is what makes EE > BB and TE > 0 (Zaldarriaga 2001; Huffenberger et al. 2020).
# Synchrotron comes from the same field layers: emissivity ~ B_perp^2 (electron index p = 3),
# intrinsic polarisation fraction (p+1)/(p+7/3), under its own thicker slab and lognormal
# cosmic-ray density.  SED parameters vary on the sky and are correlated with the intensity.
#
# Calibration (353 GHz, delta bandpass, on the 71% of the sky with the faintest dust: the size of
# Planck's LR71 region): D_ell^EE(80) ~ 315 uK_CMB^2 and the exponents alpha_EE = -2.42,
# alpha_BB = -2.54 of Planck 2018 XI (A&A 641, A11), BB/EE ~ 0.5 and r_TE = TE / sqrt(TT EE)
# ~ 0.35 (Planck 2018 XI; Planck Int. XXX).  Synchrotron: Planck 2018 IV (A&A 641, A4) finds
# polarised synchrotron and dust equal in rms near 70-80 GHz at 40' (its Fig. 35 with the
# Planck 2018 I summary) and beta_s ~ -3.1.  ``benchmarks/sky_models.py --realism`` measures all of
# these (README, "The embedded Galaxy"); the two amplitudes below (dust high_lat_uK_RJ, synchrotron
# high_lat_uK_RJ with thick_share) were set from that measurement, the rest are physical choices.

SKY_MODELS = {
    "synthetic": {"version": "2.0", "description": "filamentary Galaxy: lognormal dust, polarisation from an "
                  "ordered + turbulent magnetic field in layers with filaments aligned to it; synchrotron from "
                  "the same field; SED parameters correlated with intensity"},
    "synthetic-gaussian": {"version": "1.0", "description": "Gaussian random-field templates under a latitude "
                           "law (the default before 2.0)"},
}

GALAXY = {
    "field": dict(l0_deg=70.0, b0_deg=24.0, f_m=0.9, alpha_m=-2.5, layers=3, lmax=191, nside_max=64),
    "dust": dict(freq_ref_ghz=353.0, high_lat_uK_RJ=28.35, slab_height=0.02, log_sigma=0.8, cl_index=-2.5,
                 p0=0.25, align=0.7, ridge_rho=0.7, beta=1.53, beta_sim=0.03, beta_spatial=0.05, beta_rho=0.4,
                 temp_K=19.6, temp_sim=0.5, temp_spatial=1.0, temp_rho=-0.5),
    "synchrotron": dict(freq_ref_ghz=23.0, high_lat_uK_RJ=55.0, slab_height=0.08, log_sigma=0.4, cl_index=-2.8,
                        thick_share=0.7, beta=-3.05, beta_sim=0.03, beta_spatial=0.1, beta_rho=0.5),
}


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


def _random_alm(rng, lmax: int, cl: np.ndarray) -> np.ndarray:
    z = (rng.standard_normal(sht.alm_size(lmax)) + 1j * rng.standard_normal(sht.alm_size(lmax))) / np.sqrt(2)
    z[: lmax + 1] = rng.standard_normal(lmax + 1)
    return sht.almxfl(z, np.sqrt(cl))


def _smooth_part(alm: np.ndarray, nside: int) -> np.ndarray:
    """Unit-variance map of an alm's ell <= _SMOOTH_LMAX part (cheap at any nside)."""
    small = sht.truncate_alm(alm, min(_SMOOTH_LMAX, sht.lmax_from_size(alm.size)))
    out = sht.alm2map(small.astype(np.complex64), nside).astype(np.float64)
    return out / max(out.std(), 1e-30)


def _upgrade(maps: np.ndarray, nside: int, lmax: int) -> np.ndarray:
    """(k, npix_low) RING maps band-limited at ``lmax`` -> (k, 12 nside^2) by harmonic interpolation."""
    if maps.shape[-1] == 12 * nside * nside:
        return maps
    alm = sht.map2alm_scalar(maps, lmax, iterations=1)
    return sht.alm2map_scalar(alm, nside)


@functools.lru_cache(maxsize=4)
def _sky_basis(nside: int) -> np.ndarray:
    """(3 [r, theta, phi], 3 [x, y, z], npix) unit vectors of each RING pixel (Galactic Cartesian)."""
    import healpy as hp
    theta, phi = hp.pix2ang(nside, np.arange(12 * nside * nside))
    st, ct, sp, cp = np.sin(theta), np.cos(theta), np.sin(phi), np.cos(phi)
    return np.array([[st * cp, st * sp, ct], [ct * cp, ct * sp, -st], [-sp, cp, np.zeros_like(sp)]])


@functools.lru_cache(maxsize=4)
def _ordered_field(nside: int, l0_deg: float, b0_deg: float) -> np.ndarray:
    """(3, npix) unit ordered field towards (l0, b0) along the line of sight (r), south (theta) and
    east (phi) in each RING pixel."""
    l0, b0 = np.radians(l0_deg), np.radians(b0_deg)
    ordered = np.array([np.cos(b0) * np.cos(l0), np.cos(b0) * np.sin(l0), np.sin(b0)])
    return np.einsum("i,kip->kp", ordered, _sky_basis(nside))


def _synthesis_stack(alm: np.ndarray, nside: int) -> np.ndarray:
    """(n, nalm) complex64 alms -> (n, npix) float32 maps, spin 0, in one single-precision transform."""
    import ducc0
    lmax = sht.lmax_from_size(alm.shape[-1])
    out = ducc0.sht.experimental.synthesis(alm=np.ascontiguousarray(alm[:, None, :]), spin=0, lmax=lmax,
                                           mstart=sht._mstart(lmax), nthreads=sht.nthreads(),
                                           **sht._geometry(nside))
    return out[:, 0]


def field_layers(rng, nside: int, p: dict | None = None) -> dict:
    """Line-of-sight sums over the magnetic-field layers (RING maps at ``nside``):

    ``dust_q, dust_u``: mean of cos^2(gamma) (cos 2psi, sin 2psi), psi perpendicular to B_perp;
    ``dust_c``: mean of cos^2(gamma); ``sync_q, sync_u, sync_i``: mean of B_perp^2 (cos 2psi,
    sin 2psi) and of B_perp^2, in units of the ordered field squared.  Q/U follow healpy's
    (COSMO) convention.
    """
    p = GALAXY["field"] if p is None else p
    nside_b = min(nside, p["nside_max"])
    lmax_b = min(3 * nside_b - 1, p["lmax"])
    cl = _power_law_cl(lmax_b, p["alpha_m"])                      # unit variance per component
    basis = _sky_basis(nside_b)
    ordered_rtp = _ordered_field(nside_b, p["l0_deg"], p["b0_deg"])
    scale = p["f_m"] / np.sqrt(3.0)                              # 3-D rms of the turbulent field = f_M |B0|
    sums = {k: np.zeros(basis.shape[-1]) for k in ("dust_q", "dust_u", "dust_c", "sync_q", "sync_u", "sync_i")}
    for _ in range(p["layers"]):
        alm = np.stack([_random_alm(rng, lmax_b, cl) for _ in range(3)]).astype(np.complex64)
        turb = _synthesis_stack(alm, nside_b)                    # (3, npix) Cartesian components, float32
        br, bt, bp = (o + scale * (e[0] * turb[0] + e[1] * turb[1] + e[2] * turb[2])
                      for o, e in zip(ordered_rtp, basis))
        perp2 = bt * bt + bp * bp
        q, u = bp * bp - bt * bt, 2 * bt * bp                    # perpendicular to B_perp, times B_perp^2
        inv = 1.0 / (perp2 + br * br)
        sums["dust_q"] += q * inv
        sums["dust_u"] += u * inv
        sums["dust_c"] += perp2 * inv
        sums["sync_q"] += q
        sums["sync_u"] += u
        sums["sync_i"] += perp2
    keys = list(sums)
    maps = np.stack([sums[k] for k in keys]) / p["layers"]
    maps = _upgrade(maps, nside, lmax_b)
    return dict(zip(keys, maps))


def _ridge_orientation(g_alm: np.ndarray, nside: int) -> np.ndarray:
    """(2, npix) Q, U of unit-ish length perpendicular to the ridges of the field with alm ``g_alm``:
    the spin-2 field whose E modes are the field's own (pure E, TE > 0), softly normalised."""
    eb = np.zeros((2, g_alm.size), dtype=np.complex64)
    eb[0] = g_alm
    qu = sht.alm2map_spin2(eb, nside).astype(np.float64)
    amp2 = qu[0] ** 2 + qu[1] ** 2
    return qu / np.sqrt(amp2 + amp2.mean())


def _filamentary_galaxy(components, nside, template_rng, sed) -> tuple:
    """(dust intensity at 353 GHz or None, {"dust": ..., "synchrotron": ...}) of the filamentary Galaxy."""
    import pysm3.models as m
    import pysm3.units as u
    one = u.dimensionless_unscaled
    want_dust, want_sync = "dust" in components, "synchrotron" in components
    if not (want_dust or want_sync or "ame" in components):
        return None, {}
    out, dust_i = {}, None
    lmax = 3 * nside - 1
    pd = GALAXY["dust"]
    r = template_rng("dust")
    g_alm = _random_alm(r, lmax, _power_law_cl(lmax, pd["cl_index"]))
    g = sht.alm2map(g_alm.astype(np.complex64), nside).astype(np.float64)
    lognorm = np.exp(pd["log_sigma"] * g - pd["log_sigma"] ** 2 / 2)
    column = pd["high_lat_uK_RJ"] * slab_envelope(nside, pd["slab_height"]) * lognorm    # uK_RJ at 353 GHz
    dust_i = column
    layers = None
    if want_dust or want_sync:
        layers = field_layers(template_rng("magnetic-field"), nside)
    if want_dust:
        # filaments follow the field, but not only the ones seen in this column: the ridge pattern
        # is that of a field correlated (coefficient ridge_rho) with the intensity's
        rho = pd["ridge_rho"]
        ridge_alm = rho * g_alm + np.sqrt(1 - rho ** 2) * _random_alm(r, lmax, _power_law_cl(lmax, pd["cl_index"]))
        ridges = _ridge_orientation(ridge_alm, nside)
        a, p0 = pd["align"], pd["p0"]
        q = (1 - a) * layers["dust_q"] + a * layers["dust_c"] * ridges[0]
        uu = (1 - a) * layers["dust_u"] + a * layers["dust_c"] * ridges[1]
        dust_i = column * (1 - p0 * (layers["dust_c"] - 2.0 / 3.0))
        smooth = _smooth_part(g_alm, nside)                      # large-scale column density (unit variance)
        beta = sed("dust", "beta", pd) + pd["beta_spatial"] * (
            pd["beta_rho"] * smooth + np.sqrt(1 - pd["beta_rho"] ** 2) * gaussian_field(r, nside, -2.5, _SMOOTH_LMAX))
        temp = sed("dust", "temp_K", pd) + pd["temp_spatial"] * (
            pd["temp_rho"] * smooth + np.sqrt(1 - pd["temp_rho"] ** 2) * gaussian_field(r, nside, -2.5, _SMOOTH_LMAX))
        out["dust"] = m.ModifiedBlackBody(
            map_I=dust_i << u.uK_RJ, map_Q=(p0 * column * q) << u.uK_RJ, map_U=(p0 * column * uu) << u.uK_RJ,
            freq_ref_I=f"{pd['freq_ref_ghz']} GHz", freq_ref_P=f"{pd['freq_ref_ghz']} GHz",
            map_mbb_index=beta << one, map_mbb_temperature=temp << u.K, nside=nside)
    if want_sync:
        ps = GALAXY["synchrotron"]
        rs = template_rng("synchrotron")
        s_alm = _random_alm(rs, lmax, _power_law_cl(lmax, ps["cl_index"]))
        gs = sht.alm2map(s_alm.astype(np.complex64), nside).astype(np.float64)
        electrons = ps["high_lat_uK_RJ"] * slab_envelope(nside, ps["slab_height"], 0.3) * \
            np.exp(ps["log_sigma"] * gs - ps["log_sigma"] ** 2 / 2)
        norm = electrons / np.mean(layers["sync_i"])
        # intrinsic fraction for electron index p = 3 (beta_s ~ -3); a share of the emission comes from the
        # thick disk, whose long sight lines through the turbulent field average its polarisation away
        p_int = (3 + 1) / (3 + 7 / 3) * (1 - ps["thick_share"])
        beta = sed("synchrotron", "beta", ps) + ps["beta_spatial"] * (
            ps["beta_rho"] * _smooth_part(s_alm, nside)
            + np.sqrt(1 - ps["beta_rho"] ** 2) * gaussian_field(rs, nside, -2.5, _SMOOTH_LMAX))
        out["synchrotron"] = m.PowerLaw(
            map_I=(norm * layers["sync_i"]) << u.uK_RJ, map_Q=(p_int * norm * layers["sync_q"]) << u.uK_RJ,
            map_U=(p_int * norm * layers["sync_u"]) << u.uK_RJ,
            freq_ref_I=f"{ps['freq_ref_ghz']} GHz", freq_ref_P=f"{ps['freq_ref_ghz']} GHz",
            map_pl_index=beta << one, nside=nside)
    return dust_i, out


def synthetic_sky(components, nside: int, template_rng, sed_rng_or_none, model: str = "synthetic") -> dict:
    """Build pysm3 model objects for the chosen synthetic components at ``nside`` (RING).

    ``template_rng(name)`` returns the generator for a component's templates;
    ``sed_rng_or_none(name)`` the generator for its per-sim SED parameters, or
    None to use the central values (fixed foregrounds).  ``model`` is one of
    :data:`SKY_MODELS`: ``synthetic`` (the filamentary Galaxy, default) or
    ``synthetic-gaussian`` (the earlier Gaussian-template Galaxy, unchanged byte for byte);
    they differ in dust and synchrotron only.
    """
    if model not in SKY_MODELS:
        raise InputError(f"foregrounds.model: {model!r} is not a synthetic sky; allowed: {', '.join(SKY_MODELS)}")
    import pysm3.models as m
    import pysm3.units as u
    npix = 12 * nside * nside
    one = u.dimensionless_unscaled
    zeros = np.zeros(npix) << u.uK_RJ           # one array shared by every unpolarised component
    # templates are handed to pysm3 as views (<<), not copies: memory is what limits high nside
    models = {}

    def sed(name, key, params=None):
        p = PARAMS[name] if params is None else params
        r = sed_rng_or_none(name)
        spread = p.get(key + "_sim", 0.0)
        return p[key] if r is None or spread == 0 else float(r.normal(p[key], spread))

    dust_i = None
    if model == "synthetic":
        dust_i, galaxy = _filamentary_galaxy(components, nside, template_rng, sed)
        models.update(galaxy)
    elif "dust" in components or "ame" in components:
        p, r = PARAMS["dust"], template_rng("dust")
        dust_i = p["high_lat_uK_RJ"] * slab_envelope(nside, p["slab_height"]) * \
            lognormal(r, nside, p["log_sigma"], p["cl_index"])
        if "dust" in components:
            qu = p["pol_fraction"] * dust_i * polarised_field(r, nside, p["pol_cl_index"], p["eb_ratio"])
            beta = sed("dust", "beta") + p["beta_spatial"] * gaussian_field(r, nside, -2.5, _SMOOTH_LMAX)
            temp = sed("dust", "temp_K") + p["temp_spatial"] * gaussian_field(r, nside, -2.5, _SMOOTH_LMAX)
            models["dust"] = m.ModifiedBlackBody(
                map_I=dust_i << u.uK_RJ, map_Q=qu[0] << u.uK_RJ, map_U=qu[1] << u.uK_RJ,
                freq_ref_I=f"{p['freq_ref_ghz']} GHz", freq_ref_P=f"{p['freq_ref_ghz']} GHz",
                map_mbb_index=beta << one, map_mbb_temperature=temp << u.K, nside=nside)
    if model == "synthetic-gaussian" and "synchrotron" in components:
        p, r = PARAMS["synchrotron"], template_rng("synchrotron")
        amp = p["high_lat_uK_RJ"] * slab_envelope(nside, p["slab_height"], 0.3) * \
            lognormal(r, nside, p["log_sigma"], p["cl_index"])
        qu = p["pol_fraction"] * amp * polarised_field(r, nside, p["pol_cl_index"], p["eb_ratio"])
        beta = sed("synchrotron", "beta") + p["beta_spatial"] * gaussian_field(r, nside, -2.5, _SMOOTH_LMAX)
        models["synchrotron"] = m.PowerLaw(
            map_I=amp << u.uK_RJ, map_Q=qu[0] << u.uK_RJ, map_U=qu[1] << u.uK_RJ,
            freq_ref_I=f"{p['freq_ref_ghz']} GHz", freq_ref_P=f"{p['freq_ref_ghz']} GHz",
            map_pl_index=beta << one, nside=nside)
    if "freefree" in components:
        p, r = PARAMS["freefree"], template_rng("freefree")
        amp = p["high_lat_uK_RJ"] * slab_envelope(nside, p["slab_height"], 1.0) * \
            lognormal(r, nside, p["log_sigma"], p["cl_index"])
        models["freefree"] = m.PowerLaw(
            map_I=amp << u.uK_RJ, map_Q=zeros, map_U=zeros, freq_ref_I=f"{p['freq_ref_ghz']} GHz",
            freq_ref_P=f"{p['freq_ref_ghz']} GHz", map_pl_index=p["beta"] * one, nside=nside)
    if "ame" in components:
        p, r = PARAMS["ame"], template_rng("ame")
        amp = p["dust_ratio"] * dust_i * lognormal(r, nside, p["log_sigma"], p["cl_index"])
        models["ame"] = m.CurvedPowerLaw(
            map_I=amp << u.uK_RJ, map_Q=zeros, map_U=zeros, freq_ref_I=f"{p['freq_ref_ghz']} GHz",
            freq_ref_P=f"{p['freq_ref_ghz']} GHz", map_pl_index=p["beta"] * one,
            spectral_curvature=sed("ame", "curvature") * one, freq_curve=f"{p['freq_ref_ghz']} GHz",
            nside=nside)
    if "cib" in components:
        p, r = PARAMS["cib"], template_rng("cib")
        amp = p["mean_uK_RJ"] * (1 + p["rel_rms"] * gaussian_field(r, nside, p["cl_index"]))
        models["cib"] = m.ModifiedBlackBody(
            map_I=amp << u.uK_RJ, map_Q=zeros, map_U=zeros,
            freq_ref_I=f"{p['freq_ref_ghz']} GHz", freq_ref_P=f"{p['freq_ref_ghz']} GHz",
            map_mbb_index=sed("cib", "beta") * one, map_mbb_temperature=sed("cib", "temp_K") * u.K, nside=nside)
    pix_arcmin2 = 4 * np.pi / npix * (180 * 60 / np.pi) ** 2
    if "tsz" in components:
        p, r = PARAMS["tsz"], template_rng("tsz")
        count = int(r.poisson(p["mean_count"]))
        areas = _pareto(r, count, p["y_area_min_arcmin2"], p["count_slope"], p["y_area_max_arcmin2"])
        y_map, _ = _point_sources(r, nside, count, areas / pix_arcmin2)
        models["tsz"] = _make_thermal_sz_class()(y_map, nside)
    if "radio" in components:
        p, r = PARAMS["radio"], template_rng("radio")
        mean_count = p["count_above_0p5Jy"] * (p["flux_min_jy"] / 0.5) ** (1 - p["count_slope"])
        count = int(r.poisson(mean_count))
        flux = _pareto(r, count, p["flux_min_jy"], p["count_slope"], 100.0)
        freq = p["freq_ref_ghz"] * 1e9
        omega = 4 * np.pi / npix
        t_rj = flux * 1e-26 * 2.99792458e8 ** 2 / (2 * 1.380649e-23 * freq ** 2 * omega) * 1e6  # uK_RJ
        amp, pix = _point_sources(r, nside, count, t_rj)
        angle = r.uniform(0, np.pi, count)
        q = np.zeros(npix)
        uu = np.zeros(npix)
        np.add.at(q, pix, p["pol_fraction"] * t_rj * np.cos(2 * angle))
        np.add.at(uu, pix, p["pol_fraction"] * t_rj * np.sin(2 * angle))
        index = np.full(npix, p["flux_index"] - 2.0)
        index[pix] = r.normal(p["flux_index"], p["flux_index_spread"], count) - 2.0
        models["radio"] = m.PowerLaw(
            map_I=amp << u.uK_RJ, map_Q=q << u.uK_RJ, map_U=uu << u.uK_RJ,
            freq_ref_I=f"{p['freq_ref_ghz']} GHz", freq_ref_P=f"{p['freq_ref_ghz']} GHz",
            map_pl_index=index << one, nside=nside)
    return {name: models[name] for name in components if name in models}


# ---------------------------------------------------------------- evaluating the models
#
# pysm3's numba kernels evaluate every SED factor twice (I and P) with two black bodies each,
# and cannot tell that an SED is the same in every pixel.  For the classes the synthetic sky
# uses, with a delta bandpass, the emission is written here as reference maps x SED factors:
# the same formulas (tests compare with get_emission to 1e-10), evaluated once per pixel, and
# a spatially uniform SED (free-free, AME, CIB, tSZ) is a single number, so those components
# need one harmonic transform per sim instead of one per detector.

def _exact_type(model, name):
    import pysm3.models as m
    return type(model) is getattr(m, name)


def _values(x):
    return np.asarray(getattr(x, "value", x))


def _maybe_scalar(x: np.ndarray):
    """A constant array as a 0-d array (one SED factor for the whole sky), else the array."""
    return x.reshape(-1)[:1].reshape(()) if x.size and np.all(x == x.reshape(-1)[0]) else x


def _parameters(model) -> dict | None:
    """The SED parameters of a model this module can evaluate (cached on the model), else None."""
    cached = getattr(model, "_cmbcube_sed", False)
    if cached is not False:
        return cached
    if getattr(model, "sed_kind", None) == "tsz":
        params = {"kind": "tsz"}
    elif _exact_type(model, "ModifiedBlackBody"):
        params = {"kind": "mbb", "beta": _maybe_scalar(_values(model.mbb_index)),
                  "temp": _maybe_scalar(_values(model.mbb_temperature))}
    elif _exact_type(model, "CurvedPowerLaw"):
        params = {"kind": "curved", "beta": _maybe_scalar(_values(model.pl_index)),
                  "curve": float(_values(model.freq_curve)), "curvature": float(_values(model.spectral_curvature))}
    elif _exact_type(model, "PowerLaw"):
        params = {"kind": "power", "beta": _maybe_scalar(_values(model.pl_index))}
    else:
        params = None
    if params is not None:
        for key in ("beta", "temp"):
            if key in params:
                params[key] = params[key].astype(np.float64, copy=False)     # SED factors in double precision
    if params is not None and params["kind"] != "tsz":
        params["ref_I"] = float(_values(model.freq_ref_I))
        params["ref_P"] = float(_values(model.freq_ref_P)) if getattr(model, "freq_ref_P", None) is not None \
            else params["ref_I"]
    model._cmbcube_sed = params
    return params


def reference_maps(model, ncomp: int = 3) -> np.ndarray:
    """(ncomp, npix) copies of the maps the SED factors multiply (I or I, Q, U): the templates
    (uK_RJ) or the Compton-y map."""
    maps = _reference_views(model)
    out = np.zeros((ncomp, np.size(maps[0])))
    for k, m in enumerate(maps[:ncomp]):
        out[k] = m
    return out


def _reference_views(model) -> list[np.ndarray]:
    """The model's own reference arrays (float64, not copied): [y] for tSZ, [I] or [I, Q, U]."""
    params = _parameters(model)
    if params is None:
        raise TypeError(f"{type(model).__name__} has no separable description")
    if params["kind"] == "tsz":
        maps = [model.y_map]
    elif getattr(model, "Q_ref", None) is None or not getattr(model, "has_polarization", True):
        maps = [model.I_ref]
    else:
        maps = [model.I_ref, model.Q_ref, model.U_ref]
    return [_values(m) for m in maps]


def _factor(params: dict, freq: float, ref: float):
    kind = params["kind"]
    if kind == "tsz":
        return np.float64(tsz_sed(freq))
    log_ratio = np.log(np.float64(freq) / ref)
    if kind == "power":
        return np.exp(log_ratio * params["beta"])
    if kind == "curved":
        return np.exp(log_ratio * (params["beta"] + params["curvature"] * np.log(np.float64(freq) / params["curve"])))
    # modified black body in RJ units: (nu/nu0)^(beta - 2) B_nu(T) / B_nu0(T)
    c = H_PLANCK * 1e9 / (K_BOLTZMANN * params["temp"])
    return np.exp(log_ratio * (params["beta"] + 1.0)) * (np.expm1(c * ref) / np.expm1(c * freq))


def sed_factors(model, freq_ghz: float):
    """(I factor, P factor) with emission = reference_maps x factor: 0-d arrays when the SED is
    the same in every pixel, (npix,) arrays otherwise; None for models evaluated by pysm3."""
    params = _parameters(model)
    if params is None:
        return None
    f_i = _factor(params, freq_ghz, params.get("ref_I", 0.0))
    f_p = f_i if params.get("ref_P") == params.get("ref_I") else _factor(params, freq_ghz, params["ref_P"])
    return f_i, f_p


def uniform_sed(model):
    """For a model with the same SED everywhere: ``f(freq_ghz) -> float`` with
    emission(freq) = reference_maps x f(freq) in I.  Holds the SED parameters only, not the maps."""
    params = _parameters(model)
    if params is None or not is_uniform(model):
        raise InputError(f"{type(model).__name__}: the SED varies across the sky")
    return lambda freq_ghz: float(_factor(params, freq_ghz, params.get("ref_I", 0.0)))


def is_uniform(model) -> bool:
    """True when the model's SED is one number per frequency for the whole sky."""
    factors = sed_factors(model, 100.0)
    return factors is not None and all(np.ndim(f) == 0 for f in factors)


def emission(model, freq_ghz, ncomp: int = 3, scale: float = 1.0, dtype=np.float64, weights=None) -> np.ndarray:
    """(ncomp, npix) emission in uK_RJ x ``scale``: I, or I, Q, U.  ``freq_ghz``: one frequency (delta
    bandpass), or the frequencies of a band with ``weights``, its normalised integration weights in uK_RJ
    (``instrument.Detector.band_weights``: the band-integrated emission is sum_i weights_i emission(nu_i)).

    Equal to pysm3's ``get_emission`` (the fallback for any other model); the SED factors are
    computed in double precision whatever ``dtype`` the result is stored in.
    """
    freqs = np.atleast_1d(np.asarray(freq_ghz, dtype=np.float64))
    if freqs.size > 1:
        if weights is None or len(weights) != freqs.size:
            raise InputError("emission over a band needs one weight per frequency")
        if _parameters(model) is None:       # pysm3 evaluates it: one frequency at a time, summed
            out = None
            for nu, w in zip(freqs, weights):
                term = emission(model, float(nu), ncomp, scale * float(w), np.float64)
                out = term if out is None else out + term
            return out.astype(dtype, copy=False)
        acc_i = acc_p = None                        # running sums: two SED-sized arrays at most
        for nu, w in zip(freqs, weights):
            f_i, f_p = sed_factors(model, float(nu))
            same = f_p is f_i                       # one SED for I and P (the usual case): one sum
            acc_i = float(w) * f_i if acc_i is None else acc_i + float(w) * f_i
            if not same:
                acc_p = float(w) * f_p if acc_p is None else acc_p + float(w) * f_p
        factors = (acc_i, acc_i if acc_p is None else acc_p)
    else:
        factors = sed_factors(model, float(freqs[0]))
    if factors is None:
        import pysm3.units as u
        out = np.asarray(model.get_emission(float(freqs[0]) * u.GHz).to_value(u.uK_RJ))[:ncomp] * scale
        return out.astype(dtype, copy=False)
    maps = _reference_views(model)
    out = np.zeros((ncomp, np.size(maps[0])), dtype=dtype)
    for k, m in enumerate(maps[:ncomp]):
        np.multiply(m, factors[min(k, 1)] * scale, out=out[k])
    return out


# ---------------------------------------------------------------- real pysm3 presets

def _data_dirs(data_dir: str | None) -> list[Path]:
    dirs = [Path(data_dir)] if data_dir else []
    if os.environ.get("PYSM_LOCAL_DATA"):
        dirs.append(Path(os.environ["PYSM_LOCAL_DATA"]))
    return dirs


def pysm_files(preset: str, nside: int) -> list[str]:
    """Template files a pysm3 preset names in its configuration (relative paths)."""
    from pysm3.sky import PRESET_MODELS
    config = PRESET_MODELS[preset]
    sections = [v for v in config.values() if isinstance(v, dict)] or [config]
    files = []
    for section in sections:
        available = section.get("available_nside")
        templates_nside = min(available, key=lambda x: abs(x - nside)) if available else nside
        for key, value in section.items():
            # unit strings ("MJy / sr", input_units, unit_I...) contain "/" but name no file
            if isinstance(value, str) and ("/" in value or value.endswith((".fits", ".gz", ".txt"))) \
                    and key != "class" and "unit" not in key:
                if "{layer}" in value:
                    files += [value.format(layer=k) for k in range(1, int(section.get("num_layers", 3)) + 1)]
                else:
                    files.append(value.replace("{nside}", str(templates_nside)))
        version = section.get("websky_version")
        if version is not None:
            files.append(f"websky/{version}/")          # a directory of per-frequency maps
    return list(dict.fromkeys(files))                       # each file once (a1 names emissivity.txt twice)


def missing_pysm_files(presets, nside: int, data_dir: str | None) -> list[str]:
    dirs = _data_dirs(data_dir)
    missing = []
    for preset in presets:
        for name in pysm_files(preset, nside):
            if not any((d / name).exists() for d in dirs):
                missing.append(f"{preset}: {name}")
    return missing


def pysm_sky(presets, nside: int, data_dir: str | None) -> dict:
    """pysm3 model objects for presets, reading templates from local directories only."""
    missing = missing_pysm_files(presets, nside, data_dir)
    if missing:
        where = ", ".join(str(d) for d in _data_dirs(data_dir)) or "(no directory: set foregrounds.data_dir or PYSM_LOCAL_DATA)"
        raise MissingFileError("pysm3 template files missing (looked in " + where + "):\n  " + "\n  ".join(missing))
    from astropy.utils.data import conf
    conf.allow_internet = False          # never hang on the network: offline means fail fast
    if data_dir:
        os.environ["PYSM_LOCAL_DATA"] = str(data_dir)
    from pysm3.sky import PRESET_MODELS, create_components_from_config
    return {preset: _Sum(create_components_from_config({preset: PRESET_MODELS[preset]}, nside=nside))
            for preset in presets}


class _Sum:
    """A preset made of several pysm3 components (a1 = two AME populations) seen as one."""

    def __init__(self, parts):
        self.parts = list(parts)

    def get_emission(self, freqs, weights=None):
        return sum(part.get_emission(freqs, weights) for part in self.parts)
