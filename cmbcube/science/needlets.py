"""Needlet and harmonic internal linear combination (NILC, HILC) on numpy arrays.

Science only: alms in, alms out; no Dask, no Zarr.  Facts followed: McCarthy &
Hill 2023 (pyilc) and the CMB-ML configuration.

Conventions: every channel's alms are scalar (T, E or B) in that channel's own
unit; ``response`` gives the CMB response of each channel in those units (ones
when every channel is in uK_CMB), so the combination comes out in uK_CMB.  The
output carries the common beam (and whatever pixel window the inputs carried).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from cmbcube.errors import InputError
from cmbcube.science import ilc_solve, sht

CMBML_PEAKS = {512: [0, 200, 715, 1025], 128: [0, 100, 200, 300, 383]}
WINDOW_FLOOR = 1e-3       # a window "ends" / a beam "carries no signal" below this
PIXEL_BLOCK = 32768       # pixels per batched covariance solve (bounds NILC's memory)


class ILCError(InputError):
    """Bad ILC parameters; the message names the parameter and what is allowed."""


# ----------------------------------------------------------------------------- windows
def cosine_windows(peaks, lmax: int) -> np.ndarray:
    """(nscale, lmax+1) cosine needlets with peaks p_0 = 0 < p_1 < ... < p_last = lmax + 1."""
    p = [int(x) for x in peaks]
    if len(p) < 2:
        raise ILCError(f"peaks {p}: need at least two")
    if p[0] != 0:
        raise ILCError(f"peaks {p}: the first peak must be 0")
    if any(b <= a for a, b in zip(p[:-1], p[1:])):
        raise ILCError(f"peaks {p}: must be strictly increasing")
    if p[-1] > lmax + 1:
        raise ILCError(f"peaks {p}: the last peak {p[-1]} is above lmax + 1 = {lmax + 1} "
                       f"(lmax = 3 nside - 1 = {lmax})")
    ell = np.arange(lmax + 1, dtype=float)
    h = np.zeros((len(p), lmax + 1))
    for j, pj in enumerate(p):
        if j > 0:
            lo = p[j - 1]
            rise = (ell >= lo) & (ell < pj)
            h[j, rise] = np.cos(np.pi / 2 * (pj - ell[rise]) / (pj - lo))
        if j < len(p) - 1:
            hi = p[j + 1]
            fall = (ell >= pj) & (ell < hi)
            h[j, fall] = np.cos(np.pi / 2 * (ell[fall] - pj) / (hi - pj))
        elif pj <= lmax:
            h[j, ell >= pj] = 1.0
    return h


def cosine_lmax(peaks, lmax: int) -> int:
    """Band limit of cosine needlets: ELLMAX = the last peak - 1, at most ``lmax``.

    CMB-ML's PyILC configuration runs the peaks to ELLMAX + 1 (ELLMAX 1024 at nside 512, 382 at 128):
    above it nothing is kept, and at nside 512 no CMB-ML beam carries signal up to 3 nside - 1."""
    return min(int(lmax), int(peaks[-1]) - 1)


def gaussian_windows(fwhms_arcmin, lmax: int) -> np.ndarray:
    """(len(fwhms) + 1, lmax+1) Gaussian needlets from strictly decreasing FWHMs."""
    f = [float(x) for x in fwhms_arcmin]
    if not f or any(b >= a for a, b in zip(f[:-1], f[1:])) or f[-1] <= 0:
        raise ILCError(f"fwhms {f}: must be positive and strictly decreasing (arcmin)")
    ell = np.arange(lmax + 1, dtype=float)
    sigma = np.radians(np.array(f) / 60) / np.sqrt(8 * np.log(2))
    g = np.exp(-ell[None] * (ell[None] + 1) * sigma[:, None] ** 2 / 2)
    h = [g[0]]
    for i in range(1, len(f)):
        h.append(np.sqrt(np.clip(g[i] ** 2 - g[i - 1] ** 2, 0, None)))
    h.append(np.sqrt(np.clip(1 - g[-1] ** 2, 0, None)))
    return np.array(h)


def check_partition(windows: np.ndarray, tol: float = 1e-6) -> None:
    """Raise ILCError unless the squared windows sum to 1 at every multipole (within ``tol``)."""
    err = np.abs((windows ** 2).sum(axis=0) - 1).max()
    if err > tol:
        raise ILCError(f"needlet windows do not satisfy sum h^2 = 1 (max error {err:.2e})")


def default_peaks(nside: int) -> list[int]:
    """CMB-ML's peaks at nside 512 and 128; elsewhere its nside-128 peaks scaled to lmax + 1 = 3 nside."""
    if nside in CMBML_PEAKS:
        return list(CMBML_PEAKS[nside])
    scaled = [int(round(p * 3 * nside / 384)) for p in CMBML_PEAKS[128][:-1]] + [3 * nside]
    out = [scaled[0]]
    for p in scaled[1:]:                # keep strictly increasing at tiny nside
        out.append(max(p, out[-1] + 1))
    return out


