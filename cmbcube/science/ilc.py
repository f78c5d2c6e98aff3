"""The ILC of one sim (pure numpy): the method registry, the configuration and :func:`clean_sim`.

The stage that runs it over a store is :mod:`cmbcube.stages.ilc`.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from cmbcube.errors import param
from cmbcube.registry import Registry
from cmbcube.science import instrument, needlets, sht

CMBML_DETECTORS = (44, 70, 100, 143, 217, 353, 545, 857)
CMBML_COMMON_BEAM = 20.6

# The ILC methods: name (``--method``, recipe ``pipeline.ilc``) -> a function
#     combine(alms, transfers, common, response, deproject, *, config, windows, nside, lmax) -> alms
# that weights the channels' scalar alms (T, E or B; (channel, nalm), each in its detector's unit)
# into CMB alms at the common beam up to ``lmax``. ``transfers`` are the channels' beams, ``common``
# the output beam, ``response`` and ``deproject`` the CMB response and the SEDs to null (per channel),
# ``config`` the ILCConfig and ``windows`` the needlet windows its options describe. Adding a method:
# the function in its own module (pure numpy, next to cmbcube/science/needlets.py) and one
# ``METHODS.register`` line below; the command line's choices and the recipe check read this table.
METHODS = Registry("ILC method", param("method"))


def nilc_method(alms, transfers, common, response, deproject, *, config, windows, nside, lmax):
    """Needlet ILC (``cmbcube.science.needlets.nilc``) over ``windows``."""
    return needlets.nilc(alms, transfers, common, windows, nside, response, deproject, config.bias_tolerance)


def hilc_method(alms, transfers, common, response, deproject, *, config, windows, nside, lmax):
    """Harmonic ILC (``cmbcube.science.needlets.hilc``) in bins of ``config.bin_width`` multipoles."""
    return needlets.hilc(alms, transfers, common, response, deproject, config.bin_width, lmax=lmax)


METHODS.register("nilc", nilc_method)
METHODS.register("hilc", hilc_method)


@dataclasses.dataclass
class ILCConfig:
    method: str = "nilc"                 # a name in METHODS: nilc | hilc
    detectors: tuple = CMBML_DETECTORS
    fields: tuple = ("I", "Q", "U")
    peaks: tuple | None = None           # cosine needlet peaks (default: the nside rule)
    gaussian_fwhms: tuple | None = None  # Gaussian needlets instead (arcmin, decreasing)
    common_beam_arcmin: float = CMBML_COMMON_BEAM
    bias_tolerance: float = 1e-3
    deproject: tuple = ()
    bin_width: int = 50
    map2alm_iterations: int = 3

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def clean_sim(obs: np.ndarray, dets: list, fields_in: list, units: list, config: ILCConfig, nside: int,
              cmb_unit: str, bandpass: str = "delta", *, beams_arcmin) -> np.ndarray:
    """ILC of one sim. obs: (detector, field, pixel) NESTED in each detector's unit.

    ``bandpass``: the store's ``instrument.bandpass`` (``delta`` or ``tophat``); the SEDs are integrated
    over each detector's band like the simulated maps.

    ``beams_arcmin``: the Gaussian beam FWHM each of ``dets`` carries (the store's record,
    ``cube.detector_beams``; never a preset).
    Returns (len(config.fields), npix) NESTED in ``cmb_unit`` at the common beam.
    """
    lmax = 3 * nside - 1
    ring_order = sht.ring_to_nest(nside)                               # ring pixel r sits at nest index
    common = instrument.gaussian_beam(config.common_beam_arcmin, lmax)
    if config.gaussian_fwhms:
        windows = needlets.gaussian_windows(config.gaussian_fwhms, lmax)
    else:
        windows = needlets.cosine_windows(config.peaks, needlets.cosine_lmax(config.peaks, lmax))
    out_lmax = windows.shape[1] - 1
    centres = [instrument.detector(d, bandpass=bandpass) for d in dets]     # SEDs integrated over each band
    response = needlets.sed_vector("cmb", centres, units)
    deproject = np.stack([needlets.sed_vector(n, centres, units) for n in config.deproject], axis=1) \
        if config.deproject else None
    beams_arcmin = [float(b) for b in beams_arcmin]
    if len(beams_arcmin) != len(dets):
        raise needlets.ILCError(f"{len(beams_arcmin)} beam(s) for {len(dets)} detector(s)")
    beams = [instrument.gaussian_beam(fwhm, lmax) for fwhm in beams_arcmin]
    result = {}

    def combine(alms, transfers, common_l, used):
        dep = deproject[used] if deproject is not None else None
        return METHODS.get(config.method)(alms, transfers, common_l, response[used], dep, config=config,
                                          windows=windows, nside=nside, lmax=out_lmax)

    if "I" in config.fields:
        col = fields_in.index("I")
        alms = np.empty((len(dets), sht.alm_size(lmax)), dtype=np.complex128)
        for i in range(len(dets)):   # one channel at a time: one map's transform buffers, not all (same speed)
            alms[i] = sht.map2alm_scalar(obs[i, col][ring_order][None].astype(np.float64), lmax,
                                         config.map2alm_iterations)[0]
        result["T"] = combine(alms, np.array([b[0] for b in beams]), common[0], list(range(len(dets))))
    if "Q" in config.fields or "U" in config.fields:
        pol = [i for i, d in enumerate(dets) if instrument.detector(d).polarised]
        if len(pol) < 1 + (deproject.shape[1] if deproject is not None else 0):
            raise needlets.ILCError(f"polarisation needs more polarised detectors among {param('detectors')}")
        qi, ui = fields_in.index("Q"), fields_in.index("U")
        eb = []
        for i in pol:
            iqu = np.stack([np.zeros(obs.shape[-1]), obs[i, qi], obs[i, ui]])[:, ring_order].astype(np.float64)
            eb.append(sht.map2alm(iqu, lmax, config.map2alm_iterations)[1:])
        eb = np.array(eb)                                    # (channel, E/B, nalm)
        for key, col in (("E", 1), ("B", 2)):
            common_pol = common[col].copy()
            common_pol[:2] = 0.0
            result[key] = combine(eb[:, col - 1], np.array([beams[i][col] for i in pol]), common_pol, pol)
    scale = 1.0 if cmb_unit == "uK_CMB" else 1e-6
    out = np.full((len(config.fields), 12 * nside * nside), np.nan, dtype=np.float32)
    if "T" in result:
        t_map = sht.alm2map(result["T"], nside)
        out[config.fields.index("I"), ring_order] = t_map * scale
    if "E" in result:
        zero = np.zeros_like(result["E"])
        qu = sht.alm2map(np.stack([zero, result["E"], result["B"]]), nside)
        for k, f in ((1, "Q"), (2, "U")):
            if f in config.fields:
                out[config.fields.index(f), ring_order] = qu[k] * scale
    return out
