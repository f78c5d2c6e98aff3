"""Anisotropic white noise: Planck 2018 depths modulated by a scan-like hit pattern."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from cmbcube.errors import MissingFileError

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
    """Per-pixel white-noise rms: depth / pixel side, deeper where hits are higher."""
    import healpy as hp
    sigma = depth_arcmin / hp.nside2resol(nside, arcmin=True)
    return sigma if hits is None else sigma / np.sqrt(hits)


def read_variance_map(variance_dir: str, freq: int, nside: int, field: str) -> np.ndarray:
    """Per-pixel variance (native unit^2) at ``nside`` NESTED from ``{variance_dir}/{freq}.fits``.

    The file holds II[, QQ, UU] columns (as Planck's II_COV, QQ_COV, UU_COV), in
    the ordering its header states.  Changing resolution keeps the noise per
    unit area: variance scales with the number of pixels averaged.
    """
    import healpy as hp
    path = Path(variance_dir) / f"{freq}.fits"
    if not path.is_file():
        raise MissingFileError(f"noise.variance_dir: {path} does not exist (one file per detector, {{freq}}.fits)")
    column = {"I": 0, "Q": 1, "U": 2}[field]
    var = hp.read_map(str(path), field=column, nest=True)
    nside_in = hp.npix2nside(var.size)
    if nside_in != nside:
        var = hp.ud_grade(var, nside, order_in="NESTED", order_out="NESTED") * (nside / nside_in) ** 2
    return var
