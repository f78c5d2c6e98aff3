"""Planck-like detectors: centre frequencies, beams, native units, white-noise depths.

Numbers: CMB-ML's delta-bandpass table (centres, widened beams) and the
Planck 2018 results I (Table 4) white-noise depths, which hold for the sky-averaged
noise variance (:mod:`cmbcube.science.noise`).  ``published_references()`` lists the
published numbers the instrument reproduces, with their sources.

Bandpasses (recipe ``instrument.bandpass``):

``tophat`` (default): the sky emission and every unit conversion are integrated over a band
flat in power (transmission constant over the band, zero outside), fractional width 0.2 for
LFI (30-70 GHz) and 0.33 for HFI (100-857 GHz), the nominal design widths.  The integrals are
Gauss-Legendre sums over BAND_POINTS frequencies (exact to ~1e-6 for these SEDs over these bands,
where an 11-point trapezoid is 1% off at 857 GHz).  Emission is integrated in power and expressed
back in uK_RJ (pysm3's convention); K_CMB and K_RJ conversions are the ratios of the band
integrals of the two units' brightness (pysm3's ``bandpass_unit_conversion``).  MJy/sr follows
Planck's IRAS convention: a map in MJy/sr gives I_nu at the nominal frequency nu0 (100, ...,
857 GHz) of a source with nu I_nu constant, so 1 MJy/sr stands for the in-band power of
1e6 (nu0 / nu) Jy/sr (Planck 2013 results IX, section 6).  The HFI top-hats are centred at
TOPHAT_CENTRE_GHZ, chosen so that their band-averaged K_CMB -> MJy/sr coefficients equal
Planck's published ones (Planck 2015 results VIII, Table 6) to 0.1%; the CMB-ML centres at
the same 0.33 width are 1-9% off (857 GHz: -8.4%, the cause of the 7.7% issue).

``delta``: everything is evaluated at the CMB-ML centre frequency, as CMB-ML does, without
the IRAS convention (MJy/sr is plain I_nu at the centre): 51.40 / 1.264 MJy/sr per K_CMB at
545 / 857 GHz where Planck's band-averaged coefficients are 58.04 / 2.268.
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
# Top-hat centres: LFI at CMB-ML's; HFI fitted (0.1 GHz steps, width 0.33, IRAS convention) to Planck's
# published K_CMB -> MJy/sr band averages (PLANCK_MJY_PER_KCMB)
TOPHAT_CENTRE_GHZ = {30: 28.4, 44: 44.1, 70: 70.4, 100: 101.3, 143: 142.7, 217: 222.6, 353: 361.1,
                     545: 557.0, 857: 858.3}
# Beam FWHM presets in arcmin.
BEAM_PRESETS = {
    "cmb-ml": {30: 75.0, 44: 65.0, 70: 55.0, 100: 43.0, 143: 32.4, 217: 22.3,
               353: 22.0, 545: 21.5, 857: 20.6},
    "planck2018": {30: 32.29, 44: 27.94, 70: 13.08, 100: 9.66, 143: 7.22, 217: 4.90,
                   353: 4.92, 545: 4.67, 857: 4.22},
}
# White-noise depth per pixel side (sky-averaged variance), temperature and polarisation:
# Planck 2018 results I, Table 4.  uK_CMB deg for 30-353 GHz; kJy/sr deg for 545/857 (temperature only).
_DEPTH_T = {30: 2.5, 44: 2.7, 70: 3.5, 100: 1.29, 143: 0.55, 217: 0.78, 353: 2.56,
            545: 0.78, 857: 0.72}
_DEPTH_P = {30: 3.5, 44: 4.0, 70: 5.0, 100: 1.96, 143: 1.17, 217: 1.75, 353: 7.31}

UNIT_CHOICES = ("uK_CMB", "K_CMB", "native", "MJy/sr", "uK_RJ")
BANDPASS_CHOICES = ("tophat", "delta")
# top-hat fractional widths (delta nu / nu): Planck's nominal 20% (LFI) and 33% (HFI) bands
FRACTIONAL_WIDTH = {30: 0.2, 44: 0.2, 70: 0.2, 100: 0.33, 143: 0.33, 217: 0.33, 353: 0.33, 545: 0.33, 857: 0.33}
BAND_POINTS = 5           # Gauss-Legendre nodes over a top-hat: ~1e-6 of a 1001-point integral (tests)
DEPTH_SOURCE = "Planck 2018 results I (A&A 641, A1), Table 4"
# Planck's band-averaged K_CMB -> MJy/sr coefficients (IRAS convention)
PLANCK_MJY_PER_KCMB = {100: 244.0960, 143: 371.7327, 217: 483.6874, 353: 287.4517, 545: 58.0356, 857: 2.2681}
MJY_SOURCE = "Planck 2015 results VIII (A&A 594, A8), unit-conversion table; cf. Planck 2013 results IX, Table 6"


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
        """Frequencies (GHz) sampling the band: the centre alone for a delta bandpass, else the
        Gauss-Legendre nodes of the top-hat."""
        return band_frequencies(self.freq, self.centre_ghz, self.bandpass)

    @property
    def band_weights(self) -> np.ndarray:
        """Integration weights of emission in uK_RJ over ``band_ghz`` (sum = 1): a band flat in power,
        integrated in power, expressed back in RJ (pysm3's normalisation), quadrature weights included."""
        return _band_weights(self.freq, self.centre_ghz, self.bandpass)

    @property
    def pysm3_weights(self) -> np.ndarray | None:
        """Weights (in power) to give pysm3's ``get_emission(band_ghz, weights)`` so that its trapezoid rule
        over ``band_ghz`` equals this quadrature (None for a delta bandpass)."""
        if self.bandpass == "delta":
            return None
        nu = self.band_ghz
        step = np.zeros(nu.size)
        step[1:] += np.diff(nu) / 2
        step[:-1] += np.diff(nu) / 2
        return _quadrature(self.freq, self.bandpass)[1] / step

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
    """Frequencies (GHz) sampling detector ``freq``'s band: ``centre_ghz`` alone for a delta bandpass, else
    BAND_POINTS Gauss-Legendre nodes over its top-hat (centred at TOPHAT_CENTRE_GHZ)."""
    if bandpass == "delta":
        return np.array([centre_ghz])
    return _quadrature(freq, bandpass)[0]


def band_edges(freq: int) -> tuple[float, float]:
    """(low, high) GHz of detector ``freq``'s top-hat."""
    centre, half = TOPHAT_CENTRE_GHZ[freq], FRACTIONAL_WIDTH[freq] / 2
    return centre * (1 - half), centre * (1 + half)


@functools.lru_cache(maxsize=32)
def _quadrature(freq: int, bandpass: str) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes (GHz) and weights (GHz, summing to the band width) over the top-hat."""
    low, high = band_edges(freq)
    x, w = np.polynomial.legendre.leggauss(BAND_POINTS)
    return (low + high) / 2 + (high - low) / 2 * x, (high - low) / 2 * w


def _jy_per_unit(unit: str, freq: int, nu_ghz: np.ndarray) -> np.ndarray:
    """Jy/sr of in-band brightness at ``nu_ghz`` per unit of ``unit`` (MJy/sr: IRAS convention, nu I_nu
    constant, referred to the nominal frequency ``freq``)."""
    if unit == "MJy/sr":
        return 1e6 * freq / nu_ghz
    import pysm3.units as u
    return (np.ones(nu_ghz.size) * pysm_unit(unit)).to_value(u.Jy / u.sr, equivalencies=u.cmb_equivalencies(
        nu_ghz * u.GHz))


@functools.lru_cache(maxsize=64)
def _band_weights(freq: int, centre_ghz: float, bandpass: str) -> np.ndarray:
    if bandpass == "delta":
        return np.array([1.0])
    nu, w = _quadrature(freq, bandpass)
    w = w * _jy_per_unit("uK_RJ", freq, nu)          # flat in power -> weights of RJ temperature
    return w / w.sum()


def detector(freq: int, beam_preset: str = "cmb-ml", beam_overrides: dict | None = None,
             bandpass: str = "delta") -> Detector:
    """Return the Detector of frequency ``freq`` with the beam preset, overrides and bandpass given."""
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
    """``unit_factor`` over the detector's band: at its centre for a delta bandpass, else the ratio of the
    band integrals (in power, flat transmission) of the two units' brightness, MJy/sr in the IRAS convention."""
    if det.bandpass == "delta" or source == destination:
        return unit_factor(det.centre_ghz, source, destination)
    return _band_unit_factor(det.freq, det.bandpass, source, destination)


@functools.lru_cache(maxsize=512)
def _band_unit_factor(freq, bandpass, source, destination) -> float:
    nu, w = _quadrature(freq, bandpass)
    return float(np.sum(w * _jy_per_unit(source, freq, nu)) / np.sum(w * _jy_per_unit(destination, freq, nu)))


def published_references() -> list[dict]:
    """Published numbers the instrument model reproduces, one row per (detector, quantity): ``freq``,
    ``quantity``, ``unit``, ``reference`` (the published value), ``source``, and ``cmbcube`` (the model's
    value: the sky-averaged noise depth it simulates, or its default top-hat band's coefficient)."""
    rows = []
    for freq in FREQS:
        det = detector(freq, bandpass="tophat")
        unit = "uK_CMB deg" if det.polarised else "kJy/sr deg"
        scale = 1e6 / 60.0 if det.polarised else 1e3 / 60.0          # (native unit) arcmin -> table unit
        for field, table, name in (("I", _DEPTH_T, "depth_T"), ("Q", _DEPTH_P, "depth_P")):
            if freq in table:
                rows.append(dict(freq=freq, quantity=name, unit=unit, reference=table[freq], source=DEPTH_SOURCE,
                                 cmbcube=det.noise_depth_arcmin(field) * scale))
        if freq in PLANCK_MJY_PER_KCMB:
            rows.append(dict(freq=freq, quantity="K_CMB->MJy/sr (top-hat band)", unit="MJy/sr per K_CMB",
                             reference=PLANCK_MJY_PER_KCMB[freq], source=MJY_SOURCE,
                             cmbcube=band_unit_factor(det, "K_CMB", "MJy/sr")))
    return rows


def gaussian_beam(fwhm_arcmin: float, lmax: int) -> np.ndarray:
    """(3, lmax+1) Gaussian transfer functions for T, E, B (healpy's spin-2 convention).

    healpy's ``gauss_beam(fwhm, lmax, pol=True)`` to the bit (tests), without importing healpy (seconds
    of a fresh process's start)."""
    sigma2 = (np.radians(fwhm_arcmin / 60.0) / np.sqrt(8.0 * np.log(2.0))) ** 2
    ell = np.arange(lmax + 1)
    g = np.exp(-0.5 * ell * (ell + 1) * sigma2)
    bl = g[:, np.newaxis] * np.exp([0.0, 2 * sigma2, 2 * sigma2])     # T, E, B: exp(0), exp(2 sigma^2) twice
    return np.ascontiguousarray(bl.T)
