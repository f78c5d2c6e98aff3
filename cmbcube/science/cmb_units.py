"""The CMB's response in a detector's unit, in closed form (no pysm3/astropy import: seconds of a fresh
process's start, which a one-sim ILC pays in full).

Same definitions as :func:`cmbcube.science.instrument.band_unit_factor` (pysm3's ``cmb_equivalencies``
at the band centre for a delta bandpass; the ratio of band integrals in power, MJy/sr in the IRAS
convention, over the top-hat's Gauss-Legendre nodes otherwise); they agree to ~1e-15 (tests).
"""
from __future__ import annotations

import numpy as np

from cmbcube.science import instrument

H = 6.62607015e-34          # J s (SI, exact)
K_B = 1.380649e-23          # J / K (SI, exact)
C = 299792458.0             # m / s
T_CMB = 2.7255              # K, astropy's default cosmology (Planck18), as pysm3's equivalencies use


def jy_per_uk_cmb(nu_ghz) -> np.ndarray:
    """Jy/sr of a 1 uK_CMB fluctuation at ``nu_ghz`` (the derivative of the Planck law at T_CMB)."""
    nu = np.asarray(nu_ghz, dtype=float) * 1e9
    x = H * nu / (K_B * T_CMB)
    return 2 * K_B * nu ** 2 / C ** 2 * x ** 2 * np.exp(x) / np.expm1(x) ** 2 * 1e26 * 1e-6


def cmb_response(det: instrument.Detector, unit: str) -> float:
    """A unit amplitude of uK_CMB in ``unit`` (uK_CMB, K_CMB or MJy/sr) over ``det``'s band; other units
    go through ``instrument.band_unit_factor``."""
    if unit in ("uK_CMB", "K_CMB"):
        return 1.0 / instrument.to_uk_cmb(unit)
    if unit != "MJy/sr":
        return instrument.band_unit_factor(det, "uK_CMB", unit)
    if det.bandpass == "delta":
        return float(jy_per_uk_cmb(det.centre_ghz)) * 1e-6
    low, high = instrument.band_edges(det.freq)
    x, w = np.polynomial.legendre.leggauss(instrument.BAND_POINTS)
    nu = (low + high) / 2 + (high - low) / 2 * x
    w = (high - low) / 2 * w
    return float(np.sum(w * jy_per_uk_cmb(nu)) / np.sum(w * 1e6 * det.freq / nu))
