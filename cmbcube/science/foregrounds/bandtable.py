"""Band-integrated emission of spatially varying SEDs through tabulated SED factors.

A component whose SED varies across the sky (the dust's modified black body with maps of beta and T,
the synchrotron's and radio sources' power laws with maps of beta) has, in each detector's band,

    emission(p) = reference(p) x g(beta(p), T(p)),   g = sum_i w_i f(nu_i; beta, T)

with f the SED factor at the band's quadrature frequencies.  Evaluated pixel by pixel, g costs
two transcendental functions per frequency per pixel (90 per pixel for 9 top-hat bands of 5 nodes):
most of a sim's foreground cost at nside 512.  But g is a smooth function of one or two parameters,
whatever the pixel, so it is tabulated once per sim and detector on a fine grid over the range of
parameters that sim's maps actually take, and read by linear (one parameter) or bilinear (two)
interpolation in one fused pass that also multiplies the reference maps and adds into the
detector's running sum: no full-sky temporaries.  Pixels whose reference maps are all zero (away
from radio sources) are skipped.

Accuracy: the interpolation error of a grid of step h is at most h^2 / 8 x |d2g/dx2| per axis.
With :data:`GRID_1D` and :data:`GRID_2D` nodes over a sim's range it is below 2e-7 of the emission in
every pixel of the default sky, the largest at 30 GHz where the dust is faint (measured against the
pixel-by-pixel evaluation, and tests/test_bandtable.py against pysm3's own ``get_emission`` over the
same band).  In the observed maps (benchmarks/emission_accuracy.py) the difference from the
pixel-by-pixel path is at most 1.4% of a pixel's noise rms, in the brightest pixel at 857 GHz
(signal-to-noise 2.5e5 at nside 256), and 3e-4 of it over the sky.
"""
from __future__ import annotations

import numpy as np

from cmbcube.science.foregrounds.seds import H_PLANCK, K_BOLTZMANN

GRID_1D = 16385         # nodes over a power law's range of beta
GRID_2D = 1025          # nodes per axis over a modified black body's (beta, T) range (an 8 MB table)

_KERNELS = {}


def _kernels():
    """Compile the interpolation kernels on first use (numba, single-threaded: one Dask worker, one core)."""
    if _KERNELS:
        return _KERNELS
    import numba

    # r0, r1, r2: the reference maps I, Q, U (nc = 1: I only, r1 and r2 are r0 and unread).  A table of
    # one parameter is read as two identical columns with inv_dy = 0 (ty = 0: linear interpolation in x).
    @numba.njit(cache=True, nogil=True)
    def add_2d(r0, r1, r2, x, y, x0, inv_dx, y0, inv_dy, table, out, nc):
        last_x, last_y = table.shape[0] - 2, table.shape[1] - 2
        for p in range(r0.shape[0]):
            a0 = r0[p]
            a1 = r1[p] if nc == 3 else 0.0
            a2 = r2[p] if nc == 3 else 0.0
            if a0 == 0.0 and a1 == 0.0 and a2 == 0.0:
                continue
            fx = (x[p] - x0) * inv_dx
            fy = (y[p] - y0) * inv_dy
            i = min(max(int(fx), 0), last_x)
            j = min(max(int(fy), 0), last_y)
            tx = fx - i
            ty = fy - j
            low = table[i, j] + ty * (table[i, j + 1] - table[i, j])
            high = table[i + 1, j] + ty * (table[i + 1, j + 1] - table[i + 1, j])
            g = low + tx * (high - low)
            out[0, p] += a0 * g
            if nc == 3:
                out[1, p] += a1 * g
                out[2, p] += a2 * g

    _KERNELS.update(add_2d=add_2d)
    return _KERNELS


def _axis(values: np.ndarray, nodes: int) -> np.ndarray:
    """``nodes`` equally spaced points spanning the values' range (a hair wider, never zero width)."""
    low, high = float(np.min(values)), float(np.max(values))
    pad = max(1e-9, 1e-9 * abs(high - low))
    return np.linspace(low - pad, high + pad, nodes)


