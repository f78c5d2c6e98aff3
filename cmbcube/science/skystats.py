"""Statistics that say whether a synthetic Galaxy looks like the real one.

Used by the tests of the sky models and by ``benchmarks/sky_models.py``: dust and synchrotron maps
of one sim, a high-latitude mask like Planck's LR regions (the faintest part of the dust sky, C2
apodised), decoupled B-purified bandpowers (NaMaster, ``purified_spectra``) with power-law fits at
ell = 80, the polarisation-fraction distribution, the relative orientation of the polarisation-inferred
field and the intensity structures (``alignment``), the one-point moments of the intensity, and a
Gaussian field with the same spectra to compare them with.  ``REFERENCES`` holds each published figure
with its source and the range accepted around it.
"""
from __future__ import annotations

import numpy as np

from cmbcube.science import foregrounds, instrument, seeds

# Published figures the embedded sky is calibrated to: value, accepted range (sim scatter and the
# spread between published estimates, see each note), source.
REFERENCES = {
    "dust_D80_EE": dict(value=315.0, lo=220.0, hi=410.0, unit="uK_CMB^2",
                        source="Planck 2018 XI (A&A 641, A11), D_ell^EE(80) at 353 GHz on LR71 (f_sky 0.71), "
                               "as quoted in issue 14; +-30% (sim scatter ~15% on 71% of the sky)"),
    "dust_alpha_EE": dict(value=-2.42, lo=-2.52, hi=-2.32, unit="",
                          source="Planck 2018 XI abstract: alpha_EE = -2.42 +- 0.02 (C_ell ~ ell^alpha, 40-600); "
                                 "+-0.1 here (fit over 40-160 only; sim sd ~0.04)"),
    "dust_alpha_BB": dict(value=-2.54, lo=-2.64, hi=-2.44, unit="",
                          source="Planck 2018 XI abstract: alpha_BB = -2.54 +- 0.02; +-0.1 here"),
    "dust_BB_over_EE": dict(value=0.53, lo=0.45, hi=0.62, unit="",
                            source="Planck 2018 XI Sect. 4 / Planck Int. XXX: A_BB/A_EE ~ 0.5 (EE/BB ~ 1.9-2) at "
                                   "ell = 80"),
    "dust_r_TE": dict(value=0.36, lo=0.25, hi=0.45, unit="",
                      source="Planck 2018 XI: r_TE = TE / sqrt(TT EE) ~ 0.36 (Planck Int. XXXVIII: ~0.35)"),
    "dust_p_max": dict(value=0.22, lo=0.15, hi=0.30, unit="",
                       source="Planck 2018 XII (A&A 641, A12): p_max ~ 22% at 1 deg (80'); here |b| > 30 deg"),
    "dust_p_median": dict(value=0.06, lo=0.02, hi=0.12, unit="",
                          source="Planck 2018 XII: a few % typical at 1 deg, high latitudes"),
    "sync_BB_over_EE": dict(value=0.22, lo=0.18, hi=0.40, unit="",
                            source="Martire, Barreiro & Martinez-Gonzalez 2022 (JCAP, arXiv:2203.06724): B-to-E "
                                   "amplitude ratio 0.22 +- 0.02 at ell = 80, WMAP K x Planck 30 GHz, NaMaster; "
                                   "S-PASS (Krachmalnicoff+ 2018) ~0.3-0.5 at 2.3 GHz"),
    "sync_alpha_EE": dict(value=-2.95, lo=-3.15, hi=-2.75, unit="",
                          source="Martire+ 2022: alpha_EE = -2.95 +- 0.04 (30 <= ell <= 300); Planck 2018 XI / "
                                 "S-PASS -2.8..-3.0"),
    "sync_alpha_BB": dict(value=-2.85, lo=-3.15, hi=-2.65, unit="",
                          source="Martire+ 2022: alpha_BB = -2.85 +- 0.14"),
    "sync_p_median": dict(value=0.15, lo=0.08, hi=0.22, unit="",
                          source="WMAP K / Planck 30 GHz: typical 10-20% at high latitude (Planck 2018 IV; "
                                 "Vidal+ 2015)"),
    "sync_p_p90": dict(value=0.30, lo=0.2, hi=0.45, unit="",
                       source="loops and spurs (Loop I / NPS) reach 30-40% (Vidal+ 2015; Planck 2015 XXV)"),
    "alignment_V": dict(value=0.1, lo=0.05, hi=0.6, unit="",
                        source="Planck Int. XXXII (2016), XXXV (2016), 2018 XII: the field is preferentially "
                               "parallel to the intensity structures in the diffuse sky (positive mean cos 2phi, "
                               "a clear preference, not perfect alignment); indicative: no published value for "
                               "this exact statistic (whole |b| > 20 deg sky, 3 deg smoothing)"),
}

