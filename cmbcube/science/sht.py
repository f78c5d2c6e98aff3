"""Spherical-harmonic transforms on HEALPix grids (ducc0), in healpy's alm layout.

Maps here are RING-ordered numpy arrays; alms use healpy's m-major packing so
that ``healpy`` utilities (``almxfl``, ``alm2cl``) work on them unchanged.
Polarisation follows healpy's convention: (T, E, B) <-> (I, Q, U).
"""
from __future__ import annotations

import functools

import ducc0
import numpy as np

_THREADS = 1       # Dask parallelises over sims; the stages set this from $CMBCUBE_SHT_THREADS


def set_threads(n: int) -> None:
    """Threads per transform from now on in this process (>= 1)."""
    global _THREADS
    _THREADS = max(1, int(n))


def nthreads() -> int:
    """Threads per transform (1 unless :func:`set_threads` said otherwise)."""
    return _THREADS


def alm_size(lmax: int) -> int:
    """Return the number of alm coefficients up to ``lmax`` (m >= 0)."""
    return (lmax + 1) * (lmax + 2) // 2


def lmax_from_size(size: int) -> int:
    """Return the lmax of an alm array of ``size`` coefficients; ValueError if none fits."""
    lmax = int((np.sqrt(8 * size + 1) - 3) / 2)
    if alm_size(lmax) != size:
        raise ValueError(f"{size} is not a valid alm array size")
    return lmax


@functools.lru_cache(maxsize=16)
def geometry(nside: int) -> dict:
    """Return ducc0's RING geometry of ``nside`` for its transforms."""
    return ducc0.healpix.Healpix_Base(nside, "RING").sht_info()


def ring_to_nest(nside: int) -> np.ndarray:
    """NESTED index of every RING pixel (healpy's ``ring2nest(nside, arange(npix))``, without importing healpy)."""
    return ducc0.healpix.Healpix_Base(nside, "RING").ring2nest(np.arange(12 * nside * nside))


