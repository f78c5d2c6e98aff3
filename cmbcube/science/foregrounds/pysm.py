"""Evaluating pysm3 model objects: emission = reference maps x SED factors.

pysm3's numba kernels evaluate every SED factor twice (I and P) with two black bodies each,
and cannot tell that an SED is the same in every pixel.  For the classes the synthetic sky
uses, with a delta bandpass, the emission is written here as reference maps x SED factors:
the same formulas (tests compare with get_emission to 1e-10), evaluated once per pixel, and
a spatially uniform SED (free-free, AME, CIB, tSZ) is a single number, so those components
need one harmonic transform per sim instead of one per detector.  Any other model (a pysm3
preset, a component of another class) is evaluated by pysm3's own ``get_emission``.
"""
from __future__ import annotations

import numpy as np

from cmbcube.errors import InputError
from cmbcube.science.foregrounds import bandtable
from cmbcube.science.foregrounds.seds import H_PLANCK, K_BOLTZMANN, tsz_sed


def _exact_type(model, name):
    import pysm3.models as m
    return type(model) is getattr(m, name)


def _values(x):
    return np.asarray(getattr(x, "value", x))


def _maybe_scalar(x: np.ndarray):
    """A constant array as a 0-d array (one SED factor for the whole sky), else the array."""
    return x.reshape(-1)[:1].reshape(()) if x.size and np.all(x == x.reshape(-1)[0]) else x


def _parameters(model) -> dict | None:
    """The SED parameters of a model this module can evaluate (cached on the model), else None."""
    cached = getattr(model, "_cmbcube_sed", False)
    if cached is not False:
        return cached
    if getattr(model, "sed_kind", None) == "tsz":
        params = {"kind": "tsz"}
    elif _exact_type(model, "ModifiedBlackBody"):
        params = {"kind": "mbb", "beta": _maybe_scalar(_values(model.mbb_index)),
                  "temp": _maybe_scalar(_values(model.mbb_temperature))}
    elif _exact_type(model, "CurvedPowerLaw"):
        params = {"kind": "curved", "beta": _maybe_scalar(_values(model.pl_index)),
                  "curve": float(_values(model.freq_curve)), "curvature": float(_values(model.spectral_curvature))}
    elif _exact_type(model, "PowerLaw"):
        params = {"kind": "power", "beta": _maybe_scalar(_values(model.pl_index))}
    else:
        params = None
    if params is not None:
        for key in ("beta", "temp"):
            if key in params:
                params[key] = params[key].astype(np.float64, copy=False)     # SED factors in double precision
    if params is not None and params["kind"] != "tsz":
        params["ref_I"] = float(_values(model.freq_ref_I))
        params["ref_P"] = float(_values(model.freq_ref_P)) if getattr(model, "freq_ref_P", None) is not None \
            else params["ref_I"]
    model._cmbcube_sed = params
    return params


def reference_maps(model, ncomp: int | None = 3, dtype=np.float64) -> np.ndarray:
    """(ncomp, npix) copies of the maps the SED factors multiply (I or I, Q, U): the templates
    (uK_RJ) or the Compton-y map.  ``ncomp`` None: I alone when the model's Q and U are zero (or absent),
    else I, Q, U."""
    maps = _reference_views(model)
    if ncomp is None:
        ncomp = 3 if len(maps) == 3 and (np.any(maps[1]) or np.any(maps[2])) else 1
    out = np.zeros((ncomp, np.size(maps[0])), dtype=dtype)
    for k, m in enumerate(maps[:ncomp]):
        out[k] = m
    return out


def _reference_views(model) -> list[np.ndarray]:
    """The model's own reference arrays (float64, not copied): [y] for tSZ, [I] or [I, Q, U]."""
    params = _parameters(model)
    if params is None:
        raise TypeError(f"{type(model).__name__} has no separable description")
    if params["kind"] == "tsz":
        maps = [model.y_map]
    elif getattr(model, "Q_ref", None) is None or not getattr(model, "has_polarization", True):
        maps = [model.I_ref]
    else:
        maps = [model.I_ref, model.Q_ref, model.U_ref]
    return [_values(m) for m in maps]


def _factor(params: dict, freq: float, ref: float):
    kind = params["kind"]
    if kind == "tsz":
        return np.float64(tsz_sed(freq))
    log_ratio = np.log(np.float64(freq) / ref)
    if kind == "power":
        return np.exp(log_ratio * params["beta"])
    if kind == "curved":
        return np.exp(log_ratio * (params["beta"] + params["curvature"] * np.log(np.float64(freq) / params["curve"])))
    # modified black body in RJ units: (nu/nu0)^(beta - 2) B_nu(T) / B_nu0(T)
    c = H_PLANCK * 1e9 / (K_BOLTZMANN * params["temp"])
    return np.exp(log_ratio * (params["beta"] + 1.0)) * (np.expm1(c * ref) / np.expm1(c * freq))


