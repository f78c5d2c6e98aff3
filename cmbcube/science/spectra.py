"""Power spectra of truth and prediction on the apodised analysis mask, and what theory they estimate.

Pure numpy/healpy/pymaster: no files, no environment, no Dask, no store (the coupling matrices that
workers share through files are read and written by :mod:`cmbcube.cube.analysis_io`).

Spectra (TT, EE, BB, TE) of truth, prediction, residual and the prediction x truth cross spectrum,
binned (width 10 from ell 2 to 2 nside), beams and pixel window deconvolved, by one of two estimators:
``namaster`` (default; NaMaster, PyPI ``pymaster``): mode-coupling matrix inverted per bandpower,
B modes purified, T monopole and dipole removed on the mask first; ``pseudo-fast``: the naive
pseudo-C_l divided by w2 = mean(mask^2), about 10x cheaper but E-to-B leakage makes its BB worthless
on a cut sky (truth BB hundreds of times theory at ell < 12).
"""
from __future__ import annotations

import numpy as np

from cmbcube.errors import InputError, param
from cmbcube.science import instrument, pixwin, sht
from cmbcube.science.metrics import remove_monopole_dipole

SPECTRA = ("TT", "EE", "BB", "TE")
KINDS = ("truth", "pred", "resid", "cross")
BIN_WIDTH = 10
ESTIMATORS = ("namaster", "pseudo-fast")
NAMASTER_MISSING = ("the namaster spectrum estimator needs NaMaster (pymaster), which is not importable: install it "
                    "with `make pymaster` or `bash tools/install_pymaster.sh PYTHON` (apt-get libgsl-dev libfftw3-dev "
                    "libcfitsio-dev libchealpix-dev, then a source build), or pass "
                    + param("estimator", "pseudo-fast")
                    + " (naive pseudo-C_l: no mode-coupling inversion, BB dominated by E-to-B leakage)")
FIELD_SPECTRUM = {"I": 0, "Q": 1, "U": 2}       # the auto spectrum scoring each field: TT, EE, BB
# Purification's E-to-B leakage is not in NaMaster's analytic windows (they give EE -> BB ~1e-36): on a
# pixelised cut sky (most at low nside and near the taper's scale) pure-E skies still leave BB of a few % of
# the lensing BB.  It is measured once per mask on EB_LEAKAGE_SIMS pure-E Gaussian skies (fiducial CAMB EE,
# fixed seed) and recorded in the windows' EE -> BB block as a per-bin fraction of the E-mode variance at
# ell >= BB_FIRST_ELL (eb_kernel): not of the bin's own EE, which the reionisation bump's tail moves with tau at
# ell 12-21 while the leakage there, coming from the E modes above, does not (measured at nside 64).
EB_LEAKAGE_SIMS = 16
EB_LEAKAGE_SEED = 20260
# BB bins starting below this multipole are NaN: after purification their scatter is many times the lensing
# BB (sd 4x theory at nside 32, and pure-E skies alone leave 1-12x it at nside 32-128, growing with nside)
BB_FIRST_ELL = 12


def ell_bins(nside: int, width: int = BIN_WIDTH) -> np.ndarray:
    """Bin edges: first multipoles of the bins, then one past the last bin's end."""
    lmax = 2 * nside                # as CMB-ML: spectra to 2 nside
    return np.arange(2, lmax + 2, width)


def bin_means(cl: np.ndarray, first_ells, width: int = BIN_WIDTH) -> np.ndarray:
    """Mean of a 1-D C_ell over each bin [first, first + width) (a flat-C_ell binning of theory)."""
    return np.array([cl[int(lo):int(lo) + width].mean() for lo in first_ells])


def window_theory(windows: np.ndarray, cls: np.ndarray) -> np.ndarray:
    """(spectrum, bin) expectation of bandpowers with windows (spectrum, bin, spectrum_in, ell) for spectra
    ``cls`` (spectrum_in, ell) in the order of SPECTRA; both cut to the shorter ell range."""
    n = min(windows.shape[-1], np.shape(cls)[-1])
    return np.einsum("sbtl,tl->sb", windows[..., :n], np.asarray(cls)[:, :n])


