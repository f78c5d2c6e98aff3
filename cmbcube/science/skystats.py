"""Statistics that say whether a synthetic Galaxy looks like the real one.

Used by the tests of the sky models and by ``benchmarks/sky_models.py``: dust and
synchrotron maps of one sim, a high-latitude mask like Planck's LR regions (the
faintest part of the dust sky), masked spectra with power-law fits at ell = 80, the
polarisation-fraction distribution and the one-point moments of the intensity, and
a Gaussian field with the same spectra to compare them with.
"""
from __future__ import annotations

import numpy as np

from cmbcube.science import foregrounds, instrument, seeds

# Published figures the embedded sky is calibrated to (see foregrounds/galaxy.py for the sources)
PLANCK = {
    "dust_ee80_uK_CMB2": 315.0,   # D_ell^EE at ell = 80, 353 GHz, LR71 (f_sky 0.71), Planck 2018 XI
    "dust_alpha_ee": -2.42,       # C_ell ~ ell^alpha over 40 <= ell <= 600, LR71, Planck 2018 XI
    "dust_alpha_bb": -2.54,
    "dust_bb_over_ee": 0.53,      # Planck 2018 XI / Planck Int. XXX: EE/BB ~ 1.9-2
    "dust_r_te": 0.35,            # TE / sqrt(TT EE), Planck 2018 XI, Planck Int. XXXVIII
    "f_sky": 0.71,
}


def component_maps(name: str, nside: int, seed: int = 0, sim: int = 0, model: str = "synthetic",
                   freq_ghz: float = 353.0, unit: str = "uK_CMB") -> np.ndarray:
    """(3, npix) I, Q, U (RING) of one synthetic component of sim ``sim`` at ``freq_ghz``, with the
    seeds the simulator uses (split "train")."""
    models = foregrounds.synthetic_sky([name], nside, *seeds.foreground_streams(seed, "train", sim), model)
    return foregrounds.emission(models[name], freq_ghz, 3, instrument.unit_factor(freq_ghz, "uK_RJ", unit))


def faint_mask(intensity: np.ndarray, f_sky: float, smooth_deg: float = 5.0, apod_deg: float = 2.0):
    """(binary, apodised) mask keeping the ``f_sky`` of the sky where the smoothed intensity is lowest."""
    import healpy as hp
    smooth = hp.smoothing(intensity, fwhm=np.radians(smooth_deg), iter=0)
    binary = (smooth <= np.quantile(smooth, f_sky)).astype(float)
    apod = np.clip(hp.smoothing(binary, fwhm=np.radians(apod_deg), iter=0), 0, 1) * binary
    return binary.astype(bool), apod


def masked_spectra(maps: np.ndarray, mask: np.ndarray, lmax: int | None = None) -> np.ndarray:
    """(4, lmax+1) TT, EE, BB, TE pseudo-C_ell of ``maps`` x ``mask`` divided by mean(mask^2)."""
    import healpy as hp
    cl = hp.anafast(maps * mask, lmax=lmax, iter=1)
    return cl[:4] / np.mean(mask ** 2)


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
    """Polarisation fraction sqrt(Q^2 + U^2) / I after smoothing to ``fwhm_deg`` (Planck's 1 deg)."""
    import healpy as hp
    sm = hp.smoothing(maps, fwhm=np.radians(fwhm_deg), iter=0)
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
    _, lat = foregrounds.galactic_coords(nside)
    return np.abs(lat) > np.radians(b_min_deg)