def top_ell(window: np.ndarray) -> int:
    """Return the last multipole where ``window`` is above WINDOW_FLOOR (0 if never)."""
    above = np.nonzero(window > WINDOW_FLOOR)[0]
    return int(above[-1]) if above.size else 0


def beam_end(transfer: np.ndarray) -> int:
    """Last multipole where a beam transfer function is still above 1e-3 (lmax if it never falls)."""
    below = np.nonzero(np.abs(transfer) < WINDOW_FLOOR)[0]
    below = below[below > 0]
    return int(below[0]) - 1 if below.size else transfer.size - 1


def scale_nside(ell_top: int, nside_out: int) -> int:
    """Smallest power of two >= the scale's top multipole, capped at the output nside."""
    n = 1
    while n < max(ell_top, 1):
        n *= 2
    return min(n, nside_out)


def covariance_fwhm(window: np.ndarray, n_channels: int, n_deproject: int, bias_tolerance: float) -> float:
    """Real-space smoothing FWHM (radians) keeping the ILC bias below the tolerance."""
    ell = np.arange(window.size)
    n_modes = float(np.sum((2 * ell + 1) * window ** 2))
    sigma = np.sqrt(2 * abs(n_deproject + 1 - n_channels) / (n_modes * bias_tolerance))
    return float(np.sqrt(8 * np.log(2)) * sigma)


# ----------------------------------------------------------------------------- weights
def ilc_weights(cov: np.ndarray, mixing: np.ndarray) -> np.ndarray:
    """Constrained ILC weights per pixel (or per bin).

    cov: (..., n, n); mixing: (n, k) with column 0 the CMB response and the other
    columns SEDs to deproject (response 0).  Returns (..., n) weights with
    w . mixing[:, 0] = 1 and w . mixing[:, 1:] = 0.
    """
    n, k = mixing.shape
    if k > n:
        raise ILCError(f"{k - 1} deprojected SEDs need at least {k} channels, have {n}")
    # Jacobi scaling (unit diagonal) before solving: channels whose variances differ by
    # 1e9 (857 GHz dust vs 143 GHz noise in uK_CMB) stay well conditioned.
    diag = np.diagonal(cov, axis1=-2, axis2=-1)
    s = 1.0 / np.sqrt(np.where(diag > 0, diag, 1.0))                                 # (..., n)
    c = cov * s[..., :, None] * s[..., None, :] + 1e-12 * np.eye(n)
    a = s[..., :, None] * mixing                                                     # (..., n, k)
    cinv_a = np.linalg.solve(c, a)                                                   # (..., n, k)
    m = np.einsum("...ik,...il->...kl", a, cinv_a)                                   # (..., k, k)
    e0 = np.zeros(k)
    e0[0] = 1.0
    coeff = np.linalg.solve(m, np.broadcast_to(e0, m.shape[:-1])[..., None])[..., 0]  # (..., k)
    w = s * np.einsum("...ik,...k->...i", cinv_a, coeff)
    response = w @ mixing
    target = np.broadcast_to(e0, response.shape)
    bad = float(np.abs(response - target).max()) if response.size else 0.0
    if not bad < 1e-6:
        raise ILCError(f"ILC response check failed (max |w.A - e0| = {bad:.2e}); ill-conditioned covariance")
    return w


# ----------------------------------------------------------------------------- NILC
@dataclasses.dataclass
class ScaleInfo:
    index: int
    nside: int
    lmax: int
    channels: list
    fwhm_deg: float


GAUSS_FLOOR = 1e-12         # a Gaussian smoothing kernel is cut where it falls below this (float noise)
SMOOTH_ITER = 0