def pseudo_spectra(a_nest, b_nest, fields, apod_nest, beam_a, beam_b, nside, pixel_window: bool, bins):
    """Binned TT, EE, BB, TE of a x b (IQU or I maps), mask-corrected, beams and pixel window removed.

    Returns (4, nbins) with NaN where a spectrum is not available (no polarisation).
    """
    import healpy as hp
    lmax = 3 * nside - 1
    n2r = hp.nest2ring(nside, np.arange(12 * nside * nside))

    def ring_iqu(m):
        out = np.zeros((3, 12 * nside * nside))
        for k, f in enumerate(fields):
            out["IQU".index(f), n2r] = m[k]
        return out

    w = np.zeros(12 * nside * nside)
    w[n2r] = apod_nest
    w2 = np.mean(w ** 2)
    alm_a = sht.map2alm(ring_iqu(a_nest) * w, lmax, 3)
    alm_b = alm_a if b_nest is a_nest else sht.map2alm(ring_iqu(b_nest) * w, lmax, 3)
    window = pixwin.pixel_window(nside, lmax) if pixel_window else np.ones(lmax + 1)
    ba = instrument.gaussian_beam(beam_a, lmax) * window
    bb = instrument.gaussian_beam(beam_b, lmax) * window
    cls = {}
    cls["TT"] = hp.alm2cl(alm_a[0], alm_b[0]) / (ba[0] * bb[0])
    pol = "Q" in fields and "U" in fields
    if pol:
        cls["EE"] = hp.alm2cl(alm_a[1], alm_b[1]) / (ba[1] * bb[1])
        cls["BB"] = hp.alm2cl(alm_a[2], alm_b[2]) / (ba[2] * bb[2])
        cls["TE"] = hp.alm2cl(alm_a[0], alm_b[1]) / (ba[0] * bb[1])
    out = np.full((4, len(bins) - 1), np.nan)
    for k, name in enumerate(SPECTRA):
        if name in cls:
            cl = cls[name] / w2
            out[k] = [np.mean(cl[lo:hi]) for lo, hi in zip(bins[:-1], bins[1:])]
    return out


def require_namaster():
    """The pymaster module, or an InputError saying how to install it (the CLI exits 2)."""
    try:
        import pymaster
    except ImportError as err:
        raise InputError(f"{param('estimator')} namaster: {NAMASTER_MISSING} ({err})") from None
    return pymaster


def check_estimator(estimator: str) -> None:
    """An estimator this module knows, and (namaster) importable; InputError naming the allowed ones."""
    if estimator not in ESTIMATORS:
        raise InputError(f"{param('estimator')} {estimator!r}: allowed: {', '.join(ESTIMATORS)}")
    if estimator == "namaster":
        require_namaster()


def namaster_key(nside: int, apod_nest: np.ndarray, mask_nest: np.ndarray, nbins: int) -> str:
    """What the coupling matrices and the E-to-B leakage depend on, hashed: masks, nside, binning, pymaster's
    version, the leakage's sims."""
    import hashlib
    digest = hashlib.sha1()
    for part in (np.ascontiguousarray(apod_nest, dtype=np.float64), np.ascontiguousarray(mask_nest, dtype=bool)):
        digest.update(part.tobytes())
    nmt = require_namaster()
    digest.update(f"{nside} {nbins} {BIN_WIDTH} Dell purify_b {getattr(nmt, '__version__', '')} "
                  f"eb_leakage {EB_LEAKAGE_SIMS} {EB_LEAKAGE_SEED} E variance from {BB_FIRST_ELL}".encode())
    return digest.hexdigest()[:16]


