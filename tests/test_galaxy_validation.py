"""The filamentary Galaxy (``synthetic`` 3.0) against outside references: healpy's own spin-2 geometry
for the Stokes convention, and published dust / synchrotron statistics measured with a decoupled,
B-purified estimator (NaMaster) on an LR71-like mask.  Each published figure, its source and the range
accepted around it are in ``skystats.REFERENCES``; the ranges are the published spread widened by the
sim-to-sim scatter measured here (stated per test)."""
import healpy as hp
import numpy as np
import pytest

from cmbcube.science import foregrounds, skystats as ss

NSIDE = 64          # lmax 191: the ell = 40-160 range of the power-law fits
REF = ss.REFERENCES


def within(key, value):
    r = REF[key]
    return r["lo"] <= value <= r["hi"], f"{key}: {value:.3f} not in [{r['lo']}, {r['hi']}] ({r['source']})"


@pytest.fixture(scope="module")
def dust():
    """353 GHz dust I, Q, U (uK_CMB) of four sims of the default sky at nside 64."""
    return [ss.component_maps("dust", NSIDE, seed=0, sim=sim) for sim in range(4)]


def _ordered_pattern(nside, l0, b0):
    """(dust I, Q, U; synchrotron I, Q, U) of field_layers with the turbulence off and one layer: the
    pattern of a uniform field towards (l0, b0), quadratic in the direction, so band-limited at ell 2."""
    p = dict(foregrounds.GALAXY["field"], f_m=0.0, layers=1, l0_deg=l0, b0_deg=b0)
    lay = foregrounds.field_layers(np.random.default_rng(0), nside, p)
    return (np.array([lay["dust_c"], lay["dust_q"], lay["dust_u"]]),
            np.array([lay["sync_i"], lay["sync_q"], lay["sync_u"]]))


def test_layer_stokes_follow_healpy_cosmo_convention():
    """Defect (2): the layer Q/U must be healpy (COSMO) Stokes parameters.  Outside reference: healpy's
    Rotator.rotate_map_alms, which rotates I, Q, U as a COSMO spin-2 field.  Rotating the pattern of an
    ordered field towards (70, 24) deg must give the pattern of the rotated field direction (exact up to
    quadrature error: the pattern is band-limited at ell = 2); with the IAU sign of U (commit e4cd77c)
    Q and U correlate at ~-0.4 instead."""
    nside, l0, b0 = 32, 70.0, 24.0
    dust0, sync0 = _ordered_pattern(nside, l0, b0)
    rot = hp.Rotator(rot=[40.0, 30.0, 20.0], deg=True)
    l1, b1 = hp.vec2ang(rot(hp.ang2vec(l0, b0, lonlat=True)), lonlat=True)
    dust1, sync1 = _ordered_pattern(nside, float(l1[0]), float(b1[0]))
    for before, after in ((dust0, dust1), (sync0, sync1)):
        rotated = rot.rotate_map_alms(before, lmax=8, use_pixel_weights=False)
        scale = np.abs(after).max()
        for k in range(3):
            assert np.abs(rotated[k] - after[k]).max() < 1e-6 * scale, k


def test_dust_spectra_match_planck_2018_purified(dust):
    """Defect (4): measured like Planck 2018 XI (decoupled, B purified: ``skystats.purified_spectra``) on
    the faintest 71% of the sky (LR71 size, C2 apodised 5 deg), 4-sim mean at nside 64: D_80^EE, alpha_EE,
    alpha_BB, BB/EE and r_TE inside REFERENCES' ranges (Planck 2018 XI: 315 uK^2 +-30%, -2.42 / -2.54
    +-0.1, BB/EE 0.53 in [0.45, 0.62], r_TE 0.36 in [0.25, 0.45]).  Sim-to-sim sd measured here: ~15% on
    D_80, 0.03-0.05 on the slopes, 0.02 on BB/EE, 0.02 on r_TE, so a 4-sim mean sits well inside.
    Commit e4cd77c gives BB/EE 0.35-0.39 and r_TE ~0.50 measured this way (it claimed 0.50 and 0.34
    from a naive pseudo-C_ell)."""
    stats = [ss.dust_statistics(d) for d in dust]
    mean = {k: float(np.mean([s[k] for s in stats])) for k in ("D80_EE", "alpha_EE", "alpha_BB", "BB_over_EE",
                                                              "r_TE")}
    for key, ref in (("D80_EE", "dust_D80_EE"), ("alpha_EE", "dust_alpha_EE"), ("alpha_BB", "dust_alpha_BB"),
                     ("BB_over_EE", "dust_BB_over_EE"), ("r_TE", "dust_r_TE")):
        ok, msg = within(ref, mean[key])
        assert ok, msg


