"""The Galaxy: dust and synchrotron of both synthetic sky models.

``synthetic`` (version 3.0, the default) is the filamentary Galaxy.  Dust intensity is a lognormal
field under the latitude law.  Polarisation follows the approach of Planck Int. XLIV (2016),
Vansyngel et al. (2017) and Ghosh et al. (2017): a large-scale ordered magnetic field (fixed
direction l0 = 70 deg, b0 = 24 deg) plus a Gaussian random turbulent field with C_ell ~ ell^alpha_M
(alpha_M = -2.8, f_M = 0.9), summed over three independent layers along the line of sight (Ghosh et
al. 2017's number).  The field is band-limited at ell <= 191 (built at nside 64 and interpolated
harmonically above: ~1 deg), which keeps its cost flat in nside.  In each layer the field's angle to
the plane of the sky (gamma) and its projected orientation set the Stokes parameters (healpy/COSMO
convention, U = 2 p_theta p_phi for a polarisation direction p): for dust p0 cos^2(gamma) (cos 2psi,
sin 2psi) with the polarisation perpendicular to B_perp, and I (1 - p0 (cos^2 gamma - 2/3)); the sum
over layers depolarises.  Matter structures are aligned with the field (Planck Int. XXXII, XXXV,
XXXVIII; Clark et al. 2015), in two ways (``fields.ridge_orientation``): polarisation across the ridges
of a field correlated with the column (pure E: EE > BB, TE > 0; Zaldarriaga 2001, Huffenberger et al.
2020), and along the column's own gradient (the field along its iso-intensity contours: the relative
orientation Planck measures; the Hessian of a Gaussian field is independent of its gradient, so the
ridge term alone leaves the orientation random).
Synchrotron comes from the same field layers: emissivity ~ B_perp^2 (electron index p = 3) times a
lognormal cosmic-ray density under its own thicker slab.  Its polarisation: the intrinsic fraction
(p+1)/(p+7/3) = 0.75 times a depolarisation factor that varies smoothly on the sky (a logistic field:
median p ~ 15% at high latitude), with an orientation mostly from synchrotron filaments along the field
at every scale (a full-resolution spin-2 field, C_ell ~ ell^-2.95, E > B, correlated with the
electron density) and the layers' pattern, plus Loop I (Berkhuijsen et al. 1971) as a brighter, less
depolarised shell with the field along it (30-40% polarised, E-mode pattern).  SED parameters vary on
the sky and are correlated with the intensity.

Calibration, measured with decoupled, B-purified bandpowers (NaMaster, ``skystats.purified_spectra``)
on the 71% of the sky with the faintest dust (Planck's LR71 size, C2 apodised): dust at 353 GHz
D_ell^EE(80) ~ 315 uK_CMB^2, alpha_EE = -2.42, alpha_BB = -2.54 (Planck 2018 XI, A&A 641, A11),
BB/EE ~ 0.5 and r_TE ~ 0.36 (Planck 2018 XI; Int. XXX); the field parallel to the intensity structures
at |b| > 20 deg (Planck Int. XXXII/XXXV); synchrotron at 30 GHz BB/EE ~ 0.22-0.35 and alpha ~ -2.9
(Martire et al. 2022; Planck 2018 XI; S-PASS), and polarised synchrotron and dust equal in rms near
70-80 GHz at 40' (Planck 2018 IV, A&A 641, A4).  ``skystats.REFERENCES`` lists each figure with its
source; ``benchmarks/sky_models.py --realism`` measures them.  The amplitudes and the alignment /
ridge / depolarisation parameters in GALAXY were set from that measurement; the rest are physical
choices.

``synthetic-gaussian`` (version 1.0) has Gaussian random-field polarisation templates (PARAMS).
"""
from __future__ import annotations

import numpy as np

from cmbcube.science import sht
from cmbcube.science.foregrounds import fields, seds
from cmbcube.science.foregrounds.base import Component, SkyContext
from cmbcube.science.foregrounds.fields import SMOOTH_LMAX, gaussian_field
from cmbcube.science.foregrounds.params import GALAXY, PARAMS


