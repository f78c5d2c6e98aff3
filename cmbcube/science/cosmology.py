"""Cosmological parameters per sim and their lensed CMB spectra (CAMB).

Priors: Gaussians around published LCDM values (Planck 2018 TT,TE,EE+lowE+lensing;
WMAP9 alone), or rows drawn from an MCMC chain the user supplies (read by ``cmbcube.interop.planck``).
"""
from __future__ import annotations

import functools

import numpy as np

from cmbcube.errors import InputError

PARAMS = ("H0", "ombh2", "omch2", "ns", "As", "tau")
SPECTRA = ("TT", "EE", "BB", "TE")

# (mean, 1-sigma) per parameter.
PRIORS = {
    "planck2018": {"H0": (67.36, 0.54), "ombh2": (0.02237, 0.00015), "omch2": (0.1200, 0.0012),
                   "ns": (0.9649, 0.0042), "As": (2.100e-9, 0.030e-9), "tau": (0.0544, 0.0073)},
    "wmap9": {"H0": (70.0, 2.2), "ombh2": (0.02264, 0.00050), "omch2": (0.1138, 0.0045),
              "ns": (0.972, 0.013), "As": (2.41e-9, 0.10e-9), "tau": (0.089, 0.014)},
}
PRIORS["fixed"] = PRIORS["planck2018"]
# Draws outside these bounds are redrawn (physical range for CAMB).
_BOUNDS = {"H0": (40, 100), "ombh2": (0.005, 0.1), "omch2": (0.01, 0.99), "ns": (0.8, 1.2),
           "As": (5e-10, 5e-9), "tau": (0.01, 0.8)}


def draw_params(rng: np.random.Generator, prior: str = "planck2018", width: float = 1.0,
                chain: dict | None = None) -> dict[str, float]:
    """One parameter set: a Gaussian draw around a published prior (redrawn outside physical bounds),
    its means (``fixed`` or ``width`` 0), or a random row of ``chain`` ({parameter: column}, as
    ``cmbcube.interop.planck.read_chain`` reads a chain file) when ``prior`` is ``chain``."""
    if prior == "chain":
        if chain is None:
            raise InputError("cmb.prior 'chain' needs the chain's columns (cmb.chain_file)")
        table = chain
        row = int(rng.integers(len(table["H0"])))
        return {p: float(table[p][row]) for p in PARAMS}
    if prior not in PRIORS:
        raise InputError(f"unknown cosmology prior {prior!r}; allowed: {', '.join(PRIORS)}, chain")
    out = {}
    for name in PARAMS:
        mean, sigma = PRIORS[prior][name]
        if prior == "fixed" or width == 0:
            out[name] = mean
            continue
        lo, hi = _BOUNDS[name]
        while True:
            value = rng.normal(mean, sigma * width)
            if lo < value < hi:
                break
        out[name] = float(value)
    return out


# Lensed spectra.  Lensed BB at ell < 3 nside takes most of its power from E modes and lensing
# potential at ell of a few thousand, so CAMB run to the map's own band limit (its 200-ell margin,
# lens_potential_accuracy 0) misses 27-32% of it at nside 32-128 and 9% at 512 (TT, EE, TE: < 1%).
# The reference is CAMB at lmax >= REFERENCE_LMAX with lens_potential_accuracy >= 1 (within 0.3% of
# lmax 4000 / accuracy 2 in BB, 0.01% in TT/EE).  It costs ~2.5 s per call against ~0.6 s for the
# map's own band limit, so by default ("corrected") each sim runs the fast CAMB and is corrected by
# a first-order expansion, around the prior's centre, of log(reference / fast) (TT, EE, BB) and of
# (reference - fast) / sqrt(TT EE) (TE) in the six parameters: 7 reference runs once per prior and
# band limit, then no extra cost per sim.  ``direct`` runs the reference for every sim.
LENSING_METHODS = ("corrected", "direct")
REFERENCE_LMAX = 3000
REFERENCE_MARGIN = 500          # above REFERENCE_LMAX - MARGIN the reference runs to lmax + MARGIN


