"""Anisotropic white noise: Planck 2018 depths modulated by a scan-like hit pattern.

Planck variance maps (``noise.model: variance_maps``) are read by ``cmbcube.interop.planck``.
"""
from __future__ import annotations

import functools

import numpy as np

ECLIPTIC_FLOOR = 0.15  # hits ~ 1 / sqrt(cos^2 beta + floor^2): poles ~6.6x deeper than the ecliptic


@functools.lru_cache(maxsize=8)
def scan_hits(nside: int, nest: bool = True) -> np.ndarray:
    """Relative hit counts (mean 1) of a Planck-like scan: deep ecliptic poles.

    Planck spun about the Sun-pointing axis, so coverage depends on ecliptic
    latitude beta: a shallow ecliptic band and deep poles (max/min ~ 5).
    """
    import healpy as hp
    theta, phi = hp.pix2ang(nside, np.arange(12 * nside * nside), nest=nest)
    ecl_theta, _ = hp.Rotator(coord=["G", "E"])(theta, phi)
    beta = np.pi / 2 - ecl_theta
    hits = 1.0 / np.sqrt(np.cos(beta) ** 2 + ECLIPTIC_FLOOR ** 2)
    return hits / hits.mean()


def pixel_sigma(depth_arcmin: float, nside: int, hits: np.ndarray | None) -> np.ndarray | float:
    """Per-pixel white-noise rms: depth / pixel side, deeper where hits are higher.

    The depth is the sky average Planck quotes (Planck 2018 results I, Table 4): the mean over
    pixels of the noise variance is (depth / pixel side)^2 whatever the hit pattern, so the
    pattern redistributes the noise without adding any (sigma^2 ~ mean(1/hits) / hits).
    """
    import healpy as hp
    sigma = depth_arcmin / hp.nside2resol(nside, arcmin=True)
    if hits is None:
        return sigma
    return sigma / np.sqrt(hits * np.mean(1.0 / hits))