@functools.lru_cache(maxsize=16)
def mstart(lmax: int) -> np.ndarray:
    """Return the offsets ducc0 uses to find each m in a healpy-ordered alm array."""
    m = np.arange(lmax + 1)
    return (m * (2 * lmax + 1 - m) // 2).astype(np.uintp)


def alm2map(alm: np.ndarray, nside: int) -> np.ndarray:
    """Synthesis. ``alm`` is (nalm,) or (1|3, nalm) complex; returns (npix,) or (1|3, npix).

    complex64 alms give a float32 map (single-precision transform, ~2x faster, relative
    errors ~1e-6); anything else runs in double precision.
    """
    alm = np.asarray(alm)
    squeeze = alm.ndim == 1
    single = alm.dtype == np.complex64
    alm = np.atleast_2d(alm).astype(np.complex64 if single else np.complex128, copy=False)
    lmax = lmax_from_size(alm.shape[-1])
    geom = geometry(nside)
    kw = dict(lmax=lmax, mstart=mstart(lmax), nthreads=nthreads(), **geom)
    out = np.empty((alm.shape[0], 12 * nside * nside), dtype=np.float32 if single else np.float64)
    out[0:1] = ducc0.sht.experimental.synthesis(alm=alm[0:1], spin=0, **kw)
    if alm.shape[0] == 3:
        out[1:3] = ducc0.sht.experimental.synthesis(alm=alm[1:3], spin=2, **kw)
    elif alm.shape[0] != 1:
        raise ValueError("alm must hold 1 (T) or 3 (T, E, B) components")
    return out[0] if squeeze else out


def alm2map_spin2(eb: np.ndarray, nside: int) -> np.ndarray:
    """Spin-2 synthesis alone: (2, nalm) E, B alms -> (2, npix) Q, U (float32 for complex64 alms)."""
    eb = np.asarray(eb)
    lmax = lmax_from_size(eb.shape[-1])
    return ducc0.sht.experimental.synthesis(alm=eb, spin=2, lmax=lmax, mstart=mstart(lmax), nthreads=nthreads(),
                                            **geometry(nside))


def _adjoint(maps: np.ndarray, lmax: int) -> np.ndarray:
    nside = int(np.sqrt(maps.shape[-1] / 12))
    geom = geometry(nside)
    kw = dict(lmax=lmax, mstart=mstart(lmax), nthreads=nthreads(), **geom)
    alm = np.empty((maps.shape[0], alm_size(lmax)), dtype=np.complex64 if maps.dtype == np.float32 else np.complex128)
    alm[0:1] = ducc0.sht.experimental.adjoint_synthesis(map=maps[0:1], spin=0, **kw)
    if maps.shape[0] == 3:
        alm[1:3] = ducc0.sht.experimental.adjoint_synthesis(map=maps[1:3], spin=2, **kw)
    alm *= 4 * np.pi / maps.shape[-1]
    return alm


def map2alm(maps: np.ndarray, lmax: int | None = None, iterations: int = 3, single: bool = False) -> np.ndarray:
    """Analysis with Jacobi iterations (healpy's ``iter``); 0 iterations is a plain quadrature.

    ``maps`` is (npix,) or (1|3, npix) RING; lmax defaults to 3 nside - 1.  ``single``: run the
    transforms in single precision (float32 maps, complex64 alms returned; ~2x faster, relative
    errors ~1e-6, far below the quadrature's own).
    """
    maps = np.asarray(maps, dtype=np.float32 if single else np.float64)
    squeeze = maps.ndim == 1
    maps = np.atleast_2d(maps)
    if maps.shape[0] not in (1, 3):
        raise ValueError("maps must hold 1 (I) or 3 (I, Q, U) components")
    nside = int(round(np.sqrt(maps.shape[-1] / 12)))
    if lmax is None:
        lmax = 3 * nside - 1
    alm = _adjoint(maps, lmax)
    for _ in range(iterations):
        alm += _adjoint(maps - alm2map(alm, nside), lmax)
    return alm[0] if squeeze else alm


def almxfl(alm: np.ndarray, fl: np.ndarray) -> np.ndarray:
    """Multiply (..., nalm) alms by an ell-filter (lmax+1,) or per-component (..., lmax+1)."""
    lmax = lmax_from_size(alm.shape[-1])
    ell = ell_of_alm(lmax)
    fl = np.asarray(fl)
    if fl.shape[-1] < lmax + 1:
        fl = np.concatenate([fl, np.zeros(fl.shape[:-1] + (lmax + 1 - fl.shape[-1],))], axis=-1)
    return alm * fl[..., ell]


@functools.lru_cache(maxsize=16)
def ell_of_alm(lmax: int) -> np.ndarray:
    """Return the multipole of each coefficient of a healpy-ordered alm array."""
    ell = np.empty(alm_size(lmax), dtype=np.int64)
    for m in range(lmax + 1):
        start = int(mstart(lmax)[m]) + m
        ell[start:start + lmax + 1 - m] = np.arange(m, lmax + 1)
    return ell


def truncate_alm(alm: np.ndarray, lmax_new: int) -> np.ndarray:
    """Keep multipoles up to ``lmax_new`` (must not exceed the current lmax)."""
    lmax = lmax_from_size(alm.shape[-1])
    if lmax_new > lmax:
        raise ValueError(f"cannot raise lmax from {lmax} to {lmax_new}")
    out = np.empty(alm.shape[:-1] + (alm_size(lmax_new),), dtype=alm.dtype)
    for m in range(lmax_new + 1):
        src = int(mstart(lmax)[m]) + m
        dst = int(mstart(lmax_new)[m]) + m
        out[..., dst:dst + lmax_new + 1 - m] = alm[..., src:src + lmax_new + 1 - m]
    return out


def alm2map_scalar(alm: np.ndarray, nside: int) -> np.ndarray:
    """Spin-0 synthesis of a stack: (n, nalm) -> (n, npix), all transforms in one call."""
    alm = np.ascontiguousarray(np.asarray(alm, dtype=np.complex128)[:, None, :])
    lmax = lmax_from_size(alm.shape[-1])
    out = ducc0.sht.experimental.synthesis(alm=alm, lmax=lmax, mstart=mstart(lmax), spin=0,
                                           nthreads=nthreads(), **geometry(nside))
    return out[:, 0]


def map2alm_scalar(maps: np.ndarray, lmax: int | None = None, iterations: int = 0) -> np.ndarray:
    """Spin-0 analysis of a stack: (n, npix) -> (n, nalm), with Jacobi iterations."""
    maps = np.ascontiguousarray(np.asarray(maps, dtype=np.float64)[:, None, :])
    nside = int(round(np.sqrt(maps.shape[-1] / 12)))
    lmax = 3 * nside - 1 if lmax is None else lmax
    kw = dict(lmax=lmax, mstart=mstart(lmax), spin=0, nthreads=nthreads(), **geometry(nside))
    scale = 4 * np.pi / maps.shape[-1]
    alm = ducc0.sht.experimental.adjoint_synthesis(map=maps, **kw)
    alm *= scale
    for _ in range(iterations):                      # in place: one map- and one alm-sized buffer at a time
        resid = ducc0.sht.experimental.synthesis(alm=alm, **kw)
        np.subtract(maps, resid, out=resid)
        step = ducc0.sht.experimental.adjoint_synthesis(map=resid, **kw)
        del resid
        step *= scale
        alm += step
    return alm[:, 0]