def test_dust_field_parallel_to_intensity_structures(dust):
    """Defect (5): the polarisation-inferred field (angle + 90 deg) runs preferentially along the dust
    intensity structures (iso-intensity contours) at |b| > 20 deg, as Planck Int. XXXII / XXXV and 2018
    XII measure in the diffuse sky: V = <cos 2 phi> (maps smoothed to 3 deg, gradient from healpy's
    alm2map_der1) positive in every sim, and the 4-sim mean above 0.05 and more than 4 standard errors
    (patch scatter, ~0.015 per sim) from zero; not perfect alignment (V < 0.6).  Commit e4cd77c gives
    V = 0.00 +- 0.015."""
    res = [ss.alignment(d, smooth_deg=3.0, b_min_deg=20) for d in dust]
    v = np.array([r["V"] for r in res])
    err = np.sqrt(np.sum([r["V_err"] ** 2 for r in res])) / len(res)
    assert np.all(v > 0), v
    ok, msg = within("alignment_V", float(v.mean()))
    assert ok, msg
    assert v.mean() > 4 * err, (v.mean(), err)


def test_alignment_statistic_sees_a_known_orientation():
    """The statistic itself, on maps whose answer is known: polarisation along the intensity gradient
    (field along the contours) gives V = +1, across it -1, and an unrelated pattern ~0."""
    nside = 32
    rng = np.random.default_rng(1)
    # band-limited at ell 40, so Q and U (quadratic in the gradient) are band-limited at 80 < 3 nside
    np.random.seed(3)
    alm = hp.synalm(np.r_[0, 0, (np.arange(2, 41) / 10.0) ** -3.0], lmax=40)
    i = 10 + hp.alm2map(alm, nside, lmax=40)
    _, gt, gp = hp.alm2map_der1(alm, nside, lmax=40)
    along = np.array([i, gt ** 2 - gp ** 2, 2 * gt * gp])
    across = np.array([i, -(gt ** 2 - gp ** 2), -2 * gt * gp])
    other = np.array([i, *rng.standard_normal((2, i.size))])
    # smoothing scale ~2 pixels so the smoothed gradient keeps the direction of the unsmoothed one
    assert ss.alignment(along, smooth_deg=0.1)["V"] > 0.95
    assert ss.alignment(across, smooth_deg=0.1)["V"] < -0.95
    assert abs(ss.alignment(other, smooth_deg=0.1)["V"]) < 0.1


def test_synchrotron_polarisation_like_wmap_and_planck():
    """Defect (3): synchrotron at 30 GHz, 2 sims at nside 64, purified on the LR71-like mask: E > B
    with BB/EE in [0.18, 0.40] (Martire et al. 2022: 0.22 +- 0.02; S-PASS up to ~0.5 at 2.3 GHz),
    alpha_EE in [-3.15, -2.75] and alpha_BB in [-3.15, -2.65] (Martire et al. 2022: -2.95 / -2.85),
    a polarisation-fraction distribution at |b| > 30 deg with median in [0.08, 0.22] (WMAP/Planck:
    10-20%) and a tail (90th percentile >= 0.2, 99th > 0.3: loops reach 30-40%), not a uniform cap.
    Sim sd: ~0.05 on BB/EE, ~0.05 on slopes.  Commit e4cd77c gives BB/EE ~1.0, alpha ~-2.6 and p capped
    at 22.5%."""
    rows = []
    for sim in range(2):
        mask = ss.faint_mask(ss.component_maps("dust", NSIDE, seed=0, sim=sim)[0], ss.PLANCK["f_sky"])[1]
        s30 = ss.component_maps("synchrotron", NSIDE, seed=0, sim=sim, freq_ghz=30.0)
        st = ss.synchrotron_statistics(s30, mask)
        p = ss.pol_fraction(s30)[ss.high_latitude(NSIDE, 30)]
        rows.append([st["BB_over_EE"], st["alpha_EE"], st["alpha_BB"], st["p_median"], st["p_p90"],
                     np.quantile(p, 0.99)])
    bb_ee, a_ee, a_bb, p_med, p90, p99 = np.mean(rows, axis=0)
    for key, value in (("sync_BB_over_EE", bb_ee), ("sync_alpha_EE", a_ee), ("sync_alpha_BB", a_bb),
                       ("sync_p_median", p_med)):
        ok, msg = within(key, value)
        assert ok, msg
    assert p90 >= 0.2 and p99 > 0.3, (p90, p99)