class NamasterSpectra:
    """NaMaster bandpowers on one apodised mask: the unit-beam mode-coupling matrices (TT; TE, TB; EE, EB,
    BE, BB with B purified) are computed once (or handed in: ``workspaces``, as ``self.workspaces`` holds
    them), then per pair of maps only their beams and pixel window are swapped in (``update_beams``:
    re-binning and inverting, not recoupling).

    Bandpowers: bins of BIN_WIDTH from ell 2 up to 3 nside - 1 (so that the inversion sees every
    multipole the maps hold); the first ``nbins`` (up to 2 nside) are returned.  The inversion assumes
    D_ell = ell (ell + 1) C_ell / 2 pi flat within a bin (far closer to the truth at low ell than a flat
    C_ell: with flat-C_ell bins the ell 12-21 EE bandpower's expectation is -1.7x the bin's mean C_ell),
    and each D_ell bandpower is returned as a C_ell, times the bin mean of 2 pi / (ell (ell + 1)): the
    bin-mean C_ell if D_ell is flat across it.  Expectation: ``windows() @ C_ell``, NaMaster's windows plus
    the E-to-B leakage measured on pure-E sims (``eb_leakage``: per bin, BB over ``eb_kernel`` @ EE; computed
    with the matrices, or handed in).  BB bins below BB_FIRST_ELL are NaN.
    """

    NAMES = ("w00", "w02", "w22")

    def __init__(self, nside: int, apod_nest: np.ndarray, mask_nest: np.ndarray, nbins: int, workspaces=None,
                 eb_leakage=None):
        import healpy as hp
        nmt = require_namaster()
        self.nmt, self.nside, self.nbins = nmt, nside, nbins
        self.lmax = 3 * nside - 1
        self.n2r = hp.nest2ring(nside, np.arange(12 * nside * nside))
        self.mask = np.asarray(mask_nest) > 0
        self.weight = np.zeros(12 * nside * nside)
        self.weight[self.n2r] = apod_nest
        ini = np.arange(2, self.lmax + 1, BIN_WIDTH)
        end = np.minimum(ini + BIN_WIDTH, self.lmax + 1)
        self.bins = nmt.NmtBin.from_edges(ini, end, is_Dell=True)
        ell = np.arange(self.lmax + 1)
        self.d_to_c = np.array([np.mean(2 * np.pi / (ell[lo:hi] * (ell[lo:hi] + 1.0)))
                                for lo, hi in zip(ini[:nbins], end[:nbins])])
        self.bb_nan = ini[:nbins] < BB_FIRST_ELL
        self._windows = None
        if workspaces is not None:
            self.w00, self.w02, self.w22 = workspaces
        else:
            # the coupling matrices cost ~lmax^3 (3.1 s at nside 128 on a quiet core, 11 s under load, minutes at 512)
            f0 = nmt.NmtField(self.weight, None, spin=0, lmax=self.lmax)
            f2 = nmt.NmtField(self.weight, None, spin=2, purify_b=True, lmax=self.lmax)
            self.w00 = nmt.NmtWorkspace.from_fields(f0, f0, self.bins)
            self.w02 = nmt.NmtWorkspace.from_fields(f0, f2, self.bins)
            self.w22 = nmt.NmtWorkspace.from_fields(f2, f2, self.bins)
        self.eb_leakage = (np.asarray(eb_leakage, dtype=np.float64) if eb_leakage is not None
                           else self.measure_eb_leakage())

    @property
    def workspaces(self) -> tuple:
        """The three NmtWorkspace objects, in the order of NAMES."""
        return self.w00, self.w02, self.w22

    def fields(self, maps_nest: np.ndarray, fields: list) -> dict:
        """{'T': spin-0 field, 'P': purified spin-2 field} of (field, pixel) NESTED maps (I, or I, Q, U)."""
        def ring(m):
            out = np.empty(m.size)
            out[self.n2r] = m
            return out
        out = {}
        if "I" in fields:
            t = remove_monopole_dipole(np.asarray(maps_nest[fields.index("I")], dtype=np.float64), self.mask)
            out["T"] = self.nmt.NmtField(self.weight, [ring(t)], lmax=self.lmax)
        if "Q" in fields and "U" in fields:
            q, u = (ring(np.asarray(maps_nest[fields.index(f)], dtype=np.float64)) for f in "QU")
            out["P"] = self.nmt.NmtField(self.weight, [q, u], purify_b=True, lmax=self.lmax)
        return out

    def spectra(self, fa: dict, fb: dict, beam_a: float, beam_b: float, pixel_window: bool) -> np.ndarray:
        """(4, nbins) TT, EE, BB, TE of a x b (beams and pixel window deconvolved), NaN where not available."""
        nmt = self.nmt
        window = np.ones((3, self.lmax + 1))
        if pixel_window:
            window = np.stack([pixwin.pixel_window(self.nside, self.lmax)] +
                              [pixwin.polarisation_window(self.nside, self.lmax)] * 2)
        ba = instrument.gaussian_beam(beam_a, self.lmax) * window
        bb = instrument.gaussian_beam(beam_b, self.lmax) * window
        out = np.full((4, self.nbins), np.nan)

        def decoupled(wsp, f1, f2, b1, b2):
            wsp.update_beams(np.ascontiguousarray(b1), np.ascontiguousarray(b2))
            return wsp.decouple_cell(nmt.compute_coupled_cell(f1, f2))[:, : self.nbins] * self.d_to_c

        if "T" in fa and "T" in fb:
            out[0] = decoupled(self.w00, fa["T"], fb["T"], ba[0], bb[0])[0]
        if "P" in fa and "P" in fb:
            cl = decoupled(self.w22, fa["P"], fb["P"], ba[1], bb[1])        # EE, EB, BE, BB
            out[1], out[2] = cl[0], np.where(self.bb_nan, np.nan, cl[3])
        if "T" in fa and "P" in fb:
            out[3] = decoupled(self.w02, fa["T"], fb["P"], ba[0], bb[1])[0]  # TE, TB
        return out

    def measure_eb_leakage(self, nsims: int = EB_LEAKAGE_SIMS, seed: int = EB_LEAKAGE_SEED) -> np.ndarray:
        """(nbins,) mean purified BB bandpower of ``nsims`` pure-E Gaussian skies (fiducial CAMB lensed EE,
        polarisation pixel window applied and deconvolved) over their E-mode variance (``eb_kernel``): the E-to-B
        leakage NaMaster's analytic windows leave out.  Costs ``nsims`` fields (about the matrices' cost at
        nside 32-128; 16 x ~14 s under load at nside 512, estimated)."""
        from cmbcube.science import cosmology
        nmt = self.nmt
        # EE only: CAMB to the band limit is exact enough for it (0.2%), without the BB reference run
        ee = cosmology.camb_lensed(cosmology.draw_params(np.random.default_rng(0), "fixed"), self.lmax)[1]
        cls = np.zeros((4, self.lmax + 1))
        cls[1] = ee
        window = pixwin.polarisation_window(self.nside, self.lmax)
        self.w22.update_beams(np.ascontiguousarray(window), np.ascontiguousarray(window))
        rng = np.random.default_rng(seed)
        bb = np.zeros(self.nbins)
        for _ in range(nsims):
            q, u = sht.alm2map(sht.almxfl(cosmology.synalm(cls, rng), window), self.nside)[1:]
            field = nmt.NmtField(self.weight, [q, u], purify_b=True, lmax=self.lmax)
            bb += self.w22.decouple_cell(nmt.compute_coupled_cell(field, field))[3, : self.nbins] / nsims
        return bb * self.d_to_c / (eb_kernel(self.lmax) @ ee)

    def windows(self) -> np.ndarray:
        """(4, nbins, 4, lmax + 1) bandpower windows W (unit beams): the expectation of spectrum s in bin b is
        sum over s', ell of W[s, b, s', ell] C_s'(ell), for s, s' in TT, EE, BB, TE (EE <-> BB: leakage); the
        EE -> BB block is the measured leakage (``eb_leakage``) times ``eb_kernel``."""
        out = self.analytic_windows()
        out[2, :, 1] += self.eb_leakage[:, None] * eb_kernel(self.lmax)[None, :]
        return out

    def analytic_windows(self) -> np.ndarray:
        """NaMaster's own bandpower windows, as ``windows`` without the measured E-to-B leakage."""
        one = np.ones(self.lmax + 1)
        for wsp in (self.w00, self.w02, self.w22):
            wsp.update_beams(one, one)
        w00, w02, w22 = (w.get_bandpower_windows()[:, : self.nbins] for w in (self.w00, self.w02, self.w22))
        out = np.zeros((4, self.nbins, 4, self.lmax + 1))
        out[0, :, 0] = w00[0, :, 0]
        out[1, :, 1], out[1, :, 2] = w22[0, :, 0], w22[0, :, 3]        # EE <- EE, BB
        out[2, :, 1], out[2, :, 2] = w22[3, :, 0], w22[3, :, 3]        # BB <- EE, BB
        out[3, :, 3] = w02[0, :, 0]
        return out * self.d_to_c[None, :, None, None]

    def expected(self, cls: np.ndarray) -> np.ndarray:
        """(4, nbins) expectation of the bandpowers for (4, >= lmax + 1) spectra TT, EE, BB, TE."""
        if self._windows is None:
            self._windows = self.windows()
        return window_theory(self._windows, np.asarray(cls)[:, : self.lmax + 1])