# the earlier flat dictionary of the same figures (the values above), for callers that read it
PLANCK = {
    "dust_ee80_uK_CMB2": REFERENCES["dust_D80_EE"]["value"],
    "dust_alpha_ee": REFERENCES["dust_alpha_EE"]["value"],
    "dust_alpha_bb": REFERENCES["dust_alpha_BB"]["value"],
    "dust_bb_over_ee": REFERENCES["dust_BB_over_EE"]["value"],
    "dust_r_te": REFERENCES["dust_r_TE"]["value"],
    "f_sky": 0.71,                # Planck 2018 XI's LR71
}


def component_maps(name: str, nside: int, seed: int = 0, sim: int = 0, model: str = "synthetic",
                   freq_ghz: float = 353.0, unit: str = "uK_CMB", split: str = "train",
                   shared_structure: float = 1.0, vary: str = "per_sim") -> np.ndarray:
    """(3, npix) I, Q, U (RING) of one synthetic component of (``split``, ``sim``) at ``freq_ghz`` (delta
    bandpass, no beam), with the seeds the simulator uses (``vary: fixed``: its one sky, central SEDs)."""
    if vary == "fixed":
        streams = (lambda n: seeds.rng(seed, "fixed", 0, "foreground-" + n), lambda n: None)
    else:
        streams = seeds.foreground_streams(seed, split, sim)
    models = foregrounds.synthetic_sky([name], nside, *streams, model, shared_structure)
    return foregrounds.emission(models[name], freq_ghz, 3, instrument.unit_factor(freq_ghz, "uK_RJ", unit))


def faint_mask(intensity: np.ndarray, f_sky: float, smooth_deg: float = 5.0, apod_deg: float = 5.0):
    """(binary, apodised) mask keeping the ``f_sky`` of the sky where the smoothed intensity is lowest;
    the apodisation is NaMaster's C2 taper of ``apod_deg`` inside the binary edge (smooth enough for B
    purification)."""
    import healpy as hp
    import pymaster as nmt
    smooth = hp.smoothing(intensity, fwhm=np.radians(smooth_deg), iter=0)
    binary = (smooth <= np.quantile(smooth, f_sky)).astype(float)
    apod = nmt.mask_apodization(binary, apod_deg, apotype="C2")
    return binary.astype(bool), np.clip(apod, 0, 1)


def masked_spectra(maps: np.ndarray, mask: np.ndarray, lmax: int | None = None) -> np.ndarray:
    """(4, lmax+1) TT, EE, BB, TE naive pseudo-C_ell of ``maps`` x ``mask`` divided by mean(mask^2).
    Biased for BB (E-to-B leakage) and for slopes; ratios and slopes use ``purified_spectra``."""
    import healpy as hp
    cl = hp.anafast(maps * mask, lmax=lmax, iter=1)
    return cl[:4] / np.mean(mask ** 2)


def purified_spectra(maps_ring: np.ndarray, apod_ring: np.ndarray, bin_width: int = 10,
                     lmax: int | None = None) -> tuple:
    """(ell_centres, cl): decoupled bandpowers (4, nbins) TT, EE, BB, TE of RING I, Q, U maps on an
    apodised (C2) mask, B purified (NaMaster: NmtField purify_b, NmtWorkspace decoupling), linear bins
    of ``bin_width`` from ell = 2 up to ``lmax`` (default 3 nside - 1).  Each bin is decoupled as a flat
    D_ell and returned as the C_ell at its centre: D_b 2 pi / (l_c (l_c + 1)); the monopole and dipole of
    I are removed on the mask first."""
    import healpy as hp
    import pymaster as nmt
    nside = hp.npix2nside(maps_ring.shape[-1])
    lmax = 3 * nside - 1 if lmax is None else min(lmax, 3 * nside - 1)
    apod = np.asarray(apod_ring, dtype=np.float64)
    seen = apod > 0
    mono, dip = hp.fit_dipole(np.where(seen, maps_ring[0], hp.UNSEEN))
    t = np.where(seen, maps_ring[0] - mono - dip @ np.array(hp.pix2vec(nside, np.arange(apod.size))), 0.0)
    ini = np.arange(2, lmax + 1, bin_width)
    bins = nmt.NmtBin.from_edges(ini, np.minimum(ini + bin_width, lmax + 1), is_Dell=True)  # last one may be short
    f0 = nmt.NmtField(apod, [t], lmax=lmax, n_iter=1)
    f2 = nmt.NmtField(apod, [np.asarray(maps_ring[1], float), np.asarray(maps_ring[2], float)], purify_b=True,
                      lmax=lmax, n_iter=1)
    out = []
    for fa, fb, pick in ((f0, f0, (0,)), (f2, f2, (0, 3)), (f0, f2, (0,))):
        w = nmt.NmtWorkspace.from_fields(fa, fb, bins)
        d = w.decouple_cell(nmt.compute_coupled_cell(fa, fb))
        out += [d[k] for k in pick]
    ell = bins.get_effective_ells()
    d_ell = np.array([out[0], out[1], out[2], out[3]])               # TT, EE, BB, TE as D_ell
    return ell, d_ell * 2 * np.pi / (ell * (ell + 1))