def camb_lensed(params: dict[str, float], lmax: int, lens_potential_accuracy: int = 0) -> np.ndarray:
    """(4, lmax+1) lensed C_ell (TT, EE, BB, TE) in uK_CMB^2 from one CAMB run to ``lmax``.

    CAMB computes the unlensed spectra to lmax + 200 (its ``lens_output_margin``); that is enough for
    TT/EE/TE, not for BB (see above): :func:`lensed_spectra` is the accurate entry point.
    """
    import camb
    # One OpenMP thread, always: CAMB's results change in the last bits with its thread count (measured:
    # OMP_NUM_THREADS 1, 2 and 4 give three different byte strings), which would make a store's bytes
    # depend on the machine's cores and on how a stage was scheduled.  A single thread costs ~7% at lmax 383.
    camb.config.ThreadNum = 1
    pars = camb.set_params(H0=params["H0"], ombh2=params["ombh2"], omch2=params["omch2"],
                           ns=params["ns"], As=params["As"], tau=params["tau"], mnu=0.06,
                           lmax=lmax, lens_potential_accuracy=lens_potential_accuracy,
                           WantTensors=False)
    results = camb.get_results(pars)
    # no params here: passing them again makes CAMB recompute everything (twice the time)
    cls = results.get_cmb_power_spectra(CMB_unit="muK", raw_cl=True, lmax=lmax,
                                        spectra=["lensed_scalar"])["lensed_scalar"]
    return np.ascontiguousarray(cls[: lmax + 1, :4].T)


def reference_spectra(params: dict[str, float], lmax: int, lens_potential_accuracy: int = 1) -> np.ndarray:
    """(4, lmax+1) lensed C_ell from the high-accuracy CAMB run (lmax >= REFERENCE_LMAX)."""
    run_lmax = max(REFERENCE_LMAX, lmax + REFERENCE_MARGIN)
    return camb_lensed(params, run_lmax, max(1, lens_potential_accuracy))[:, : lmax + 1].copy()


