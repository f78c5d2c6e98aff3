"""Planck-like detectors: centre frequencies, beams, native units, white-noise depths.

Numbers: CMB-ML's delta-bandpass table (centres, widened beams) and the
Planck 2018 results I white-noise depths.

Bandpasses (recipe ``instrument.bandpass``): ``tophat`` (default) integrates the
sky emission and every unit conversion over a top-hat band around the centre,
fractional width 0.2 for LFI (30-70 GHz) and 0.33 for HFI (100-857 GHz), the
nominal design widths, with pysm3's conventions (weights flat in power, Jy/sr;
emission integrated in power and expressed back in uK_RJ; conversions as
``pysm3.bandpass_unit_conversion``).  ``delta`` evaluates everything at the
centre frequency, as CMB-ML does: 51.4 / 1.264 MJy/sr per K_CMB at 545 / 857 GHz
where Planck's band-averaged coefficients are 58.04 / 2.268 (top-hat: 58.44 /
2.094; tests compare all six HFI coefficients with the published ones).
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np
from cmbcube.errors import InputError

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
BANDPASS_CHOICES = ("tophat", "delta")
# top-hat fractional widths (delta nu / nu): Planck's nominal 20% (LFI) and 33% (HFI) bands
FRACTIONAL_WIDTH = {30: 0.2, 44: 0.2, 70: 0.2, 100: 0.33, 143: 0.33, 217: 0.33, 353: 0.33, 545: 0.33, 857: 0.33}
BAND_POINTS = 11          # frequencies sampling a top-hat (trapezoid rule: SEDs are smooth over a band)


@dataclasses.dataclass(frozen=True)
class Detector:
    freq: int                 # nominal GHz: the detector's name
    centre_ghz: float         # delta-bandpass centre
    fwhm_arcmin: float
    polarised: bool
    native_unit: str          # K_CMB (LFI/HFI CMB channels) or MJy/sr (545/857)
    bandpass: str = "delta"   # tophat or delta

    @property
    def fields(self) -> tuple[str, ...]:
        return FIELDS if self.polarised else ("I",)

    @property
    def band_ghz(self) -> np.ndarray:
        """Frequencies (GHz) sampling the band: the centre alone for a delta bandpass."""
        return band_frequencies(self.freq, self.centre_ghz, self.bandpass)

    @property
    def band_weights(self) -> np.ndarray:
        """Integration weights of emission in uK_RJ over ``band_ghz`` (sum = 1; pysm3's normalisation:
        a band flat in power, integrated in power, expressed back in RJ), trapezoid rule included."""
        return _band_weights(self.freq, self.centre_ghz, self.bandpass)

    def band_average(self, sed) -> float:
        """Band-integrated value of ``sed(freq_ghz)`` (an SED in uK_RJ per unit amplitude)."""
        nu = self.band_ghz
        return float(sum(w * sed(f) for w, f in zip(self.band_weights, nu)))

    def noise_depth_arcmin(self, field: str) -> float:
        """White-noise depth in (native unit) x arcmin for I or Q/U."""
        if field == "I":
            depth = _DEPTH_T[self.freq]
        elif self.polarised:
            depth = _DEPTH_P[self.freq]
        else:
            raise InputError(f"detector {self.freq} GHz carries no {field}")
        if self.native_unit == "MJy/sr":
            return depth * 1e-3 * 60.0          # kJy/sr deg -> MJy/sr arcmin
        return depth * 1e-6 * 60.0              # uK_CMB deg -> K_CMB arcmin


def band_frequencies(freq: int, centre_ghz: float, bandpass: str) -> np.ndarray:
    """Frequencies (GHz) sampling detector ``freq``'s band around ``centre_ghz``: the centre alone for a
    delta bandpass, else BAND_POINTS evenly over its top-hat."""
    if bandpass == "delta":
        return np.array([centre_ghz])
    half = FRACTIONAL_WIDTH[freq] / 2
    return np.linspace(centre_ghz * (1 - half), centre_ghz * (1 + half), BAND_POINTS)


@functools.lru_cache(maxsize=64)
def _band_weights(freq: int, centre_ghz: float, bandpass: str) -> np.ndarray:
    if bandpass == "delta":
        return np.array([1.0])
    from pysm3.utils import normalize_weights
    nu = band_frequencies(freq, centre_ghz, bandpass)
    trapezoid = np.full(nu.size, nu[1] - nu[0])
    trapezoid[[0, -1]] /= 2
    w = normalize_weights(nu, np.ones(nu.size)) * trapezoid       # pysm3's weights x trapezoid steps
    return w / w.sum()


def detector(freq: int, beam_preset: str = "cmb-ml", beam_overrides: dict | None = None,
             bandpass: str = "delta") -> Detector:
    if freq not in _CENTRE_GHZ:
        raise InputError(f"unknown detector {freq!r}; allowed: {', '.join(map(str, FREQS))}")
    if bandpass not in BANDPASS_CHOICES:
        raise InputError(f"instrument.bandpass {bandpass!r}; allowed: {', '.join(BANDPASS_CHOICES)}")
    fwhm = BEAM_PRESETS[beam_preset][freq]
    if beam_overrides and freq in beam_overrides:
        fwhm = float(beam_overrides[freq])
    polarised = freq <= 353
    return Detector(freq, _CENTRE_GHZ[freq], fwhm, polarised, "K_CMB" if polarised else "MJy/sr", bandpass)


def cmb_unit(units: str) -> str:
    """The unit of the CMB maps of a store whose recipe says ``units`` (uK_CMB, K_CMB or native)."""
    return "uK_CMB" if units == "uK_CMB" else "K_CMB"


def resolve_unit(unit: str, det: Detector) -> str:
    """The concrete unit of a detector's maps for a recipe's ``units`` choice."""
    return det.native_unit if unit == "native" else unit


def pysm_unit(name: str):
    """The astropy/pysm3 unit object of a unit name (uK_CMB, K_CMB, MJy/sr, uK_RJ, K_RJ)."""
    import pysm3.units as u
    return {"uK_CMB": u.uK_CMB, "K_CMB": u.K_CMB, "MJy/sr": u.MJy / u.sr,
            "uK_RJ": u.uK_RJ, "K_RJ": u.K_RJ}[name]


@functools.lru_cache(maxsize=256)
def to_uk_cmb(unit: str) -> float:
    """Factor taking a CMB-unit map (uK_CMB or K_CMB: frequency independent) to uK_CMB."""
    factors = {"uK_CMB": 1.0, "K_CMB": 1e6}
    if unit not in factors:
        raise InputError(f"{unit!r} is not a CMB unit; allowed: {', '.join(factors)}")
    return factors[unit]


def unit_factor(centre_ghz: float, source: str, destination: str) -> float:
    """Multiply a map in ``source`` units by this to get ``destination`` units at ``centre_ghz``."""
    import pysm3.units as u
    q = (1.0 * pysm_unit(source)).to(pysm_unit(destination),
                                      equivalencies=u.cmb_equivalencies(centre_ghz * u.GHz))
    return float(q.value)


def band_unit_factor(det: Detector, source: str, destination: str) -> float:
    """``unit_factor`` over the detector's band: at its centre for a delta bandpass, else pysm3's
    bandpass_unit_conversion (ratio of the band integrals, in power, of the two units' brightness)."""
    if det.bandpass == "delta" or source == destination:
        return unit_factor(det.centre_ghz, source, destination)
    return _band_unit_factor(det.freq, det.centre_ghz, det.bandpass, source, destination)


@functools.lru_cache(maxsize=512)
def _band_unit_factor(freq, centre_ghz, bandpass, source, destination) -> float:
    import pysm3.units as u
    from pysm3.utils import bandpass_unit_conversion
    nu = band_frequencies(freq, centre_ghz, bandpass)
    factor = bandpass_unit_conversion(nu * u.GHz, None, pysm_unit(destination), input_unit=pysm_unit(source))
    return float(factor.value)


def gaussian_beam(fwhm_arcmin: float, lmax: int) -> np.ndarray:
    """(3, lmax+1) Gaussian transfer functions for T, E, B (healpy's spin-2 convention)."""
    import healpy as hp
    bl = hp.gauss_beam(np.radians(fwhm_arcmin / 60.0), lmax=lmax, pol=True)
    return np.ascontiguousarray(bl[:, :3].T)