def field_layers(rng, nside: int, p: dict | None = None, frame: tuple | None = None) -> dict:
    """Line-of-sight sums over the magnetic-field layers (RING maps at ``nside``).

    ``dust_q, dust_u``: mean of cos^2(gamma) (cos 2psi, sin 2psi), psi perpendicular to B_perp;
    ``dust_c``: mean of cos^2(gamma); ``sync_q, sync_u, sync_i``: mean of B_perp^2 (cos 2psi,
    sin 2psi) and of B_perp^2, in units of the ordered field squared.  Q/U follow healpy's
    (COSMO) convention.  ``frame``: the Galaxy's frame (``fields.random_frame``) the ordered field's
    direction is given in.
    """
    p = GALAXY["field"] if p is None else p
    nside_b = min(nside, p["nside_max"])
    lmax_b = min(3 * nside_b - 1, p["lmax"])
    cl = fields.power_law_cl(lmax_b, p["alpha_m"])                # unit variance per component
    basis = fields.sky_basis(nside_b)
    ordered_rtp = fields.ordered_field(nside_b, *fields.galactic_direction(p["l0_deg"], p["b0_deg"], frame))
    scale = p["f_m"] / np.sqrt(3.0)                              # 3-D rms of the turbulent field = f_M |B0|
    sums = {k: np.zeros(basis.shape[-1]) for k in ("dust_q", "dust_u", "dust_c", "sync_q", "sync_u", "sync_i")}
    for _ in range(p["layers"]):
        alm = np.stack([fields.random_alm(rng, lmax_b, cl) for _ in range(3)]).astype(np.complex64)
        turb = fields.synthesis_stack(alm, nside_b)              # (3, npix) Cartesian components, float32
        br, bt, bp = (o + scale * (e[0] * turb[0] + e[1] * turb[1] + e[2] * turb[2])
                      for o, e in zip(ordered_rtp, basis))
        perp2 = bt * bt + bp * bp
        # polarisation along (-bp, bt), perpendicular to B_perp, times B_perp^2; healpy/COSMO U = 2 p_theta p_phi
        q, u = bp * bp - bt * bt, -2 * bt * bp
        inv = 1.0 / (perp2 + br * br)
        sums["dust_q"] += q * inv
        sums["dust_u"] += u * inv
        sums["dust_c"] += perp2 * inv
        sums["sync_q"] += q
        sums["sync_u"] += u
        sums["sync_i"] += perp2
    keys = list(sums)
    maps = np.stack([sums[k] for k in keys]) / p["layers"]
    maps = fields.upgrade(maps, nside, lmax_b)
    return dict(zip(keys, maps))


# ---------------------------------------------------------------- state shared by dust, synchrotron and AME

def _layers(ctx: SkyContext) -> dict:
    return ctx.shared("magnetic-field", lambda: field_layers(ctx.template_rng("magnetic-field"), ctx.nside,
                                                                   frame=ctx.frame))


def _column(ctx: SkyContext) -> tuple:
    """(dust template generator, its field's alm or None, dust column in uK_RJ at 353 GHz): the first
    draws of the dust stream; the dust component continues drawing from the same generator."""
    def make():
        r = ctx.template_rng("dust")
        nside = ctx.nside
        if ctx.model == "synthetic":
            pd, lmax = GALAXY["dust"], 3 * nside - 1
            g_alm = fields.random_alm(r, lmax, fields.power_law_cl(lmax, pd["cl_index"]))
            g = sht.alm2map(g_alm.astype(np.complex64), nside).astype(np.float64)
            lognorm = np.exp(pd["log_sigma"] * g - pd["log_sigma"] ** 2 / 2)
            envelope = fields.slab_envelope(nside, pd["slab_height"], frame=ctx.frame)
            return r, g_alm, pd["high_lat_uK_RJ"] * envelope * lognorm
        p = PARAMS["dust"]
        return r, None, p["high_lat_uK_RJ"] * fields.slab_envelope(nside, p["slab_height"], frame=ctx.frame) * \
            fields.lognormal(r, nside, p["log_sigma"], p["cl_index"])
    return ctx.shared("dust-column", make)


def dust_intensity(ctx: SkyContext) -> np.ndarray:
    """Dust intensity (uK_RJ, 353 GHz) of this sky: the dust component's I when the sky has dust, else
    the column it would start from (AME is proportional to it)."""
    def make():
        column = _column(ctx)[2]
        if ctx.model != "synthetic" or "dust" not in ctx.components:
            return column
        return column * (1 - GALAXY["dust"]["p0"] * (_layers(ctx)["dust_c"] - 2.0 / 3.0))
    return ctx.shared("dust-intensity", make)


# ---------------------------------------------------------------- the components

