import healpy as hp
import numpy as np
import pytest

from cmbcube.science import geometry


@pytest.mark.parametrize("nside", [1, 2, 4, 8, 16, 32, 64])
def test_face_plane_round_trips_every_pixel(nside):
    index = geometry.face_plane_index(nside)
    assert index.shape == (4 * nside, 3 * nside)
    assert np.array_equal(np.sort(index.ravel()), np.arange(12 * nside ** 2))
    maps = np.random.default_rng(nside).standard_normal((2, 3, 12 * nside ** 2)).astype(np.float32)
    planes = geometry.to_faces(maps)
    assert planes.shape == (2, 3, 4 * nside, 3 * nside)
    assert np.array_equal(geometry.from_faces(planes), maps)


@pytest.mark.parametrize("nside", [4, 16, 64])
def test_face_blocks_keep_neighbours_adjacent(nside):
    index = geometry.face_plane_index(nside)
    n = nside
    for row in range(4):
        for col in range(3):
            block = index[row * n:(row + 1) * n, col * n:(col + 1) * n]
            face = block // (n * n)
            assert np.all(face == face[0, 0]) and face[0, 0] == geometry.FACE_GRID[row][col]
            neighbours = hp.get_all_neighbours(nside, block.ravel(), nest=True).T.reshape(n, n, 8)
            right = np.array([[block[r, c + 1] in neighbours[r, c] for c in range(n - 1)] for r in range(n)])
            down = np.array([[block[r + 1, c] in neighbours[r, c] for c in range(n)] for r in range(n - 1)])
            assert right.all() and down.all()


def test_face_orientation_north_up():
    nside = 16
    index = geometry.face_plane_index(nside)
    theta, _ = hp.pix2ang(nside, index, nest=True)
    block = theta[:nside, :nside]            # face 2, a northern face
    assert block[0].mean() < block[-1].mean()    # colatitude grows downwards


@pytest.mark.parametrize("nside, side", [(16, 4), (32, 8), (64, 16), (8, 8), (4, 1)])
def test_patches_tile_the_sphere_exactly_once(nside, side):
    index = geometry.patch_index(nside, side)
    assert index.shape == (12 * nside ** 2 // side ** 2, side, side)
    assert np.array_equal(np.sort(index.ravel()), np.arange(12 * nside ** 2))
    m = np.random.default_rng(0).standard_normal(12 * nside ** 2)
    patches = geometry.to_patches(m, side)
    assert np.array_equal(geometry.from_patches(patches, nside), m)
    # a patch is a compact square: its pixels share one base face and one parent pixel
    parent = index // (side * side)
    assert np.all(parent == np.arange(index.shape[0])[:, None, None])
    sub = geometry.to_patches(m, side, patch_ids=[3, 1])
    assert np.array_equal(sub, patches[[3, 1]])


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="power of two"):
        geometry.face_plane_index(12)
    with pytest.raises(ValueError, match="exceeds nside"):
        geometry.patch_index(8, 16)