def _log_gap(fast: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """What the fast run misses: log ratios (TT, EE, BB) and the TE gap in units of sqrt(TT EE)."""
    gap = np.zeros_like(fast)
    with np.errstate(divide="ignore", invalid="ignore"):
        gap[:3, 2:] = np.log(reference[:3, 2:] / fast[:3, 2:])
        gap[3, 2:] = (reference[3, 2:] - fast[3, 2:]) / np.sqrt(fast[0, 2:] * fast[1, 2:])
    return np.nan_to_num(gap, nan=0.0, posinf=0.0, neginf=0.0)


def _close_gap(fast: np.ndarray, gap: np.ndarray) -> np.ndarray:
    out = fast.copy()
    out[:3, 2:] = fast[:3, 2:] * np.exp(gap[:3, 2:])
    out[3, 2:] = fast[3, 2:] + gap[3, 2:] * np.sqrt(fast[0, 2:] * fast[1, 2:])
    return out


def expansion_point(prior: str, width: float = 1.0, chain: dict | None = None) -> tuple[tuple, tuple]:
    """(centre, step) of the lensing correction's expansion, as tuples in the order of PARAMS: the prior's
    means and 1-sigma x ``width`` (steps 0 when every sim has the same cosmology), or a chain's column
    means and standard deviations."""
    if prior == "chain":
        if chain is None:
            raise InputError("cmb.prior 'chain' needs the chain's columns (cmb.chain_file)")
        return (tuple(float(np.mean(chain[p])) for p in PARAMS), tuple(float(np.std(chain[p])) for p in PARAMS))
    if prior not in PRIORS:
        raise InputError(f"unknown cosmology prior {prior!r}; allowed: {', '.join(PRIORS)}, chain")
    fixed = prior == "fixed" or width == 0
    return (tuple(PRIORS[prior][p][0] for p in PARAMS),
            tuple(0.0 if fixed else PRIORS[prior][p][1] * width for p in PARAMS))


@functools.lru_cache(maxsize=16)
def lensing_correction(centre: tuple, step: tuple, lmax: int, lens_potential_accuracy: int = 1) -> tuple:
    """(gap at the centre (4, lmax+1), its derivatives (len(PARAMS), 4, lmax+1)) of the reference over the
    fast CAMB run, by forward differences of one ``step`` (no derivative where a step is 0).  Cached per
    process: every sim of a prior shares it."""
    at = dict(zip(PARAMS, centre))
    gap0 = _log_gap(camb_lensed(at, lmax), reference_spectra(at, lmax, lens_potential_accuracy))
    slopes = np.zeros((len(PARAMS),) + gap0.shape)
    for k, (name, h) in enumerate(zip(PARAMS, step)):
        if h == 0:
            continue
        moved = dict(at, **{name: at[name] + h})
        gap = _log_gap(camb_lensed(moved, lmax), reference_spectra(moved, lmax, lens_potential_accuracy))
        slopes[k] = (gap - gap0) / h
    return gap0, slopes


def lensed_spectra(params: dict[str, float], lmax: int, lens_potential_accuracy: int = 1,
                   method: str = "corrected", expansion: tuple | None = None,
                   correction: tuple | None = None) -> np.ndarray:
    """(4, lmax+1) lensed C_ell (TT, EE, BB, TE) in uK_CMB^2, accurate in BB (see LENSING_METHODS above).

    ``direct``: the reference CAMB run for these parameters.  ``corrected``: CAMB to ``lmax`` plus the
    first-order correction expanded around ``expansion`` = (centre, step) (:func:`expansion_point`; the
    parameters themselves with no derivatives when None); ``correction``: that expansion's
    :func:`lensing_correction`, when the caller already has it (computed here otherwise).
    """
    if method not in LENSING_METHODS:
        raise InputError(f"cmb.lensing {method!r}; allowed: {', '.join(LENSING_METHODS)}")
    if method == "direct":
        return reference_spectra(params, lmax, lens_potential_accuracy)
    if expansion is None:
        expansion = (tuple(params[p] for p in PARAMS), (0.0,) * len(PARAMS))
    centre, step = (tuple(float(x) for x in v) for v in expansion)
    gap0, slopes = correction if correction is not None else \
        lensing_correction(centre, step, lmax, lens_potential_accuracy)
    gap = gap0 + np.einsum("k,ksl->sl", np.array([params[p] for p in PARAMS]) - np.array(centre), slopes)
    return _close_gap(camb_lensed(params, lmax), gap)


def synalm(cls: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(3, nalm) Gaussian T, E, B alms (healpy layout) with spectra (TT, EE, BB, TE)."""
    from cmbcube.science.sht import alm_size, ell_of_alm
    tt, ee, bb, te = cls
    lmax = tt.shape[0] - 1
    ell = ell_of_alm(lmax)
    m_zero = np.zeros(alm_size(lmax), dtype=bool)
    m_zero[: lmax + 1] = True           # healpy layout: m = 0 block comes first
    with np.errstate(divide="ignore", invalid="ignore"):
        l11 = np.sqrt(np.clip(tt, 0, None))
        l21 = np.where(tt > 0, te / np.where(tt > 0, l11, 1), 0.0)
        l22 = np.sqrt(np.clip(ee - l21 ** 2, 0, None))
    lbb = np.sqrt(np.clip(bb, 0, None))

    def unit_normal():
        z = (rng.standard_normal(ell.size) + 1j * rng.standard_normal(ell.size)) / np.sqrt(2)
        z[m_zero] = rng.standard_normal(lmax + 1)
        return z

    z1, z2, z3 = unit_normal(), unit_normal(), unit_normal()
    alm = np.empty((3, ell.size), dtype=np.complex128)
    alm[0] = l11[ell] * z1
    alm[1] = l21[ell] * z1 + l22[ell] * z2
    alm[2] = lbb[ell] * z3
    return alm