def sed_factors(model, freq_ghz: float):
    """(I factor, P factor) with emission = reference_maps x factor: 0-d arrays when the SED is
    the same in every pixel, (npix,) arrays otherwise; None for models evaluated by pysm3."""
    params = _parameters(model)
    if params is None:
        return None
    f_i = _factor(params, freq_ghz, params.get("ref_I", 0.0))
    f_p = f_i if params.get("ref_P") == params.get("ref_I") else _factor(params, freq_ghz, params["ref_P"])
    return f_i, f_p


def uniform_sed(model):
    """For a model with the same SED everywhere: ``f(freq_ghz) -> float`` with
    emission(freq) = reference_maps x f(freq) in I.  Holds the SED parameters only, not the maps."""
    params = _parameters(model)
    if params is None or not is_uniform(model):
        raise InputError(f"{type(model).__name__}: the SED varies across the sky")
    return lambda freq_ghz: float(_factor(params, freq_ghz, params.get("ref_I", 0.0)))


def is_uniform(model) -> bool:
    """True when the model's SED is one number per frequency for the whole sky (read from its SED
    parameters: 0-d when constant, see ``_maybe_scalar``; no SED is evaluated)."""
    params = _parameters(model)
    return params is not None and all(np.ndim(params.get(key, 0.0)) == 0 for key in ("beta", "temp"))


def emission(model, freq_ghz, ncomp: int = 3, scale: float = 1.0, dtype=np.float64, weights=None) -> np.ndarray:
    """(ncomp, npix) emission in uK_RJ x ``scale``: I, or I, Q, U.  ``freq_ghz``: one frequency (delta
    bandpass), or the frequencies of a band with ``weights``, its normalised integration weights in uK_RJ
    (``instrument.Detector.band_weights``: the band-integrated emission is sum_i weights_i emission(nu_i)).

    Equal to pysm3's ``get_emission`` (the fallback for any other model); the SED factors are
    computed in double precision whatever ``dtype`` the result is stored in.
    """
    freqs = np.atleast_1d(np.asarray(freq_ghz, dtype=np.float64))
    if freqs.size > 1:
        if weights is None or len(weights) != freqs.size:
            raise InputError("emission over a band needs one weight per frequency")
        if _parameters(model) is None:       # pysm3 evaluates it: one frequency at a time, summed
            out = None
            for nu, w in zip(freqs, weights):
                term = emission(model, float(nu), ncomp, scale * float(w), np.float64)
                out = term if out is None else out + term
            return out.astype(dtype, copy=False)
        acc_i = acc_p = None                        # running sums: two SED-sized arrays at most
        for nu, w in zip(freqs, weights):
            f_i, f_p = sed_factors(model, float(nu))
            same = f_p is f_i                       # one SED for I and P (the usual case): one sum
            acc_i = float(w) * f_i if acc_i is None else acc_i + float(w) * f_i
            if not same:
                acc_p = float(w) * f_p if acc_p is None else acc_p + float(w) * f_p
        factors = (acc_i, acc_i if acc_p is None else acc_p)
    else:
        factors = sed_factors(model, float(freqs[0]))
    if factors is None:
        import pysm3.units as u
        out = np.asarray(model.get_emission(float(freqs[0]) * u.GHz).to_value(u.uK_RJ))[:ncomp] * scale
        return out.astype(dtype, copy=False)
    maps = _reference_views(model)
    out = np.zeros((ncomp, np.size(maps[0])), dtype=dtype)
    for k, m in enumerate(maps[:ncomp]):
        np.multiply(m, factors[min(k, 1)] * scale, out=out[k])
    return out



def add_emission(out: np.ndarray, model, freq_ghz, scale: float = 1.0, weights=None) -> None:
    """Add emission(model, freq_ghz, len(out), scale, out.dtype, weights) to ``out`` in place.

    A power law, curved power law or modified black body with SED maps reads its band-integrated SED
    from a table over this sky's parameter range (:mod:`.bandtable`: one fused pass, relative error
    below 2e-7, no full-sky temporaries); any other model is evaluated by :func:`emission` and added.
    """
    freqs = np.atleast_1d(np.asarray(freq_ghz, dtype=np.float64))
    w = np.ones(1) if weights is None and freqs.size == 1 else weights
    params = _parameters(model)
    if bandtable.tabulable(params) and not is_uniform(model):
        bandtable.add_emission(out, params, _reference_views(model), freqs, w, scale)
        return
    out += emission(model, freqs if freqs.size > 1 else float(freqs[0]), out.shape[0], scale, out.dtype, w)


class PresetSum:
    """A preset made of several pysm3 components (a1 = two AME populations) seen as one."""

    def __init__(self, parts):
        self.parts = list(parts)

    def get_emission(self, freqs, weights=None):
        return sum(part.get_emission(freqs, weights) for part in self.parts)
