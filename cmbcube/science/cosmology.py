"""Cosmological parameters per sim and their lensed CMB spectra (CAMB).

Priors: Gaussians around published LCDM values (Planck 2018 TT,TE,EE+lowE+lensing;
WMAP9 alone), or rows drawn from an MCMC chain the user supplies (read by ``cmbcube.interop.planck``).
"""
from __future__ import annotations

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


def lensed_spectra(params: dict[str, float], lmax: int, lens_potential_accuracy: int = 0) -> np.ndarray:
    """(4, lmax+1) lensed C_ell (TT, EE, BB, TE) in uK_CMB^2, from CAMB.

    CAMB computes the unlensed spectra to lmax + 200 (its ``lens_output_margin``) so that the lensed
    ones are accurate to lmax.
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