def eb_kernel(lmax: int) -> np.ndarray:
    """(lmax + 1,) (2 ell + 1) / 4 pi from BB_FIRST_ELL on: kernel @ C_EE is the E-mode variance the leakage is
    measured against."""
    ell = np.arange(lmax + 1)
    return np.where(ell >= BB_FIRST_ELL, (2 * ell + 1) / (4 * np.pi), 0.0)


def eb_leakage_attrs() -> dict:
    """How the windows' EE -> BB block was measured (attribute ``eb_leakage`` of ``spectra_window``)."""
    return {"method": "monte carlo: mean purified BB of pure-E Gaussian skies (fiducial CAMB lensed EE, polarisation "
                      f"pixel window) over their E-mode variance at ell >= {BB_FIRST_ELL:d}, sum (2 ell + 1) / 4 pi "
                      "C_EE(ell); per bin, times that kernel",
            "sims": EB_LEAKAGE_SIMS, "seed": EB_LEAKAGE_SEED}


def spectra_attrs(estimator: str, nside: int) -> dict:
    """Metadata of the ``spectra`` array: estimator, binning, purification, mask, deconvolution."""
    attrs = {"estimator": estimator,
             "binning": {"kind": "linear", "first_ell": 2, "width": BIN_WIDTH,
                         # NaMaster's bins assume D_ell flat within a bin (is_Dell), given as bin-mean C_ell
                         "weights": "flat in D_ell" if estimator == "namaster" else "flat in C_ell",
                         "lmax_stored": int(ell_bins(nside)[-1]) - 1,
                         "lmax_inverted": 3 * nside - 1 if estimator == "namaster" else None},
             "mask": "mask_apodized", "deconvolved": "Gaussian beams and pixel window"}
    if estimator == "namaster":
        import pymaster
        attrs.update({
            "long_name": "binned C_l (uK_CMB^2), NaMaster: mode-coupling matrix inverted per bandpower, "
                         "B modes purified, beams and pixel window deconvolved",
            "estimator_version": f"pymaster {getattr(pymaster, '__version__', 'unknown')}",
            "purify_b": True, "purify_e": False, "monopole_dipole_removed": "I, on the binary mask",
            "nan_bins": {"BB": [int(lo) for lo in ell_bins(nside)[:-1] if lo < BB_FIRST_ELL],
                         "reason": f"purified BB below ell {BB_FIRST_ELL} on a cut sky: scatter many times the "
                                   "lensing BB, and E-to-B leakage of the same order"}})
    else:
        attrs.update({
            "long_name": "binned pseudo-C_l (uK_CMB^2), mask-corrected by w2 = mean(mask^2) only (no mode-coupling "
                         "inversion, no B purification: BB biased by E-to-B leakage), beams and pixel window "
                         "deconvolved",
            "purify_b": False, "purify_e": False, "monopole_dipole_removed": "none"})
    return attrs