def build_dust(ctx: SkyContext):
    """Build the thermal dust of one sky as a pysm3 modified black body."""
    import pysm3.models as m
    import pysm3.units as u
    one = u.dimensionless_unscaled
    nside = ctx.nside
    r, g_alm, column = _column(ctx)
    if ctx.model == "synthetic":
        pd, lmax = GALAXY["dust"], 3 * nside - 1
        layers = _layers(ctx)
        # filaments follow the field, but not only the ones seen in this column: the ridge pattern
        # is that of a field correlated (coefficient ridge_rho) with the intensity's
        rho = pd["ridge_rho"]
        ridge_alm = rho * g_alm + np.sqrt(1 - rho ** 2) * fields.random_alm(r, lmax,
                                                                            fields.power_law_cl(lmax, pd["cl_index"]))
        ridges = fields.ridge_orientation(ridge_alm, nside, g_alm, pd["contour_weight"], pd["contour_index"],
                                            pd["ridge_index"], pd["ridge_soft"])
        a, p0 = pd["align"], pd["p0"]
        q = (1 - a) * layers["dust_q"] + a * layers["dust_c"] * ridges[0]
        uu = (1 - a) * layers["dust_u"] + a * layers["dust_c"] * ridges[1]
        dust_i = dust_intensity(ctx)
        smooth = fields.smooth_part(g_alm, nside)                # large-scale column density (unit variance)
        beta = ctx.sed("dust", "beta", pd) + pd["beta_spatial"] * (
            pd["beta_rho"] * smooth + np.sqrt(1 - pd["beta_rho"] ** 2) * gaussian_field(r, nside, -2.5, SMOOTH_LMAX))
        temp = ctx.sed("dust", "temp_K", pd) + pd["temp_spatial"] * (
            pd["temp_rho"] * smooth + np.sqrt(1 - pd["temp_rho"] ** 2) * gaussian_field(r, nside, -2.5, SMOOTH_LMAX))
        return m.ModifiedBlackBody(
            map_I=dust_i << u.uK_RJ, map_Q=(p0 * column * q) << u.uK_RJ, map_U=(p0 * column * uu) << u.uK_RJ,
            freq_ref_I=f"{pd['freq_ref_ghz']} GHz", freq_ref_P=f"{pd['freq_ref_ghz']} GHz",
            map_mbb_index=beta << one, map_mbb_temperature=temp << u.K, nside=nside)
    p, dust_i = PARAMS["dust"], column
    qu = p["pol_fraction"] * dust_i * fields.polarised_field(r, nside, p["pol_cl_index"], p["eb_ratio"])
    beta = ctx.sed("dust", "beta", p) + p["beta_spatial"] * gaussian_field(r, nside, -2.5, SMOOTH_LMAX)
    temp = ctx.sed("dust", "temp_K", p) + p["temp_spatial"] * gaussian_field(r, nside, -2.5, SMOOTH_LMAX)
    return m.ModifiedBlackBody(
        map_I=dust_i << u.uK_RJ, map_Q=qu[0] << u.uK_RJ, map_U=qu[1] << u.uK_RJ,
        freq_ref_I=f"{p['freq_ref_ghz']} GHz", freq_ref_P=f"{p['freq_ref_ghz']} GHz",
        map_mbb_index=beta << one, map_mbb_temperature=temp << u.K, nside=nside)


