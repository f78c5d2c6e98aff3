"""The analyze stage: score every run the same way, lazily from the cube, with Dask over sims.

Per (run, sim): truth and prediction are brought to a common beam (none, 20.6',
1 degree) from each one's recorded beam, masked, their monopole and dipole
removed (temperature), then compared on the unmasked pixels: MAE, MSE, RMSE,
NRMSE (||t - p|| / ||t||), PSNR (data range over truth and prediction together)
and R^2.  Power spectra (TT, EE, BB, TE) of truth, prediction, residual and the
prediction x truth cross spectrum on the apodised mask, binned (width 10 from ell 2
to 2 nside), beams and pixel window deconvolved, by one of two estimators:
``namaster`` (default; NaMaster, PyPI ``pymaster``): mode-coupling matrix inverted
per bandpower, B modes purified, T monopole and dipole removed on the mask first;
``pseudo-fast``: the naive pseudo-C_l divided by w2 = mean(mask^2), about 10x
cheaper but E-to-B leakage makes its BB worthless on a cut sky (truth BB hundreds
of times theory at ell < 12).  The estimator is recorded in the spectra's metadata.
Runs with a per-pixel uncertainty (``pred_sigma``, Petroff's network) also get
their calibration: the fraction of unmasked pixels with |pred - truth| <= k sigma
for k = 1, 2, 3 (a Gaussian would give 68.3, 95.4, 99.7%), computed at the run's
own beam (sigma belongs to the map as predicted), monopole and dipole left in,
and stored for every common beam like the spectrum metrics.
Results go to the cube: ``metrics`` (run, split, sim, beam, field, metric),
``spectra`` (run, split, sim, kind, spectrum, ell_bin), ``analysis_done``, and
the masks ``mask`` / ``mask_apodized`` (pixel).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time

import numpy as np

from cmbcube import cube
from cmbcube.science import instrument, pixwin, sht
from cmbcube.recipe import SPLITS
from cmbcube.errors import InputError

log = logging.getLogger("cmbcube")

BEAMS = (0.0, 20.6, 60.0)
METRICS = ("mae", "mse", "rmse", "nrmse", "psnr", "r2", "cl_err_truth", "cl_err_theory",
           "cover_1sigma", "cover_2sigma", "cover_3sigma")
COVERAGE = {"cover_1sigma": 1.0, "cover_2sigma": 2.0, "cover_3sigma": 3.0}
GAUSSIAN_COVERAGE = {"cover_1sigma": 0.6827, "cover_2sigma": 0.9545, "cover_3sigma": 0.9973}
# cl_err_*: mean over l-bins of |C_l(pred) - C_l(ref)| / C_l(ref) for the field's auto spectrum
# (I: TT, Q: EE, U: BB), against the realisation (truth, same mask) and the sim's theory spectrum;
# spectra are beam- and window-deconvolved, so the value is the same for every common beam.
SPECTRA = ("TT", "EE", "BB", "TE")
KINDS = ("truth", "pred", "resid", "cross")
BIN_WIDTH = 10
ESTIMATORS = ("namaster", "pseudo-fast")
# the apodised analysis mask: a C2 (cosine) taper over this angular scale inside the binary mask
# (at least 4 pixels); B-mode purification needs a mask whose first derivatives vanish at its edge
APODIZATION = "C2"
APODIZATION_DEG = 5.0
NAMASTER_MISSING = ("the namaster spectrum estimator needs NaMaster (pymaster), which is not importable: install it "
                    "with `make pymaster` or `bash tools/install_pymaster.sh PYTHON` (apt-get libgsl-dev libfftw3-dev "
                    "libcfitsio-dev libchealpix-dev, then a source build), or pass --estimator pseudo-fast "
                    "(naive pseudo-C_l: no mode-coupling inversion, BB dominated by E-to-B leakage)")


# ----------------------------------------------------------------------------- science
def pixel_metrics(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Metrics of one map pair (1-D arrays of the unmasked pixels)."""
    t = np.asarray(truth, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    diff = p - t
    mse = float(np.mean(diff ** 2))
    data_range = float(max(t.max(), p.max()) - min(t.min(), p.min()))
    norm_t = float(np.linalg.norm(t))
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    return {
        "mae": float(np.mean(np.abs(diff))),
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "nrmse": float(np.linalg.norm(diff) / norm_t) if norm_t > 0 else float("inf"),
        # a perfect prediction: infinite PSNR, reported as +inf (tables print it as such)
        "psnr": float(10 * np.log10(data_range ** 2 / mse)) if mse > 0 and data_range > 0 else float("inf"),
        "r2": float(1 - np.sum(diff ** 2) / ss_tot) if ss_tot > 0 else float("nan"),
    }


def coverage(truth: np.ndarray, pred: np.ndarray, sigma: np.ndarray) -> dict[str, float]:
    """Fraction of pixels with |pred - truth| <= k sigma, k = 1, 2, 3 (1-D arrays of the unmasked pixels)."""
    err = np.abs(np.asarray(pred, dtype=np.float64) - np.asarray(truth, dtype=np.float64))
    sig = np.asarray(sigma, dtype=np.float64)
    return {name: float(np.mean(err <= k * sig)) for name, k in COVERAGE.items()}


def galactic_mask(foreground_nest: np.ndarray, f_sky: float, smooth_deg: float = 5.0) -> np.ndarray:
    """Keep the fraction ``f_sky`` of the sky where the (smoothed) foreground intensity is lowest."""
    import healpy as hp
    if not 0 < f_sky <= 1:
        raise InputError(f"--f-sky {f_sky}: must be in (0, 1]")
    ring = hp.reorder(np.abs(foreground_nest), n2r=True)
    smooth = hp.smoothing(ring, fwhm=np.radians(smooth_deg), iter=1)
    keep = smooth <= np.quantile(smooth, f_sky)
    return hp.reorder(keep.astype(np.float64), r2n=True) > 0.5


def apodize(mask_nest: np.ndarray, scale_arcmin: float) -> np.ndarray:
    """C2 taper inside a binary NESTED mask: 0 outside it, (1 - cos(pi d / scale)) / 2 at angular distance d
    from the nearest masked pixel centre (d < scale), 1 beyond; its derivative vanishes at both ends."""
    import healpy as hp
    from scipy.spatial import cKDTree
    keep = np.asarray(mask_nest) > 0
    out = keep.astype(np.float64)
    if keep.all() or not keep.any():
        return out
    nside = hp.npix2nside(keep.size)
    vec = np.array(hp.pix2vec(nside, np.arange(keep.size), nest=True)).T
    chord, _ = cKDTree(vec[~keep]).query(vec[keep])
    dist = 2 * np.arcsin(np.clip(chord / 2, 0, 1))
    x = np.clip(dist / np.radians(scale_arcmin / 60.0), 0, 1)
    out[keep] = 0.5 * (1 - np.cos(np.pi * x))
    return out


def apodization_arcmin(nside: int) -> float:
    """Scale of the analysis mask's taper: APODIZATION_DEG, or 4 pixels where that is wider."""
    import healpy as hp
    return max(APODIZATION_DEG * 60.0, 4 * hp.nside2resol(nside, arcmin=True))


def remove_monopole_dipole(map_nest: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Least-squares fit of 1, x, y, z on the unmasked pixels, subtracted everywhere."""
    import healpy as hp
    nside = hp.npix2nside(map_nest.size)
    vec = np.array(hp.pix2vec(nside, np.arange(map_nest.size), nest=True))
    design = np.vstack([np.ones(map_nest.size), vec]).T
    coef, *_ = np.linalg.lstsq(design[mask], map_nest[mask], rcond=None)
    return map_nest - design @ coef


def to_beam(maps_nest: np.ndarray, fields: list, beam_from: float, beam_to: float, nside: int) -> np.ndarray:
    """Re-beam (field, pixel) NESTED maps from one Gaussian FWHM to another (harmonic ratio, capped)."""
    import healpy as hp
    if beam_from == beam_to:
        return maps_nest.astype(np.float64)
    lmax = 3 * nside - 1
    ratio = instrument.gaussian_beam(beam_to, lmax) / np.maximum(instrument.gaussian_beam(beam_from, lmax), 1e-3)
    n2r = hp.nest2ring(nside, np.arange(12 * nside * nside))
    out = np.empty(maps_nest.shape, dtype=np.float64)
    if "Q" in fields and "U" in fields:
        iqu = np.zeros((3, 12 * nside * nside))
        for k, f in enumerate("IQU"):
            if f in fields:
                iqu[k] = maps_nest[fields.index(f)]
        ring = np.empty_like(iqu)
        ring[:, n2r] = iqu
        smoothed = sht.alm2map(sht.almxfl(sht.map2alm(ring, lmax, 3), ratio), nside)[:, n2r]
        for k, f in enumerate(fields):
            out[k] = smoothed["IQU".index(f)]
        return out
    for k in range(len(fields)):
        ring = np.empty(12 * nside * nside)
        ring[n2r] = maps_nest[k]
        out[k] = sht.alm2map(sht.almxfl(sht.map2alm(ring, lmax, 3), ratio[0]), nside)[n2r]
    return out


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
    """The pymaster module, or a ValueError saying how to install it (the CLI exits 2)."""
    try:
        import pymaster
    except ImportError as err:
        raise InputError(f"--estimator namaster: {NAMASTER_MISSING} ({err})") from None
    return pymaster


class NamasterSpectra:
    """NaMaster bandpowers on one apodised mask: the unit-beam mode-coupling matrices (TT; TE, TB; EE, EB,
    BE, BB with B purified) are computed once, then per pair of maps only their beams and pixel
    window are swapped in (``update_beams``: re-binning and inverting, not recoupling).

    Bandpowers: bins of BIN_WIDTH from ell 2 up to 3 nside - 1 (so that the inversion sees every
    multipole the maps hold); the first ``nbins`` (up to 2 nside) are returned.  The inversion assumes
    D_ell = ell (ell + 1) C_ell / 2 pi flat within a bin (far closer to the truth at low ell than a flat
    C_ell: with flat-C_ell bins the ell 12-21 EE bandpower's expectation is -1.7x the bin's mean C_ell),
    and each D_ell bandpower is returned as a C_ell, times the bin mean of 2 pi / (ell (ell + 1)): the
    bin-mean C_ell if D_ell is flat across it.  Exact expectation: ``windows() @ C_ell``.
    """

    def __init__(self, nside: int, apod_nest: np.ndarray, mask_nest: np.ndarray, nbins: int,
                 cache_dir: str | None = None):
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
        # the coupling matrices cost ~lmax^3 (3.1 s at nside 128 on a quiet core, 11 s under load, minutes at 512): computed once
        # per mask and shared through files (cache_dir) by the driver and every worker
        names = ("w00", "w02", "w22")
        paths = [os.path.join(cache_dir, f"{n}.fits") for n in names] if cache_dir else []
        if paths and all(os.path.exists(p) for p in paths):
            self.w00, self.w02, self.w22 = (nmt.NmtWorkspace.from_file(p) for p in paths)
            return
        f0 = nmt.NmtField(self.weight, None, spin=0, lmax=self.lmax)
        f2 = nmt.NmtField(self.weight, None, spin=2, purify_b=True, lmax=self.lmax)
        self.w00 = nmt.NmtWorkspace.from_fields(f0, f0, self.bins)
        self.w02 = nmt.NmtWorkspace.from_fields(f0, f2, self.bins)
        self.w22 = nmt.NmtWorkspace.from_fields(f2, f2, self.bins)
        if paths:
            os.makedirs(cache_dir, exist_ok=True)
            for wsp, path in zip((self.w00, self.w02, self.w22), paths):
                tmp = f"{path}.{os.getpid()}.tmp.fits"
                wsp.write_to(tmp)
                os.replace(tmp, path)            # readers see whole files only

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
            out[1], out[2] = cl[0], cl[3]
        if "T" in fa and "P" in fb:
            out[3] = decoupled(self.w02, fa["T"], fb["P"], ba[0], bb[1])[0]  # TE, TB
        return out

    def windows(self) -> np.ndarray:
        """(4, nbins, 4, lmax + 1) bandpower windows W (unit beams): the expectation of spectrum s in bin b is
        sum over s', ell of W[s, b, s', ell] C_s'(ell), for s, s' in TT, EE, BB, TE (EE <-> BB: leakage)."""
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
        if getattr(self, "_windows", None) is None:
            self._windows = self.windows()
        return np.einsum("sbtl,tl->sb", self._windows, np.asarray(cls)[:, : self.lmax + 1])


_NAMASTER_CACHE: dict = {}


def namaster_for(nside: int, apod_nest: np.ndarray, mask_nest: np.ndarray, nbins: int,
                 store: str | None = None) -> NamasterSpectra:
    """One NamasterSpectra per (mask, nside) and process: workers reuse the coupling matrices across sims,
    and, for a store on a local disk, share them through ``<store>.namaster/<key>/`` (computed once)."""
    import hashlib
    digest = hashlib.sha1()
    for part in (np.ascontiguousarray(apod_nest, dtype=np.float64), np.ascontiguousarray(mask_nest, dtype=bool)):
        digest.update(part.tobytes())
    nmt = require_namaster()
    digest.update(f"{nside} {nbins} {BIN_WIDTH} Dell purify_b {getattr(nmt, '__version__', '')}".encode())
    key = digest.hexdigest()[:16]
    cache = os.path.join(str(store).rstrip("/") + ".namaster", key) if store and os.path.isdir(store) else None
    if (key, cache) not in _NAMASTER_CACHE:
        _NAMASTER_CACHE.clear()
        _NAMASTER_CACHE[(key, cache)] = NamasterSpectra(nside, apod_nest, mask_nest, nbins, cache)
    return _NAMASTER_CACHE[(key, cache)]


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
            "purify_b": True, "purify_e": False, "monopole_dipole_removed": "I, on the binary mask"})
    else:
        attrs.update({
            "long_name": "binned pseudo-C_l (uK_CMB^2), mask-corrected by w2 = mean(mask^2) only (no mode-coupling "
                         "inversion, no B purification: BB biased by E-to-B leakage), beams and pixel window "
                         "deconvolved",
            "purify_b": False, "purify_e": False, "monopole_dipole_removed": "none"})
    return attrs


def ell_bins(nside: int, width: int = BIN_WIDTH) -> np.ndarray:
    lmax = 2 * nside                # as CMB-ML: spectra to 2 nside
    return np.arange(2, lmax + 2, width)


# ----------------------------------------------------------------------------- stage
@dataclasses.dataclass
class AnalysisReport:
    written: list
    already_done: int
    seconds: float
    failed: list = dataclasses.field(default_factory=list)


def build_masks(store: str, f_sky: float, mask_file: str | None = None) -> None:
    """Driver-side: the analysis mask (binary) and its apodised version, stored once per f_sky."""
    import healpy as hp
    group = cube.read_group(store)      # damaged finished units raise
    nside = int(group.attrs["nside"])
    existing = group["mask"].attrs.asdict() if "mask" in set(group.array_keys()) else None
    source = mask_file or f"foreground f_sky={f_sky}"
    scale = apodization_arcmin(nside)
    if existing and existing.get("source") == source and (
            (existing.get("apodization") == APODIZATION and existing.get("apodization_arcmin") == scale)
            or stored_estimator(group) is not None):     # analysed sims keep the taper they were analysed on
        return
    if mask_file:
        m = hp.read_map(mask_file, nest=True)
        mask = hp.ud_grade(m, nside, order_in="NESTED", order_out="NESTED") > 0.5
    else:
        dets = [int(d) for d in group["detector"][...]]
        done = np.nonzero(np.asarray(group["sim_done"][...]).ravel() == 1)[0]
        if not done.size:
            raise cube.StoreError(f"{store}: no finished sims to build a mask from")
        nsim = group["sim_done"].shape[1]
        isplit, isim = divmod(int(done[0]), nsim)
        fg = np.zeros(12 * nside * nside)
        units = [str(u) for u in group["unit"][...]]
        for freq in (30, 353):
            if freq in dets and units[dets.index(freq)] in ("uK_CMB", "K_CMB"):
                # both maps in uK_CMB before subtracting (stores may hold K_CMB)
                to_uk = instrument.to_uk_cmb(units[dets.index(freq)])
                obs = np.asarray(group["obs"][isplit, isim, dets.index(freq), 0], dtype=np.float64) * to_uk
                cmb = np.asarray(group["cmb"][isplit, isim, 0], dtype=np.float64)
                resid = np.abs(obs - cmb * instrument.to_uk_cmb(str(group.attrs["cmb_unit"])))
                fg = np.maximum(fg, resid / np.median(resid))
        if not fg.any():
            obs = np.asarray(group["obs"][isplit, isim, 0, 0], dtype=np.float64)
            fg = np.abs(obs - np.median(obs))
        mask = galactic_mask(fg, f_sky)
    apod = apodize(mask, scale)
    attrs = {"source": source, "f_sky": float(mask.mean()), "healpix_order": "nested",
             "long_name": "analysis mask (1 = used)", "apodization": APODIZATION, "apodization_arcmin": scale}
    cube.create_array(store, "mask", (12 * nside * nside,), ("pixel",), dtype="u1", fill_value=0,
                      attrs=attrs, overwrite=True)[...] = mask.astype(np.uint8)
    cube.create_array(store, "mask_apodized", (12 * nside * nside,), ("pixel",), dtype="f4", fill_value=0.0,
                      attrs={**attrs, "long_name": "apodised analysis mask for spectra"}, overwrite=True)[...] = apod
    cube.consolidate(store)


def _ensure_arrays(store: str, nbins: int, estimator: str = "namaster") -> None:
    import zarr
    group = zarr.open_group(store, mode="r")
    nrun = group["run"].shape[0]
    nsplit, nsim = group["sim_done"].shape
    nfield = group["field"].shape[0]
    cube.create_array(store, "beam_fwhm", (len(BEAMS),), ("beam",), dtype="f8", fill_value=np.nan)[...] = BEAMS
    names = ("metric", "kind", "spectrum")
    existing = set(group.array_keys())
    if "metric" in existing and [str(m) for m in group["metric"][...]] != list(METRICS):
        _upgrade_metrics(store, [str(m) for m in group["metric"][...]])
        existing = set(zarr.open_group(store, mode="r").array_keys())
    for name, values in zip(names, (METRICS, KINDS, SPECTRA)):
        if name not in existing:
            arr = cube.create_array(store, name, (len(values),), (name,), dtype=str, fill_value="")
            arr[...] = np.array(values, dtype=object)
    bins = cube.create_array(store, "ell_bin", (nbins,), ("ell_bin",), dtype="i8", fill_value=-1,
                             attrs={"long_name": "first multipole of the bin", "bin_width": BIN_WIDTH})
    bins[...] = ell_bins(int(group.attrs["nside"]))[:-1]
    cube.create_array(store, "metrics", (nrun, nsplit, nsim, len(BEAMS), nfield, len(METRICS)),
                      ("run", "split", "sim", "beam", "field", "metric"), dtype="f8",
                      chunks=(1, 1, 1, len(BEAMS), nfield, len(METRICS)),
                      attrs={"long_name": "pixel metrics on unmasked pixels after common beam, mask and "
                                          "monopole/dipole removal (beam coordinate: beam_fwhm arcmin)"})
    spectra = cube.create_array(store, "spectra", (nrun, nsplit, nsim, len(KINDS), len(SPECTRA), nbins),
                                ("run", "split", "sim", "kind", "spectrum", "ell_bin"), dtype="f8",
                                chunks=(1, 1, 1, len(KINDS), len(SPECTRA), nbins),
                                attrs=spectra_attrs(estimator, int(group.attrs["nside"])))
    if spectra.attrs.get("estimator") != estimator:     # run() checked that no sim holds another estimator's
        spectra.attrs.update(spectra_attrs(estimator, int(group.attrs["nside"])))
    cube.create_array(store, "analysis_done", (nrun, nsplit, nsim), ("run", "split", "sim"), dtype="u1",
                      chunks=(1, 1, 1), fill_value=0)
    cube.consolidate(store)


def _store_windows(store: str, nside: int) -> None:
    """Driver-side: NaMaster's bandpower windows for the store's mask (``spectra_window``), once per mask."""
    import zarr
    group = zarr.open_group(store, mode="r")
    apod = np.asarray(group["mask_apodized"][...], dtype=np.float64)
    mask = np.asarray(group["mask"][...]) > 0
    source = dict(group["mask"].attrs)
    if "spectra_window" in set(group.array_keys()) and group["spectra_window"].attrs.get("mask") == source:
        return
    nbins = len(ell_bins(nside)) - 1
    windows = namaster_for(nside, apod, mask, nbins, store).windows()     # also writes the shared matrices
    cube.create_array(store, "spectra_window", windows.shape, ("spectrum", "ell_bin", "spectrum_in", "ell"),
                      dtype="f8", fill_value=np.nan, overwrite=True,
                      attrs={"long_name": "NaMaster bandpower windows (unit beams): expectation of spectra[..., s, b] "
                                          "= sum over spectrum_in s', ell of W[s, b, s', ell] C_s'(ell); spectrum_in "
                                          "in the order of spectrum (TT, EE, BB, TE)", "mask": source})[...] = windows
    cube.consolidate(store)


def _upgrade_metrics(store: str, old: list) -> None:
    """A store analysed with an older metric list: extend it in place when the old list is a prefix of
    METRICS (new metrics read NaN for pairs analysed before), else drop the old metrics and analysis flags."""
    import zarr
    group = zarr.open_group(store, mode="r+")
    if old == list(METRICS[: len(old)]) and "metrics" in set(group.array_keys()):
        arr = group["metrics"]
        arr.resize(arr.shape[:-1] + (len(METRICS),))
        coord = group["metric"]
        coord.resize((len(METRICS),))
        coord[...] = np.array(METRICS, dtype=object)
    else:
        for key in ("metrics", "metric", "analysis_done"):
            if key in set(group.array_keys()):
                del group[key]
    cube.consolidate(store)


def analyse_one(store: str, run: int, split: str, sim: int, estimator: str = "namaster") -> None:
    """Task body: metrics and spectra of one (run, sim); written as one chunk each, flag last."""
    group = cube.read_group(store)      # damaged finished units raise
    nside = int(group.attrs["nside"])
    fields = [str(f) for f in group["field"][...]]
    isplit = SPLITS.index(split)
    scale = instrument.to_uk_cmb(str(group.attrs["cmb_unit"]))
    truth = np.asarray(group["cmb"][isplit, sim], dtype=np.float64) * scale
    pred = np.asarray(group["pred"][run, isplit, sim], dtype=np.float64) * scale
    ok = [k for k in range(len(fields)) if np.isfinite(pred[k]).all()]
    fields_ok = [fields[k] for k in ok]
    truth, pred = truth[ok], pred[ok]
    mask = np.asarray(group["mask"][...]) > 0
    apod = np.asarray(group["mask_apodized"][...], dtype=np.float64)
    beam_truth = cube.truth_beam(group)
    beam_pred = cube.run_beam(group, run)
    metrics = np.full((len(BEAMS), len(fields), len(METRICS)), np.nan)
    for b, beam in enumerate(BEAMS):
        t = to_beam(truth, fields_ok, beam_truth, beam, nside)
        p = to_beam(pred, fields_ok, beam_pred, beam, nside)
        for k, f in enumerate(fields_ok):
            tk, pk = t[k], p[k]
            if f == "I":
                tk, pk = remove_monopole_dipole(tk, mask), remove_monopole_dipole(pk, mask)
            values = pixel_metrics(tk[mask], pk[mask])
            metrics[b, fields.index(f)] = [values.get(m, np.nan) for m in METRICS]
    if "pred_sigma" in set(group.array_keys()) and run < group["pred_sigma"].shape[0]:
        sigma = np.asarray(group["pred_sigma"][run, isplit, sim], dtype=np.float64)[ok] * scale
        truth_at_pred = to_beam(truth, fields_ok, beam_truth, beam_pred, nside)
        for k, f in enumerate(fields_ok):
            if np.isfinite(sigma[k]).all():
                for name, value in coverage(truth_at_pred[k][mask], pred[k][mask], sigma[k][mask]).items():
                    metrics[:, fields.index(f), METRICS.index(name)] = value
    bins = ell_bins(nside)
    pw = bool(group.attrs.get("pixel_window_applied", False))
    spectra = np.full((len(KINDS), len(SPECTRA), len(bins) - 1), np.nan)
    resid = pred - to_beam(truth, fields_ok, beam_truth, beam_pred, nside)
    if estimator == "namaster":
        nm = namaster_for(nside, apod, mask, len(bins) - 1, store)
        ft, fp, fr = (nm.fields(m, fields_ok) for m in (truth, pred, resid))
        spectra[0] = nm.spectra(ft, ft, beam_truth, beam_truth, pw)
        spectra[1] = nm.spectra(fp, fp, beam_pred, beam_pred, pw)
        spectra[2] = nm.spectra(fr, fr, beam_pred, beam_pred, pw)
        spectra[3] = nm.spectra(fp, ft, beam_pred, beam_truth, pw)
    else:
        spectra[0] = pseudo_spectra(truth, truth, fields_ok, apod, beam_truth, beam_truth, nside, pw, bins)
        spectra[1] = pseudo_spectra(pred, pred, fields_ok, apod, beam_pred, beam_pred, nside, pw, bins)
        spectra[2] = pseudo_spectra(resid, resid, fields_ok, apod, beam_pred, beam_pred, nside, pw, bins)
        spectra[3] = pseudo_spectra(pred, truth, fields_ok, apod, beam_pred, beam_truth, nside, pw, bins)
    theory = np.asarray(group["cl_theory"][isplit, sim], dtype=np.float64)
    # the theory as each estimator sees it: NaMaster's bandpower windows, or the bin mean
    expected = nm.expected(theory) if estimator == "namaster" else None
    for f in fields_ok:
        k = {"I": 0, "Q": 1, "U": 2}[f]
        ref_theory = expected[k] if expected is not None else \
            np.array([theory[k, lo:hi].mean() for lo, hi in zip(bins[:-1], bins[1:])])
        for name, ref in (("cl_err_truth", spectra[0, k]), ("cl_err_theory", ref_theory)):
            good = np.isfinite(ref) & (ref > 0) & np.isfinite(spectra[1, k])
            value = float(np.mean(np.abs(spectra[1, k][good] - ref[good]) / ref[good])) if good.any() else np.nan
            metrics[:, fields.index(f), METRICS.index(name)] = value
    from cmbcube.drills import hold
    hold("ANALYZE", run, split, sim)           # fault drills only (cmbcube.drills)
    import zarr
    out = zarr.open_group(store, mode="r+")
    out["metrics"][run, isplit, sim] = metrics
    out["spectra"][run, isplit, sim] = spectra
    out["analysis_done"][run, isplit, sim] = 1


def stored_estimator(group) -> str | None:
    """The estimator of the spectra a store already holds (stores analysed before NaMaster: pseudo-fast),
    or None when no (run, sim) has been analysed."""
    keys = set(group.array_keys())
    if "spectra" not in keys or "analysis_done" not in keys or not np.any(np.asarray(group["analysis_done"][...])):
        return None
    return str(group["spectra"].attrs.get("estimator", "pseudo-fast"))


def run(store: str, runs="all", splits=("test",), f_sky: float = 0.8, mask_file: str | None = None,
        scheduler=None, scheduler_file=None, workers=None, progress=None,
        estimator: str = "namaster", force_size: bool = False) -> AnalysisReport:
    """Analyse every predicted (run, sim) not analysed yet.  ``estimator``: ``namaster`` (default: NaMaster
    bandpowers, refused with a ValueError naming how to install pymaster when it is missing) or
    ``pseudo-fast``; one store holds one estimator's spectra (checked before anything is written)."""
    import zarr
    from cmbcube.stages.cluster import client_for, collector, run_tasks
    if estimator not in ESTIMATORS:
        raise InputError(f"--estimator {estimator!r}: allowed: {', '.join(ESTIMATORS)}")
    if estimator == "namaster":
        require_namaster()
    group = zarr.open_group(store, mode="r")
    if "run" not in set(group.array_keys()):
        raise cube.StoreError(f"{store}: no predictions to analyse yet (run cmbcube ilc or cmbcube predict)")
    names = [str(r) for r in group["run"][...]]
    wanted = names if runs in ("all", None) else list(runs)
    unknown = [r for r in wanted if r not in names]
    if unknown:
        raise InputError(f"--runs {unknown}: not in the cube; allowed: all, {', '.join(names)}")
    previous = stored_estimator(group)
    if previous is not None and previous != estimator:
        raise InputError(f"--estimator {estimator}: {store} holds spectra from the {previous} estimator; analyse "
                         f"with --estimator {previous}, or drop the analysis first (cmbcube drop {store} analysis)")
    build_masks(store, f_sky, mask_file)
    nside = int(group.attrs["nside"])
    _ensure_arrays(store, len(ell_bins(nside)) - 1, estimator)
    if estimator == "namaster":
        _store_windows(store, nside)
    group = zarr.open_group(store, mode="r")
    pred_done = np.asarray(group["pred_done"][...]) == 1
    done = np.asarray(group["analysis_done"][...]) == 1
    todo = [(names.index(r), s, int(k)) for r in wanted for s in splits
            for k in np.nonzero(pred_done[names.index(r), SPLITS.index(s)] & ~done[names.index(r), SPLITS.index(s)])[0]]
    report = AnalysisReport([], int(sum(done[names.index(r)].sum() for r in wanted)), 0.0)
    if not todo:
        return report
    from cmbcube.stages import limits
    per_sim = group["metrics"].nbytes // max(group["metrics"].shape[0] * group["metrics"].shape[1] *
                                             group["metrics"].shape[2], 1) + \
        group["spectra"].nbytes // max(group["spectra"].shape[0] * group["spectra"].shape[1] * group["spectra"].shape[2], 1)
    limits.check_growth(store, "analyze", len(todo) * (per_sim + 64), 3 * len(todo),
                        limits.PROCESS_BASE + 12 * nside ** 2 * 8 * 40, cube.store_recipe(store)["cluster"],
                        scheduler, scheduler_file, workers, force_size)
    t0 = time.perf_counter()
    recipe = cube.store_recipe(store)
    from cmbcube.progress import bar as progress_bar
    bar = progress_bar(len(todo), "analyze", progress=progress, items=[(names[r], s, k) for r, s, k in todo],
                       where=f"{store} metrics, spectra")
    try:
        done = collector(report, bar)

        with client_for(recipe["cluster"], scheduler, scheduler_file, workers) as client:
            run_tasks(client, functools.partial(analyse_one, estimator=estimator), (store,), todo, "analyze", done)
    finally:
        bar.close()
        cube.consolidate(store)
        report.seconds = time.perf_counter() - t0
    return report