def binned_power_law(ell: np.ndarray, cl: np.ndarray, lo: float = 40, hi: float = 160, pivot: float = 80.0):
    """(D_ell at ``pivot``, alpha of C_ell ~ ell^alpha): least squares in log D_ell of the bandpowers
    whose centres lie in [lo, hi] (Planck 2018 XI's form, over the range nside 64 reaches)."""
    sel = (ell >= lo) & (ell <= hi)
    d = ell[sel] * (ell[sel] + 1) * cl[sel] / (2 * np.pi)
    ok = d > 0
    slope, icpt = np.polyfit(np.log(ell[sel][ok] / pivot), np.log(d[ok]), 1)
    return float(np.exp(icpt)), float(slope - 2)


def _band_mean(ell, cl, lo=40, hi=160):
    sel = (ell >= lo) & (ell <= hi)
    return float(np.mean(ell[sel] * (ell[sel] + 1) * cl[sel] / (2 * np.pi)))


def dust_statistics(maps: np.ndarray, mask_apod: np.ndarray | None = None) -> dict:
    """Planck 2018 XI/XII statistics of 353 GHz dust I, Q, U (uK_CMB, RING): purified spectra on
    ``mask_apod`` (default: the LR71-like faint mask of these maps), power laws over 40-160 at ell 80,
    BB/EE as the ratio of the fitted amplitudes at 80, TE/EE and r_TE = TE / sqrt(TT EE) as band means
    over 40-160, and the polarisation fraction at 1 deg for |b| > 30 deg (``pol_fraction``): its median
    and its maximum (the 99.9th percentile: a lone pixel can ring)."""
    if mask_apod is None:
        mask_apod = faint_mask(maps[0], PLANCK["f_sky"])[1]
    ell, cl = purified_spectra(maps, mask_apod)
    a_ee, al_ee = binned_power_law(ell, cl[1])
    a_bb, al_bb = binned_power_law(ell, cl[2])
    tt, ee, te = (_band_mean(ell, cl[k]) for k in (0, 1, 3))
    lat30 = high_latitude(_nside(maps), 30)
    p = pol_fraction(maps)[lat30]
    return {"D80_EE": a_ee, "D80_BB": a_bb, "alpha_EE": al_ee, "alpha_BB": al_bb, "BB_over_EE": a_bb / a_ee,
            "TE_over_EE": te / ee, "r_TE": te / np.sqrt(tt * ee), "p_median": float(np.median(p)),
            "p_max": float(np.quantile(p, 0.999)), "ell": ell, "cl": cl}


def synchrotron_statistics(maps: np.ndarray, mask_apod: np.ndarray) -> dict:
    """Martire+ 2022 statistics of synchrotron I, Q, U (30 GHz, RING): purified EE and BB power laws
    over 40-160 at ell 80, BB/EE as the ratio of the fitted amplitudes at 80, and the polarisation
    fraction at 1 deg for |b| > 30 deg (median and 90th percentile)."""
    ell, cl = purified_spectra(maps, mask_apod)
    a_ee, al_ee = binned_power_law(ell, cl[1])
    a_bb, al_bb = binned_power_law(ell, cl[2])
    p = pol_fraction(maps)[high_latitude(_nside(maps), 30)]
    return {"D80_EE": a_ee, "alpha_EE": al_ee, "alpha_BB": al_bb, "BB_over_EE": a_bb / a_ee,
            "p_median": float(np.median(p)), "p_p90": float(np.quantile(p, 0.9)), "ell": ell, "cl": cl}