def build_synchrotron(ctx: SkyContext):
    """Build the synchrotron of one sky as a pysm3 power law."""
    import pysm3.models as m
    import pysm3.units as u
    one = u.dimensionless_unscaled
    nside = ctx.nside
    if ctx.model == "synthetic":
        ps, lmax = GALAXY["synchrotron"], 3 * nside - 1
        layers = _layers(ctx)
        rs = ctx.template_rng("synchrotron")
        s_alm = fields.random_alm(rs, lmax, fields.power_law_cl(lmax, ps["cl_index"]))
        gs = sht.alm2map(s_alm.astype(np.complex64), nside).astype(np.float64)
        electrons = ps["high_lat_uK_RJ"] * fields.slab_envelope(nside, ps["slab_height"], 0.3, ctx.frame) * \
            np.exp(ps["log_sigma"] * gs - ps["log_sigma"] ** 2 / 2)
        del gs                      # full-sky temporaries are dropped as soon as used: memory bounds nside 512
        shell, q_loop, u_loop = fields.loop_shell(nside, *fields.galactic_direction(*ps["loop"][:2], ctx.frame),
                                                  *ps["loop"][2:4])
        electrons = electrons * (1 + ps["loop"][4] * shell)          # the loop's shell is bright too
        # the layers' mean B_perp^2, harmonically interpolated from nside 64, can dip just below zero
        # where the ordered field points along the line of sight: emissivity is never negative
        b_perp2 = np.maximum(layers["sync_i"], 0.0)
        norm = electrons / np.mean(b_perp2)
        del electrons
        sync_i = norm * b_perp2
        del norm
        # orientation: the layers' own pattern (|.| <= 1) plus filaments along the field at every
        # scale (a full-resolution spin-2 field, E > B), and radial in the loop's shell
        eb = fields.spin2_field(rs, lmax, ps["pol_index"], ps["pol_b_over_e"], s_alm, ps["pol_rho"])
        filaments = sht.alm2map_spin2(eb, nside).astype(np.float64)
        del eb
        filaments /= np.sqrt(np.mean(filaments[0] ** 2 + filaments[1] ** 2))
        a = ps["pol_align"]
        # the layers' orientation (|q + iu| <= B_perp^2 in each layer), where B_perp^2 is tiny kept
        # finite (a 1e-12 floor let one such pixel dominate the normalisation of o below and erase
        # the polarisation of the whole sky) and capped at a unit length
        layer_pattern = np.array([layers["sync_q"], layers["sync_u"]]) / np.maximum(b_perp2, 0.05 * np.mean(b_perp2))
        layer_pattern /= np.maximum(1.0, np.hypot(layer_pattern[0], layer_pattern[1]))
        o = (1 - a) * layer_pattern + a * filaments
        del layer_pattern, filaments, b_perp2
        o = o + ps["loop"][6] * shell * np.array([q_loop, u_loop])
        del q_loop, u_loop
        amp2 = o[0] ** 2 + o[1] ** 2
        o /= np.sqrt(amp2 + ps["pol_soft"] * np.mean(amp2))          # |o| < 1, nearly linear where faint
        del amp2
        # depolarisation along the line of sight varies on the sky (thick-disk tangling): a smooth
        # logistic field in (0, 1) times the intrinsic fraction (p + 1) / (p + 7/3) = 0.75 of electron
        # index p = 3; the loop's shell keeps more of it
        z = gaussian_field(rs, nside, ps["depol_index"], SMOOTH_LMAX)
        depol = 1 / (1 + np.exp(-(ps["depol_mean"] + ps["depol_sigma"] * z)))
        del z
        depol = (1 - shell) * depol + shell * ps["loop"][5]
        del shell
        pol = (3 + 1) / (3 + 7 / 3) * depol * sync_i
        del depol
        q_map, u_map = pol * o[0], pol * o[1]
        del pol, o
        beta = ctx.sed("synchrotron", "beta", ps) + ps["beta_spatial"] * (
            ps["beta_rho"] * fields.smooth_part(s_alm, nside)
            + np.sqrt(1 - ps["beta_rho"] ** 2) * gaussian_field(rs, nside, -2.5, SMOOTH_LMAX))
        return m.PowerLaw(
            map_I=sync_i << u.uK_RJ, map_Q=q_map << u.uK_RJ, map_U=u_map << u.uK_RJ,
            freq_ref_I=f"{ps['freq_ref_ghz']} GHz", freq_ref_P=f"{ps['freq_ref_ghz']} GHz",
            map_pl_index=beta << one, nside=nside)
    p, r = PARAMS["synchrotron"], ctx.template_rng("synchrotron")
    amp = p["high_lat_uK_RJ"] * fields.slab_envelope(nside, p["slab_height"], 0.3, ctx.frame) * \
        fields.lognormal(r, nside, p["log_sigma"], p["cl_index"])
    qu = p["pol_fraction"] * amp * fields.polarised_field(r, nside, p["pol_cl_index"], p["eb_ratio"])
    beta = ctx.sed("synchrotron", "beta", p) + p["beta_spatial"] * gaussian_field(r, nside, -2.5, SMOOTH_LMAX)
    return m.PowerLaw(
        map_I=amp << u.uK_RJ, map_Q=qu[0] << u.uK_RJ, map_U=qu[1] << u.uK_RJ,
        freq_ref_I=f"{p['freq_ref_ghz']} GHz", freq_ref_P=f"{p['freq_ref_ghz']} GHz",
        map_pl_index=beta << one, nside=nside)


DUST = Component(build_dust, polarised=True,
                 sed=lambda nu: seds.modified_black_body(nu, PARAMS["dust"]["freq_ref_ghz"], PARAMS["dust"]["beta"],
                                                         PARAMS["dust"]["temp_K"]),
                 description="thermal dust: modified black body")
SYNCHROTRON = Component(build_synchrotron, polarised=True,
                        sed=lambda nu: seds.power_law(nu, PARAMS["synchrotron"]["freq_ref_ghz"],
                                                      PARAMS["synchrotron"]["beta"]),
                        description="synchrotron: power law")
