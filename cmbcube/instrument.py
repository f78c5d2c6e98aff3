"""Planck-like detectors: centre frequencies, beams, native units, white-noise depths.

Numbers: CMB-ML's delta-bandpass table (centres, widened beams) and the
Planck 2018 results I white-noise depths.  Unit conversions go through
pysm3's units at the centre frequency (a delta bandpass).
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

FREQS = (30, 44, 70, 100, 143, 217, 353, 545, 857)
FIELDS = ("I", "Q", "U")

_CENTRE_GHZ = {30: 28.4, 44: 44.1, 70: 70.4, 100: 100.89, 143: 142.876,
               217: 221.156, 353: 357.5, 545: 555.2, 857: 866.8}
# Beam FWHM presets in arcmin.
BEAM_PRESETS = {
    "cmb-ml": {30: 75.0, 44: 65.0, 70: 55.0, 100: 43.0, 143: 32.4, 217: 22.3,
               353: 22.0, 545: 21.5, 857: 20.6},
    "planck2018": {30: 32.29, 44: 27.94, 70: 13.08, 100: 9.66, 143: 7.22, 217: 4.90,
                   353: 4.92, 545: 4.67, 857: 4.22},
}
# White-noise depth per pixel side, temperature and polarisation.
# uK_CMB deg for 30-353 GHz; kJy/sr deg for 545/857 (temperature only).
_DEPTH_T = {30: 2.5, 44: 2.7, 70: 3.5, 100: 1.29, 143: 0.55, 217: 0.78, 353: 2.56,
            545: 0.78, 857: 0.72}
_DEPTH_P = {30: 3.5, 44: 4.0, 70: 5.0, 100: 1.96, 143: 1.17, 217: 1.75, 353: 7.31}

UNIT_CHOICES = ("uK_CMB", "K_CMB", "native", "MJy/sr", "uK_RJ")


@dataclasses.dataclass(frozen=True)
class Detector:
    freq: int                 # nominal GHz: the detector's name
    centre_ghz: float         # delta-bandpass centre
    fwhm_arcmin: float
    polarised: bool
    native_unit: str          # K_CMB (LFI/HFI CMB channels) or MJy/sr (545/857)

    @property
    def fields(self) -> tuple[str, ...]:
        return FIELDS if self.polarised else ("I",)

    def noise_depth_arcmin(self, field: str) -> float:
        """White-noise depth in (native unit) x arcmin for I or Q/U."""
        if field == "I":
            depth = _DEPTH_T[self.freq]
        elif self.polarised:
            depth = _DEPTH_P[self.freq]
        else:
            raise ValueError(f"detector {self.freq} GHz carries no {field}")
        if self.native_unit == "MJy/sr":
            return depth * 1e-3 * 60.0          # kJy/sr deg -> MJy/sr arcmin
        return depth * 1e-6 * 60.0              # uK_CMB deg -> K_CMB arcmin


def detector(freq: int, beam_preset: str = "cmb-ml", beam_overrides: dict | None = None) -> Detector:
    if freq not in _CENTRE_GHZ:
        raise ValueError(f"unknown detector {freq!r}; allowed: {', '.join(map(str, FREQS))}")
    fwhm = BEAM_PRESETS[beam_preset][freq]
    if beam_overrides and freq in beam_overrides:
        fwhm = float(beam_overrides[freq])
    polarised = freq <= 353
    return Detector(freq, _CENTRE_GHZ[freq], fwhm, polarised, "K_CMB" if polarised else "MJy/sr")


def resolve_unit(unit: str, det: Detector) -> str:
    """The concrete unit of a detector's maps for a recipe's ``units`` choice."""
    return det.native_unit if unit == "native" else unit


def _pysm_unit(name: str):
    import pysm3.units as u
    return {"uK_CMB": u.uK_CMB, "K_CMB": u.K_CMB, "MJy/sr": u.MJy / u.sr,
            "uK_RJ": u.uK_RJ, "K_RJ": u.K_RJ}[name]


@functools.lru_cache(maxsize=256)
def to_uk_cmb(unit: str) -> float:
    """Factor taking a CMB-unit map (uK_CMB or K_CMB: frequency independent) to uK_CMB."""
    factors = {"uK_CMB": 1.0, "K_CMB": 1e6}
    if unit not in factors:
        raise ValueError(f"{unit!r} is not a CMB unit; allowed: {', '.join(factors)}")
    return factors[unit]


def unit_factor(centre_ghz: float, source: str, destination: str) -> float:
    """Multiply a map in ``source`` units by this to get ``destination`` units at ``centre_ghz``."""
    import pysm3.units as u
    q = (1.0 * _pysm_unit(source)).to(_pysm_unit(destination),
                                      equivalencies=u.cmb_equivalencies(centre_ghz * u.GHz))
    return float(q.value)


def gaussian_beam(fwhm_arcmin: float, lmax: int) -> np.ndarray:
    """(3, lmax+1) Gaussian transfer functions for T, E, B (healpy's spin-2 convention)."""
    import healpy as hp
    bl = hp.gauss_beam(np.radians(fwhm_arcmin / 60.0), lmax=lmax, pol=True)
    return np.ascontiguousarray(bl[:, :3].T)