def test_synchrotron_power_continues_above_ell_190():
    """Defect (3): at nside 128 the synchrotron EE bandpower over 200 <= ell <= 250 is at least half what
    the published power law (alpha_EE = -2.95, Martire et al. 2022) extrapolates from 70 <= ell <= 90
    (D_ell ratio (225/80)^-0.95 = 0.37); the nside-64 field alone (commit e4cd77c) falls far below it
    (its band limit is ell = 191).  One sim: the cosmic variance of a 50-ell band on 71% of the sky is
    a few %."""
    nside = 128
    mask = ss.faint_mask(ss.component_maps("dust", nside, seed=0, sim=0)[0], ss.PLANCK["f_sky"])[1]
    ell, cl = ss.purified_spectra(ss.component_maps("synchrotron", nside, seed=0, sim=0, freq_ghz=30.0), mask)
    d = ell * (ell + 1) * cl[1] / (2 * np.pi)
    lo, hi = d[(ell >= 70) & (ell <= 90)].mean(), d[(ell >= 200) & (ell <= 250)].mean()
    expected = (225 / 80.0) ** (REF["sync_alpha_EE"]["value"] + 2)
    assert hi / lo > 0.5 * expected, (hi / lo, expected)


def test_purified_spectra_recover_a_known_gaussian_sky():
    """The estimator itself: a Gaussian I, Q, U sky at nside 64 with C_EE ~ ell^-2.42, C_BB = 0.5 C_EE,
    C_TT = 10 C_EE and r_TE = 0.36 (Planck-like), seen through a C2-apodised |b| > 20 deg mask: the fitted
    alpha_EE, alpha_BB within 0.1, BB/EE within 0.08 and r_TE within 0.06 of the input (one realisation on
    ~60% of the sky over 40 <= ell <= 160: cosmic variance ~0.03-0.05 on each).  Measured over seeds 7-9:
    slopes -2.44..-2.48 (a -0.04 bias of the estimator at nside 64), BB/EE 0.49-0.51, r_TE 0.34-0.37."""
    import pymaster as nmt
    nside, lmax = NSIDE, 3 * NSIDE - 1
    ell = np.arange(lmax + 1, dtype=float)
    ee = np.where(ell >= 2, (np.maximum(ell, 2) / 80.0) ** -2.42, 0)
    tt, bb = 10 * ee, 0.5 * ee
    te = 0.36 * np.sqrt(tt * ee)
    np.random.seed(7)
    maps = hp.synfast([tt, ee, bb, te], nside, lmax=lmax, new=True)
    mask = nmt.mask_apodization(ss.high_latitude(nside, 20).astype(float), 5.0, apotype="C2")
    centres, cl = ss.purified_spectra(maps, mask)
    a_ee, al_ee = ss.binned_power_law(centres, cl[1])
    a_bb, al_bb = ss.binned_power_law(centres, cl[2])
    sel = (centres >= 40) & (centres <= 160)
    r_te = np.mean(cl[3][sel]) / np.sqrt(np.mean(cl[0][sel]) * np.mean(cl[1][sel]))
    assert abs(al_ee + 2.42) < 0.1 and abs(al_bb + 2.42) < 0.1, (al_ee, al_bb)
    assert abs(a_bb / a_ee - 0.5) < 0.08, a_bb / a_ee
    assert abs(r_te - 0.36) < 0.06, r_te


def test_synchrotron_polarised_in_every_sim():
    """A sky of the quickstart's seed (test sim 1 at sky nside 128) whose layers' B_perp^2 dips below zero
    in a few pixels after the harmonic upgrade: its synchrotron intensity stays >= 0 and its polarisation
    fraction is WMAP/Planck-like (median 10-25% at |b| > 30 deg).  Before the fix one such pixel's
    1e-12 floor made the orientation normalisation erase the whole sky's polarisation (median 0.0%)."""
    s30 = ss.component_maps("synchrotron", 128, 20261126, 1, freq_ghz=30.0, split="test")
    assert s30[0].min() >= 0
    p = np.median(ss.pol_fraction(s30)[ss.high_latitude(128, 30)])
    assert 0.10 < p < 0.25, p