def sed_table(params: dict, freqs: np.ndarray, weights: np.ndarray, ref: float, beta_axis: np.ndarray,
              temp_axis: np.ndarray | None = None) -> np.ndarray:
    """Tabulate g = sum_i weights_i f(freqs_i): on (beta,) for a power law, (beta, T) for a modified black body.

    The formulas are those of ``pysm._factor`` (pysm3's classes), in double precision.
    """
    kind = params["kind"]
    table = 0.0
    if kind == "mbb":
        # separable in (beta, T) at each frequency: the table is a (beta, nu) x (nu, T) matrix product
        log_ratio = np.log(freqs / ref)                                                   # (nu,)
        power = np.exp((beta_axis[:, None] + 1.0) * log_ratio[None, :]) * weights[None, :]  # (beta, nu)
        c = H_PLANCK * 1e9 / (K_BOLTZMANN * temp_axis)                                    # (T,)
        planck = np.expm1(c[None, :] * ref) / np.expm1(freqs[:, None] * c[None, :])      # (nu, T)
        return np.ascontiguousarray(power @ planck)
    for nu, w in zip(freqs, weights):
        log_ratio = np.log(nu / ref)
        exponent = beta_axis
        if kind == "curved":
            exponent = beta_axis + params["curvature"] * np.log(nu / params["curve"])
        table = table + w * np.exp(log_ratio * exponent)
    return np.ascontiguousarray(table)


def tabulable(params: dict | None) -> bool:
    """Whether a model's SED parameters (``pysm._parameters``) can be tabulated here: a power law, curved
    power law or modified black body whose I and P share their reference frequency."""
    return params is not None and params["kind"] in ("power", "curved", "mbb") and params["ref_I"] == params["ref_P"]


def add_emission(out: np.ndarray, params: dict, refs: list, freqs: np.ndarray, weights: np.ndarray,
                 scale: float) -> None:
    """out[k] += refs[k] x g x scale for k < len(out): the band-integrated emission of one component in one
    band added to ``out`` (float32 or float64, (ncomp, npix)), g read from a table over this sky's
    parameter range.  ``refs``: the model's reference maps (I or I, Q, U); ``params``: its SED parameters."""
    kernels = _kernels()
    nc = 3 if out.shape[0] >= 3 and len(refs) >= 3 else 1
    maps = [np.ascontiguousarray(r, dtype=np.float64) for r in refs[:nc]]
    r0, r1, r2 = (maps * 3)[:3] if nc == 1 else maps
    w = np.asarray(weights, dtype=np.float64) * scale
    freqs = np.asarray(freqs, dtype=np.float64)
    beta = np.broadcast_to(np.asarray(params["beta"], dtype=np.float64), r0.shape)
    if params["kind"] == "mbb" and np.ndim(params["temp"]) > 0:
        temp = np.ascontiguousarray(params["temp"], dtype=np.float64)
        bx, tx = _axis(beta, GRID_2D), _axis(temp, GRID_2D)
        table = sed_table(params, freqs, w, params["ref_I"], bx, tx)
        kernels["add_2d"](r0, r1, r2, np.ascontiguousarray(beta), temp, bx[0], 1.0 / (bx[1] - bx[0]), tx[0],
                          1.0 / (tx[1] - tx[0]), table, out, nc)
        return
    bx = _axis(beta, GRID_1D)
    if params["kind"] == "mbb":           # a uniform temperature: one axis
        table = sed_table(params, freqs, w, params["ref_I"], bx, np.array([float(params["temp"])]))[:, 0].copy()
    else:
        table = sed_table(params, freqs, w, params["ref_I"], bx)
    beta = np.ascontiguousarray(beta)
    kernels["add_2d"](r0, r1, r2, beta, beta, bx[0], 1.0 / (bx[1] - bx[0]), bx[0], 0.0,
                      np.repeat(table[:, None], 2, axis=1), out, nc)