def smoothing_lmax(fwhm_rad: float, lmax: int) -> int:
    """Multipole from which a Gaussian of ``fwhm_rad`` stays below GAUSS_FLOOR (a transform to it drops
    nothing larger), capped at ``lmax``.

    The covariance kernels are degrees wide (FWHMs of ~10-150 deg), so their transforms stop at l of
    ~10-100 instead of the scale's lmax: the same smoothing (to 1e-12) at a fraction of the cost.
    """
    sigma = fwhm_rad / np.sqrt(8 * np.log(2))
    if sigma <= 0:
        return lmax
    # exp(-l (l + 1) sigma^2 / 2) < floor  <=>  l (l + 1) > 2 ln(1/floor) / sigma^2
    cut = int(np.ceil(np.sqrt(2 * np.log(1 / GAUSS_FLOOR)) / sigma)) + 1
    return int(min(lmax, max(cut, 2)))


def _smooth(maps: np.ndarray, fwhm_rad: float, lmax: int, group: int = 8) -> np.ndarray:
    """Gaussian smoothing of a stack of maps, ``group`` maps per transform (bounds memory); the
    transforms stop where the kernel falls below GAUSS_FLOOR (``smoothing_lmax``)."""
    nside = int(round(np.sqrt(maps.shape[-1] / 12)))
    lmax = smoothing_lmax(fwhm_rad, lmax)
    ell = np.arange(lmax + 1)
    sigma = fwhm_rad / np.sqrt(8 * np.log(2))
    g = np.exp(-ell * (ell + 1) * sigma ** 2 / 2)
    out = np.empty(maps.shape)
    for start in range(0, maps.shape[0], group):
        part = maps[start:start + group]
        out[start:start + group] = sht.alm2map_scalar(sht.almxfl(sht.map2alm_scalar(part, lmax, SMOOTH_ITER), g), nside)
    return out


def nilc(alms: np.ndarray, transfers: np.ndarray, common: np.ndarray, windows: np.ndarray, nside_out: int,
         response: np.ndarray, deproject: np.ndarray | None = None, bias_tolerance: float = 1e-3,
         mask: np.ndarray | None = None, return_info: bool = False):
    """Needlet ILC of scalar alms.

    alms: (nch, nalm) each channel's T (or E, or B) alms; transfers: (nch, lmax+1)
    channel beams (times any window); common: (lmax+1,) output beam; windows:
    (nscale, lmax+1); response: (nch,) CMB response; deproject: (nch, k) SEDs
    to null; mask: optional RING map at nside_out (1 = use) for the covariance.
    Returns the output alms (nalm at the windows' lmax) in CMB units at the common beam.
    """
    check_partition(windows)
    nch = alms.shape[0]
    lmax = windows.shape[1] - 1
    alm_lmax = sht.lmax_from_size(alms.shape[1])
    if alm_lmax < lmax:
        raise ILCError(f"needlet lmax {lmax} exceeds the maps' lmax {alm_lmax}")
    alms = sht.truncate_alm(alms, lmax) if alm_lmax > lmax else alms
    alms, mixing = _to_cmb_units(alms, response, deproject)
    ends = [beam_end(t[: lmax + 1]) for t in transfers]
    out = np.zeros(sht.alm_size(lmax), dtype=np.complex128)
    infos, weight_maps = [], []
    for j, h in enumerate(windows):
        ell_top = top_ell(h)
        used = [i for i in range(nch) if ell_top <= ends[i]]
        if len(used) < mixing.shape[1]:
            raise ILCError(f"needlet scale {j} (up to l = {ell_top}) keeps {len(used)} channel(s) whose beam "
                           f"still carries signal; need at least {mixing.shape[1]}")
        nside_j = scale_nside(ell_top, nside_out)
        lmax_j = min(lmax, 3 * nside_j - 1)
        filt = np.zeros((len(used), lmax + 1))
        for row, i in enumerate(used):
            ratio = np.zeros(lmax + 1)
            good = np.arange(lmax + 1) <= ends[i]
            ratio[good] = common[: lmax + 1][good] / transfers[i][: lmax + 1][good]
            filt[row] = h * ratio
        band = min(lmax_j, int(np.nonzero(h)[0][-1]))    # the window is exactly 0 above: a shorter synthesis
        x = sht.alm2map_scalar(sht.truncate_alm(sht.almxfl(alms[used], filt), band), nside_j)
        fwhm = covariance_fwhm(h, len(used), mixing.shape[1] - 1, bias_tolerance)
        if mask is not None:
            import healpy as hp
            m = hp.ud_grade(mask.astype(float), nside_j) if nside_j != nside_out else mask.astype(float)
            sm = np.maximum(_smooth(m[None], fwhm, lmax_j)[0], 1e-6)
            mean = _smooth(x * m, fwhm, lmax_j) / sm
            d = (x - mean) * m
        else:
            sm = None
            d = x - _smooth(x, fwhm, lmax_j)
        iu = np.triu_indices(len(used))
        prods = np.empty((len(iu[0]), d.shape[1]))
        for start in range(0, len(iu[0]), 8):          # products formed and smoothed 8 at a time
            rows = slice(start, start + 8)
            prods[rows] = _smooth(d[iu[0][rows]] * d[iu[1][rows]], fwhm, lmax_j)
        if sm is not None:
            prods = prods / sm
        # per-pixel solves in blocks: memory bounded whatever the nside
        npix_j = x.shape[1]
        w = np.empty((npix_j, len(used)))
        for start in range(0, npix_j, PIXEL_BLOCK):
            stop = min(start + PIXEL_BLOCK, npix_j)
            try:
                w[start:stop] = ilc_solve.pixel_weights(prods[:, start:stop], iu, mixing[used])
            except ValueError as err:
                raise ILCError(f"ILC response check failed ({err}); ill-conditioned covariance") from None
        del prods
        y = np.einsum("pi,ip->p", w, x)
        alm_j = sht.map2alm_scalar(y[None], lmax_j, 3)[0]
        padded = np.zeros(sht.alm_size(lmax), dtype=np.complex128)
        padded_j = sht.almxfl(alm_j, h[: lmax_j + 1])
        _embed(padded, padded_j, lmax, lmax_j)
        out += padded
        infos.append(ScaleInfo(j, nside_j, lmax_j, used, float(np.degrees(fwhm))))
        if return_info:
            weight_maps.append(w)
    if return_info:
        return out, infos, weight_maps
    return out


