"""NILC's per-pixel weights, solved for many pixels at once with the pixel axis last.

The covariance of every pixel arrives as the (n (n + 1) / 2, npix) stack of smoothed channel products
(upper triangle); instead of assembling (npix, n, n) matrices for ``numpy.linalg.solve`` (one LAPACK
call per pixel), the elimination below runs over all pixels together, one vectorised row operation
at a time.  The matrices are symmetric positive definite with unit diagonal after the Jacobi scaling,
so elimination without pivoting is stable (as a Cholesky factorisation); the weights equal
:func:`cmbcube.science.needlets.ilc_weights`'s to rounding (tests).
"""
from __future__ import annotations

import numpy as np

RIDGE = 1e-12       # added to the unit diagonal, as ilc_weights does


def solve_spd_pixels(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve a[:, :, p] x[:, :, p] = b[:, :, p] for every p.  a: (n, n, P) symmetric positive definite
    (overwritten), b: (n, k, P) (overwritten).  Returns x (n, k, P)."""
    n = a.shape[0]
    for i in range(n - 1):                                   # forward elimination
        f = a[i + 1:, i] / a[i, i]                           # (n - i - 1, P)
        a[i + 1:, i + 1:] -= f[:, None, :] * a[i, i + 1:][None]
        b[i + 1:] -= f[:, None, :] * b[i][None]
    x = np.empty_like(b)
    for i in range(n - 1, -1, -1):                           # back substitution
        acc = b[i]
        if i < n - 1:
            acc = acc - np.einsum("jp,jkp->kp", a[i, i + 1:], x[i + 1:])
        x[i] = acc / a[i, i]
    return x


def pixel_weights(pairs: np.ndarray, iu: tuple, mixing: np.ndarray) -> np.ndarray:
    """Constrained ILC weights (P, n) of P pixels from their covariance's upper triangle.

    pairs: (len(iu[0]), P), the entries C[iu[0][q], iu[1][q]] of every pixel; mixing: (n, k), column 0
    the CMB response, the others SEDs to null.  Same definition as ``needlets.ilc_weights``:
    w = e0^T (A^T C^-1 A)^-1 A^T C^-1 with C Jacobi-scaled to unit diagonal plus RIDGE.
    Raises ValueError if the response check |w . A - e0| < 1e-6 fails (the caller words the error).
    """
    n, k = mixing.shape
    npix = pairs.shape[1]
    c = np.empty((n, n, npix))
    c[iu[0], iu[1]] = pairs
    c[iu[1], iu[0]] = pairs
    diag = c[np.arange(n), np.arange(n)]                                  # (n, P)
    s = 1.0 / np.sqrt(np.where(diag > 0, diag, 1.0))
    c *= s[:, None, :]
    c *= s[None, :, :]
    c[np.arange(n), np.arange(n)] += RIDGE
    a = s[:, None, :] * mixing[:, :, None]                                # (n, k, P)
    cinv_a = solve_spd_pixels(c, a.copy())                                # (n, k, P)
    m = np.einsum("ikp,ilp->klp", a, cinv_a)                              # (k, k, P)
    if k == 1:
        coeff = 1.0 / m[0]                                                # (1, P)
    else:
        e0 = np.zeros((npix, k, 1))
        e0[:, 0] = 1.0
        coeff = np.linalg.solve(np.moveaxis(m, -1, 0), e0)[..., 0].T      # (k, P)
    w = s * np.einsum("ikp,kp->ip", cinv_a, coeff)                        # (n, P)
    response = mixing.T @ w                                               # (k, P)
    response[0] -= 1.0
    bad = float(np.abs(response).max()) if response.size else 0.0
    if not bad < 1e-6:
        raise ValueError(f"max |w.A - e0| = {bad:.2e}")
    return w.T