def alignment(maps: np.ndarray, smooth_deg: float = 3.0, b_min_deg: float = 20.0) -> dict:
    """Relative orientation of the polarisation-inferred field (polarisation angle + 90 deg) and the
    intensity structures (iso-intensity contours, perpendicular to the gradient of I), Planck Int.
    XXXII / XXXV style: I, Q, U (RING, healpy/COSMO Q/U) smoothed with a ``smooth_deg`` FWHM Gaussian,
    gradient of I from healpy's alm2map_der1, phi the angle between the two directions in every pixel at
    |b| > ``b_min_deg``.  "V": mean cos 2 phi (+1: field along the structures, -1: across, 0: random);
    "V_err": its standard error from the scatter of the means over the nside-2 HEALPix patches (~29 deg,
    larger than the smoothing so nearly independent); "Z": the projected Rayleigh statistic
    sum cos 2 phi / sqrt(N / 2) over the pixels (correlated pixels inflate it)."""
    import healpy as hp
    nside = _nside(maps)
    lmax = 3 * nside - 1
    fwhm = np.radians(smooth_deg)
    alm = hp.map2alm(np.asarray(maps, dtype=np.float64), lmax=lmax, iter=1, pol=True)
    bl = hp.gauss_beam(fwhm, lmax=lmax, pol=True)
    for k, col in ((0, 0), (1, 1), (2, 2)):
        alm[k] = hp.almxfl(alm[k], bl[:, col])
    _, d_theta, d_phi = hp.alm2map_der1(alm[0], nside, lmax=lmax)
    qu = hp.alm2map_spin([alm[1], alm[2]], nside, 2, lmax)
    q, u = qu[0], qu[1]
    # polarisation along the gradient <=> field along the contours: cos 2 phi = cos 2 (psi_P - psi_grad)
    g2 = d_theta ** 2 + d_phi ** 2
    cos2 = (q * (d_theta ** 2 - d_phi ** 2) + u * 2 * d_theta * d_phi) / np.maximum(np.hypot(q, u) * g2, 1e-300)
    sel = high_latitude(nside, b_min_deg)
    patch = hp.ring2nest(nside, np.arange(12 * nside * nside)) // (nside // 2) ** 2 if nside >= 2 else 0
    means = [cos2[sel & (patch == k)].mean() for k in range(48) if np.sum(sel & (patch == k)) > 4]
    v = float(cos2[sel].mean())
    return {"V": v, "V_err": float(np.std(means, ddof=1) / np.sqrt(len(means))),
            "Z": float(cos2[sel].sum() / np.sqrt(sel.sum() / 2)), "n_patches": len(means)}


def _nside(maps: np.ndarray) -> int:
    return int(round(np.sqrt(np.shape(maps)[-1] / 12)))


def band(cl: np.ndarray, lo: int, hi: int) -> float:
    """Mean D_ell over lo <= ell <= hi."""
    ell = np.arange(cl.size)
    d = ell * (ell + 1) * cl / (2 * np.pi)
    return float(np.mean(d[lo:hi + 1]))


def power_law(cl: np.ndarray, lo: int = 40, hi: int = 160, pivot: float = 80.0, width: int = 10) -> tuple:
    """(D_ell at ``pivot``, alpha of C_ell ~ ell^alpha): least squares in log of D_ell in bands."""
    edges = np.arange(lo, hi + 1, width)
    centres = np.array([(a + b - 1) / 2 for a, b in zip(edges[:-1], edges[1:])])
    values = np.array([band(cl, a, b - 1) for a, b in zip(edges[:-1], edges[1:])])
    ok = values > 0
    slope, icpt = np.polyfit(np.log(centres[ok] / pivot), np.log(values[ok]), 1)
    return float(np.exp(icpt)), float(slope - 2)


def pol_fraction(maps: np.ndarray, fwhm_deg: float = 1.0) -> np.ndarray:
    """Polarisation fraction sqrt(Q^2 + U^2) / I after smoothing to ``fwhm_deg`` (Planck's 1 deg), or to
    1.5 pixels where the pixels are larger (nside < 128: a sub-pixel beam only rings)."""
    import healpy as hp
    pixel_deg = np.degrees(np.sqrt(4 * np.pi / np.shape(maps)[-1]))
    sm = hp.smoothing(maps, fwhm=np.radians(max(fwhm_deg, 1.5 * pixel_deg)), iter=0)
    return np.hypot(sm[1], sm[2]) / sm[0]


def moments(x: np.ndarray) -> tuple:
    """(skewness, excess kurtosis)."""
    d = x - x.mean()
    s2 = np.mean(d ** 2)
    return float(np.mean(d ** 3) / s2 ** 1.5), float(np.mean(d ** 4) / s2 ** 2 - 3)


def gaussian_twin(maps: np.ndarray, seed: int = 1) -> np.ndarray:
    """A Gaussian I, Q, U realisation with the full-sky TT, EE, BB, TE spectra of ``maps``, and the
    same mean intensity."""
    import healpy as hp
    nside = hp.npix2nside(maps.shape[-1])
    cl = hp.anafast(maps, iter=1)
    np.random.seed(seed)
    out = hp.synfast(cl, nside, new=True)
    out[0] += maps[0].mean()
    return out


def high_latitude(nside: int, b_min_deg: float) -> np.ndarray:
    """Return the mask of pixels at Galactic latitude |b| > ``b_min_deg``."""
    _, lat = foregrounds.galactic_coords(nside)
    return np.abs(lat) > np.radians(b_min_deg)