def _to_cmb_units(alms, response, deproject, keep_low: bool = False):
    """Divide each channel by its CMB response: channels in K_CMB, uK_CMB and MJy/sr then share
    one scale (the combination is unchanged, the per-pixel solves stay well conditioned).

    The monopole and dipole are dropped (unless ``keep_low``): the CMB's are not part of the
    signal (unobservable, zero in the simulations) while foreground monopoles (CIB, dust: 1e6
    uK_CMB at 857 GHz) would otherwise leak through weights fitted to the fluctuations.
    HILC keeps them for its first bin's covariance (as PyILC does) and drops them from its output.
    """
    response = np.asarray(response, dtype=float)
    alms = alms / response[:, None]
    if not keep_low:
        alms[:, sht.ell_of_alm(sht.lmax_from_size(alms.shape[1])) < 2] = 0
    mixing = np.ones((response.size, 1))
    if deproject is not None and np.size(deproject):
        sed = np.asarray(deproject, dtype=float).reshape(response.size, -1) / response[:, None]
        mixing = np.concatenate([mixing, sed / np.abs(sed).max(axis=0)], axis=1)
    return alms, mixing


def _embed(target: np.ndarray, alm: np.ndarray, lmax: int, lmax_small: int) -> None:
    """Add alms of a smaller lmax into a healpy-layout array of a larger lmax."""
    for m in range(lmax_small + 1):
        src = int(sht.mstart(lmax_small)[m]) + m
        dst = int(sht.mstart(lmax)[m]) + m
        target[dst:dst + lmax_small + 1 - m] += alm[src:src + lmax_small + 1 - m]


# ----------------------------------------------------------------------------- HILC
def hilc_bin_edges(lmax: int, bin_width: int) -> list[int]:
    """Top-hat bin edges as PyILC draws them: 0, w, 2w, ... below lmax + 1, the last bin
    running on to lmax (so it is between w and 2w - 1 wide; one bin if lmax < 2w - 1)."""
    if bin_width < 1:
        raise ILCError(f"bin_width {bin_width}: must be >= 1")
    edges = list(range(0, lmax + 1, bin_width))
    if len(edges) > 1:
        edges[-1] = lmax + 1
    else:
        edges.append(lmax + 1)
    return edges


