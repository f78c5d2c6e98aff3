"""Exact symmetries of the HEALPix NESTED grid, for augmenting training skies (issue 22).

A rotation of the sky by k * 90 degrees about the polar axis (phi -> phi + k pi/2) maps pixel centres
onto pixel centres: it moves each base face to the next one in its ring (north faces 0-3, equatorial
4-7, south 8-11 each cycle by k) and leaves the pixel's index inside its face unchanged.  Stokes Q and
U, defined on the local meridian basis (e_theta, e_phi), are unchanged because the basis turns with the
sky.  The reflection phi -> -phi maps faces 0<->3, 1<->2, 5<->7, 9<->10, 8<->11 (4 and 6 onto
themselves), swaps the two in-face coordinates, and flips the sign of U (e_phi -> -e_phi).  Checked
against healpy (ang2pix of the moved pixel centres; alm rotation and the parity of E and B) in
tests/test_training_trust.py.

Pure numpy; the maps are (..., npix) NESTED, or the cmbNNCS face plane (cmbcube.science.geometry).
"""
from __future__ import annotations

import functools

import numpy as np

from cmbcube.errors import InputError
from cmbcube.science import geometry

AUGMENTS = ("none", "rot90", "rot90-flip")       # TrainConfig.augment
FLIP_FACE = np.array([3, 2, 1, 0, 4, 7, 6, 5, 11, 10, 9, 8])


def n_symmetries(augment: str) -> int:
    """How many sky symmetries ``augment`` draws from (1 for none, 4 rotations, 8 with reflections)."""
    if augment not in AUGMENTS:
        raise InputError(f"augment {augment!r}: allowed: {', '.join(AUGMENTS)}")
    return {"none": 1, "rot90": 4, "rot90-flip": 8}[augment]


def _compact_bits(x: np.ndarray) -> np.ndarray:
    """Bits 0, 2, 4, ... of x to bits 0, 1, 2, ... (inverse of geometry.spread_bits)."""
    out = np.zeros_like(x)
    for b in range(31):
        if not np.any(x >> (2 * b)):
            break
        out |= ((x >> (2 * b)) & 1) << b
    return out


@functools.lru_cache(maxsize=64)
def pixel_map(nside: int, k: int, flip: bool = False) -> np.ndarray:
    """Where each NESTED pixel goes: reflected in longitude (``flip``) then rotated by k * 90 degrees."""
    npf = nside * nside
    pix = np.arange(12 * npf, dtype=np.int64)
    face, inner = pix // npf, pix % npf
    if flip:
        face = FLIP_FACE[face]
        inner = geometry.spread_bits(_compact_bits(inner >> 1)) | (geometry.spread_bits(_compact_bits(inner)) << 1)
    face = (face // 4) * 4 + (face % 4 + k) % 4
    out = face * npf + inner
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=64)
def source_index(nside: int, k: int, flip: bool = False) -> np.ndarray:
    """NESTED gather index: ``m[..., source_index]`` is the map moved by the symmetry (k, flip)."""
    src = np.empty(12 * nside * nside, dtype=np.int64)
    src[pixel_map(nside, k, flip)] = np.arange(src.size)
    src.setflags(write=False)
    return src


@functools.lru_cache(maxsize=64)
def face_plane_source(nside: int, k: int, flip: bool = False) -> np.ndarray:
    """Flat gather index on the (4 nside, 3 nside) face plane for the same symmetry."""
    plane = geometry.face_plane_index(nside).ravel()
    where = np.empty_like(plane)
    where[plane] = np.arange(plane.size)
    out = where[source_index(nside, k, flip)[plane]]
    out.setflags(write=False)
    return out


def move(maps: np.ndarray, k: int, flip: bool = False, u_rows=()) -> np.ndarray:
    """(..., channels, npix) NESTED maps moved by the symmetry; ``u_rows``: channels holding Stokes U
    (negated by a reflection)."""
    out = np.asarray(maps)[..., source_index(int(round(np.sqrt(maps.shape[-1] / 12))), k % 4, flip)]
    if flip and len(u_rows):
        out = out.copy()
        out[..., list(u_rows), :] *= -1
    return out
