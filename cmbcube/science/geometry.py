"""HEALPix maps as images: the 12-face plane of cmbNNCS and NESTED square patches.

Both are pure index maps on NESTED pixel ids, exactly invertible:
``plane = map[..., index]`` and ``map[..., index.ravel()] = plane.reshape(..., -1)``.

Within a base face of side n (nside), the NESTED local index interleaves the bits
of the face coordinates: local = spread(ix) + 2 spread(iy).  A face is drawn as an
n x n block with block[r, c] = pixel (ix = n-1-c, iy = n-1-r), so north is up and
east to the left as on the sky.  The plane is 4n rows x 3n columns with faces
(rows top to bottom, columns left to right) [2, 6, 9], [3, 7, 10], [0, 4, 11], [1, 5, 8].
"""
from __future__ import annotations

import functools

import numpy as np

from cmbcube.errors import InputError

FACE_GRID = ((2, 6, 9), (3, 7, 10), (0, 4, 11), (1, 5, 8))


def _check_nside(nside: int) -> int:
    if nside < 1 or nside & (nside - 1):
        raise InputError(f"nside must be a power of two, got {nside}")
    return nside.bit_length() - 1


def spread_bits(x: np.ndarray) -> np.ndarray:
    """Put bit b of x at bit 2b (Morton interleave helper)."""
    x = np.asarray(x, dtype=np.int64)
    out = np.zeros_like(x)
    for b in range(31):
        if not np.any(x >> b):
            break
        out |= ((x >> b) & 1) << (2 * b)
    return out


@functools.lru_cache(maxsize=32)
def square_block(side: int) -> np.ndarray:
    """(side, side) NESTED local indices of a square block (a face or a patch)."""
    _check_nside(side)
    r, c = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    ix, iy = side - 1 - c, side - 1 - r
    return spread_bits(ix) + 2 * spread_bits(iy)


@functools.lru_cache(maxsize=32)
def face_plane_index(nside: int) -> np.ndarray:
    """(4 nside, 3 nside) NESTED pixel ids of the cmbNNCS face plane."""
    _check_nside(nside)
    n = nside
    block = square_block(n)
    plane = np.empty((4 * n, 3 * n), dtype=np.int64)
    for row, faces in enumerate(FACE_GRID):
        for col, face in enumerate(faces):
            plane[row * n:(row + 1) * n, col * n:(col + 1) * n] = face * n * n + block
    plane.setflags(write=False)
    return plane


def to_faces(maps: np.ndarray) -> np.ndarray:
    """(..., npix) NESTED -> (..., 4 nside, 3 nside)."""
    nside = int(round(np.sqrt(maps.shape[-1] / 12)))
    return maps[..., face_plane_index(nside)]


def from_faces(planes: np.ndarray) -> np.ndarray:
    """(..., 4 nside, 3 nside) -> (..., npix) NESTED; exact inverse of :func:`to_faces`."""
    nside = planes.shape[-1] // 3
    if planes.shape[-2:] != (4 * nside, 3 * nside):
        raise InputError(f"expected a (4n, 3n) plane, got {planes.shape[-2:]}")
    index = face_plane_index(nside)
    out = np.empty(planes.shape[:-2] + (12 * nside * nside,), dtype=planes.dtype)
    out[..., index.ravel()] = planes.reshape(planes.shape[:-2] + (-1,))
    return out


@functools.lru_cache(maxsize=32)
def patch_index(nside: int, side: int) -> np.ndarray:
    """(npatch, side, side) NESTED ids: patch p holds pixels [p side^2, (p+1) side^2)."""
    _check_nside(nside)
    _check_nside(side)
    if side > nside:
        raise InputError(f"patch side {side} exceeds nside {nside}; a patch lies within one base face")
    npatch = 12 * nside * nside // (side * side)
    index = np.arange(npatch)[:, None, None] * side * side + square_block(side)[None]
    index.setflags(write=False)
    return index


def to_patches(maps: np.ndarray, side: int, patch_ids=None) -> np.ndarray:
    """(..., npix) NESTED -> (..., npatch, side, side) (or only ``patch_ids``)."""
    nside = int(round(np.sqrt(maps.shape[-1] / 12)))
    index = patch_index(nside, side)
    if patch_ids is not None:
        index = index[np.asarray(patch_ids)]
    return maps[..., index]


def from_patches(patches: np.ndarray, nside: int) -> np.ndarray:
    """(..., npatch, side, side) covering the sphere -> (..., npix) NESTED."""
    side = patches.shape[-1]
    index = patch_index(nside, side)
    if patches.shape[-3] != index.shape[0]:
        raise InputError(f"need all {index.shape[0]} patches to rebuild the map, got {patches.shape[-3]}")
    out = np.empty(patches.shape[:-3] + (12 * nside * nside,), dtype=patches.dtype)
    out[..., index.reshape(-1)] = patches.reshape(patches.shape[:-3] + (-1,))
    return out