def sim_spectra(truth, pred, resid, fields_ok: list, apod: np.ndarray, beam_truth: float, beam_pred: float,
                nside: int, pixel_window: bool, namaster: NamasterSpectra | None = None) -> np.ndarray:
    """(kind, spectrum, ell_bin) spectra of one sim, kinds as KINDS (truth, pred, resid, cross = pred x truth):
    NaMaster's bandpowers when ``namaster`` is given, else the pseudo-fast estimator on ``apod``."""
    bins = ell_bins(nside)
    out = np.full((len(KINDS), len(SPECTRA), len(bins) - 1), np.nan)
    pw = pixel_window
    if namaster is not None:
        nm = namaster
        ft, fp, fr = (nm.fields(m, fields_ok) for m in (truth, pred, resid))
        out[0] = nm.spectra(ft, ft, beam_truth, beam_truth, pw)
        out[1] = nm.spectra(fp, fp, beam_pred, beam_pred, pw)
        out[2] = nm.spectra(fr, fr, beam_pred, beam_pred, pw)
        out[3] = nm.spectra(fp, ft, beam_pred, beam_truth, pw)
    else:
        out[0] = pseudo_spectra(truth, truth, fields_ok, apod, beam_truth, beam_truth, nside, pw, bins)
        out[1] = pseudo_spectra(pred, pred, fields_ok, apod, beam_pred, beam_pred, nside, pw, bins)
        out[2] = pseudo_spectra(resid, resid, fields_ok, apod, beam_pred, beam_pred, nside, pw, bins)
        out[3] = pseudo_spectra(pred, truth, fields_ok, apod, beam_pred, beam_truth, nside, pw, bins)
    return out


def spectrum_errors(spectra: np.ndarray, theory: np.ndarray, fields_ok: list, nside: int,
                    namaster: NamasterSpectra | None = None) -> dict:
    """{field: {"cl_err_truth": e, "cl_err_theory": e}}: mean over bins of |C(pred) - C(ref)| / C(ref) of the
    field's auto spectrum (FIELD_SPECTRUM) against the truth's and against the sim's theory ``theory``
    (spectrum, ell) as the estimator sees it: through NaMaster's bandpower windows, or its bin means."""
    first_ells = ell_bins(nside)[:-1]
    expected = namaster.expected(theory) if namaster is not None else None
    out = {}
    for f in fields_ok:
        k = FIELD_SPECTRUM[f]
        ref_theory = expected[k] if expected is not None else bin_means(theory[k], first_ells)
        out[f] = {}
        for name, ref in (("cl_err_truth", spectra[0, k]), ("cl_err_theory", ref_theory)):
            good = np.isfinite(ref) & (ref > 0) & np.isfinite(spectra[1, k])
            out[f][name] = float(np.mean(np.abs(spectra[1, k][good] - ref[good]) / ref[good])) if good.any() \
                else np.nan
    return out
