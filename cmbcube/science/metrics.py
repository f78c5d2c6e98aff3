"""Map-domain scoring of a prediction against its truth: common beams, masks, pixel metrics, coverage.

Pure numpy/healpy: no files, no environment, no Dask, no store.  Maps are HEALPix NESTED.

Per (run, sim) truth and prediction are brought to a common beam (none, 20.6', 1 degree) from each
one's recorded beam, masked, their monopole and dipole removed (temperature), then compared on the
unmasked pixels: MAE, MSE, RMSE, NRMSE (||t - p|| / ||t||), PSNR (data range over truth and
prediction together) and R^2.  Runs with a per-pixel uncertainty also get their calibration: the
fraction of unmasked pixels with |pred - truth| <= k sigma for k = 1, 2, 3 (a Gaussian would give
68.3, 95.4, 99.7%), computed at the run's own beam (sigma belongs to the map as predicted), monopole
and dipole left in, and stored for every common beam.
"""
from __future__ import annotations

import numpy as np

from cmbcube.errors import InputError, param
from cmbcube.science import instrument, sht

BEAMS = (0.0, 20.6, 60.0)
METRICS = ("mae", "mse", "rmse", "nrmse", "psnr", "r2", "cl_err_truth", "cl_err_theory",
           "cover_1sigma", "cover_2sigma", "cover_3sigma")
COVERAGE = {"cover_1sigma": 1.0, "cover_2sigma": 2.0, "cover_3sigma": 3.0}
GAUSSIAN_COVERAGE = {"cover_1sigma": 0.6827, "cover_2sigma": 0.9545, "cover_3sigma": 0.9973}
# cl_err_*: mean over l-bins of |C_l(pred) - C_l(ref)| / C_l(ref) for the field's auto spectrum
# (I: TT, Q: EE, U: BB), against the realisation (truth, same mask) and the sim's theory spectrum;
# spectra are beam- and window-deconvolved, so the value is the same for every common beam
# (computed by cmbcube.science.spectra.spectrum_errors).
# the apodised analysis mask: a C2 (cosine) taper over this angular scale inside the binary mask
# (at least 4 pixels); B-mode purification needs a mask whose first derivatives vanish at its edge
APODIZATION = "C2"
APODIZATION_DEG = 5.0
MASK_DETECTORS = (30, 353)      # the foreground tracers of the default mask (GHz)


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


# ----------------------------------------------------------------------------- masks
def foreground_tracer(obs_uk: dict, cmb_uk: np.ndarray, first_obs: np.ndarray) -> np.ndarray:
    """Where the foregrounds are bright, from one sim: the largest over ``obs_uk`` ({GHz: intensity map in
    uK_CMB}, the MASK_DETECTORS the store has in a CMB unit) of |obs - cmb| / its median; when that is
    empty or zero everywhere, |first_obs - its median| (the store's first detector, as stored)."""
    fg = np.zeros(np.asarray(first_obs).size)
    for obs in obs_uk.values():
        resid = np.abs(obs - cmb_uk)
        fg = np.maximum(fg, resid / np.median(resid))
    if not fg.any():
        fg = np.abs(first_obs - np.median(first_obs))
    return fg


def galactic_mask(foreground_nest: np.ndarray, f_sky: float, smooth_deg: float = 5.0) -> np.ndarray:
    """Keep the fraction ``f_sky`` of the sky where the (smoothed) foreground intensity is lowest."""
    import healpy as hp
    if not 0 < f_sky <= 1:
        raise InputError(f"{param('f_sky')} {f_sky}: must be in (0, 1]")
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


def mask_attrs(source: str, mask: np.ndarray, scale_arcmin: float) -> dict:
    """Metadata of the binary analysis mask (its apodised copy adds its own long_name)."""
    return {"source": source, "f_sky": float(mask.mean()), "healpix_order": "nested",
            "long_name": "analysis mask (1 = used)", "apodization": APODIZATION, "apodization_arcmin": scale_arcmin}


# ----------------------------------------------------------------------------- maps
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


def map_metrics(truth: np.ndarray, pred: np.ndarray, fields_ok: list, fields: list, mask: np.ndarray,
                beam_truth: float, beam_pred: float, nside: int, sigma: np.ndarray | None = None) -> np.ndarray:
    """(beam, field, metric) scores of one sim: pixel metrics at each common beam of BEAMS (I: monopole and
    dipole removed on the mask first) and, given the run's per-pixel ``sigma``, its coverage at the run's own
    beam (the same for every beam).  ``truth``, ``pred``, ``sigma``: (len(fields_ok), pixel) in uK_CMB;
    ``fields``: every field of the store (rows of fields the run did not predict, and metrics not computed
    here, cl_err_*, stay NaN)."""
    out = np.full((len(BEAMS), len(fields), len(METRICS)), np.nan)
    for b, beam in enumerate(BEAMS):
        t = to_beam(truth, fields_ok, beam_truth, beam, nside)
        p = to_beam(pred, fields_ok, beam_pred, beam, nside)
        for k, f in enumerate(fields_ok):
            tk, pk = t[k], p[k]
            if f == "I":
                tk, pk = remove_monopole_dipole(tk, mask), remove_monopole_dipole(pk, mask)
            values = pixel_metrics(tk[mask], pk[mask])
            out[b, fields.index(f)] = [values.get(m, np.nan) for m in METRICS]
    if sigma is not None:
        truth_at_pred = to_beam(truth, fields_ok, beam_truth, beam_pred, nside)
        for k, f in enumerate(fields_ok):
            if np.isfinite(sigma[k]).all():
                for name, value in coverage(truth_at_pred[k][mask], pred[k][mask], sigma[k][mask]).items():
                    out[:, fields.index(f), METRICS.index(name)] = value
    return out