def hilc(alms: np.ndarray, transfers: np.ndarray, common: np.ndarray, response: np.ndarray,
         deproject: np.ndarray | None = None, bin_width: int = 50, lmax: int | None = None,
         return_weights: bool = False):
    """Harmonic ILC with top-hat multipole bins (``hilc_bin_edges``).

    Per bin b, with every channel brought to the common beam (a_i = alm_i B_common / B_i, in
    CMB units): C_ij(b) = sum over l in b and all 2l + 1 m of a_i a_j* (the full-sky
    covariance, as PyILC's sum over l of (2l + 1) C_l^ij), w = C^-1 e / (e^T C^-1 e) (or the
    constrained form with deprojection), output = sum_i w_i a_i.  The first bin's covariance
    includes the monopole and dipole, as PyILC's does: dominated by the foregrounds, those four
    modes pull the weights towards nulling them (measured: 11% lower residual at nside 128);
    the output's l < 2 are zero (not CMB signal).  A channel enters a bin only if its beam
    still carries signal (>= 1e-3) up to the bin's top multipole.
    """
    nch = alms.shape[0]
    alm_lmax = sht.lmax_from_size(alms.shape[1])
    lmax = alm_lmax if lmax is None else lmax
    edges = hilc_bin_edges(lmax, bin_width)
    alms = sht.truncate_alm(alms, lmax) if alm_lmax > lmax else alms
    alms, mixing = _to_cmb_units(alms, response, deproject, keep_low=True)
    ell = sht.ell_of_alm(lmax)
    m_zero = np.zeros(ell.size, dtype=bool)
    m_zero[: lmax + 1] = True
    ends = np.array([beam_end(t[: lmax + 1]) for t in transfers])
    out = np.zeros(sht.alm_size(lmax), dtype=np.complex128)
    weights = np.zeros((lmax + 1, nch))
    for lo, hi in zip(edges[:-1], edges[1:]):
        used = np.nonzero(ends >= hi - 1)[0]
        if len(used) < mixing.shape[1]:
            continue                            # no channel resolves this bin: left empty
        sel = (ell >= lo) & (ell < hi)
        ratio = np.array([common[ell[sel]] / transfers[i][ell[sel]] for i in used])
        a = alms[:, sel][used] * ratio          # the bin's coefficients only (not a copy of every alm)
        wgt = np.where(m_zero[sel], 1.0, 2.0)
        cov = np.einsum("im,jm,m->ij", a, a.conj(), wgt).real / max(np.sum(2 * np.arange(lo, hi) + 1), 1)
        w = ilc_weights(cov, mixing[used])
        out[sel] = w @ a
        weights[lo:hi, used] = w
    out[ell < 2] = 0
    return (out, weights) if return_weights else out


# ----------------------------------------------------------------------------- SEDs
def sed_vector(name: str, centres_ghz, units) -> np.ndarray:
    """Response of each channel (in its own unit) to a unit amplitude of a named component.

    ``centres_ghz``: frequencies (delta bandpasses) or ``instrument.Detector`` objects, whose bands the
    SEDs are integrated over as the simulator does (uK_RJ SED band-averaged, then the band's uK_RJ -> unit).
    """
    from cmbcube.science.cmb_units import cmb_response
    from cmbcube.science.instrument import Detector, band_unit_factor
    out = []
    for c, unit in zip(centres_ghz, units):
        if not isinstance(c, Detector):
            out.append(_sed_value(name, float(c), unit))
        elif name == "cmb":
            out.append(cmb_response(c, unit))          # band_unit_factor's, in closed form (no pysm3 import)
        else:
            out.append(c.band_average(lambda nu: _sed_value(name, nu, "uK_RJ")) * band_unit_factor(c, "uK_RJ", unit))
    vec = np.array(out)
    return vec if name == "cmb" else vec / np.abs(vec).max()


def _sed_value(name: str, nu: float, unit: str) -> float:
    """A named component's SED at one frequency, in ``unit`` (unnormalised): the CMB, or a registered
    foreground component's central SED (``foregrounds.COMPONENTS``)."""
    from cmbcube.science.foregrounds import COMPONENTS
    from cmbcube.science.instrument import unit_factor
    if name == "cmb":
        return unit_factor(nu, "uK_CMB", unit)
    deprojectable = [n for n, c in COMPONENTS.items() if c.sed is not None]
    if name not in deprojectable:
        raise ILCError(f"deproject {name!r}: allowed: {', '.join(deprojectable)}")
    component = COMPONENTS.get(name)
    return component.sed(nu) * unit_factor(nu, component.sed_unit, unit)
