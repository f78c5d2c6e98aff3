"""foregrounds.shared_structure: how much of the Galaxy's large-scale geometry sims share (issue 20,
item 8). With 1 (the default) every sim's disk, ordered field and Loop I sit where the real Galaxy's
are, so two sims' dust intensities correlate at ~0.4 even at ell >= 30; with 0 each sim's Galaxy is
turned by a uniformly random rotation and two sims are independent skies."""
import numpy as np
import pytest

from cmbcube import recipe
from cmbcube.science import skystats as ss
from cmbcube.science.foregrounds import fields
from cmbcube.science.validation import correlation


def dust_pair(shared, nside=32):
    return [ss.component_maps("dust", nside, 5, sim, shared_structure=shared)[0] for sim in (0, 1)]


def test_shared_galaxy_correlates_independent_skies_do_not():
    r_shared = correlation(*dust_pair(1.0), ell_min=30)
    r_free = correlation(*dust_pair(0.0), ell_min=30)
    assert r_shared > 0.25, r_shared
    assert abs(r_free) < 0.1, r_free


def test_frames_are_rotations_and_scale_with_the_knob():
    rng = np.random.default_rng(3)
    assert fields.random_frame(rng, 1.0) is None
    angles = []
    for shared in (0.0, 0.5, 0.9):
        rot = np.asarray(fields.random_frame(np.random.default_rng(3), shared)).reshape(3, 3)
        assert np.allclose(rot @ rot.T, np.eye(3), atol=1e-12) and np.isclose(np.linalg.det(rot), 1.0)
        angles.append(np.arccos(np.clip((np.trace(rot) - 1) / 2, -1, 1)))
    assert angles[0] > angles[1] > angles[2] > 0
    assert np.isclose(angles[1], angles[0] / 2) and np.isclose(angles[2], angles[0] / 10)
    # a direction given in the Galaxy's frame lands where the rotation sends it back
    frame = fields.random_frame(np.random.default_rng(4), 0.0)
    gal_l, gal_b = fields.galactic_direction(30.0, 40.0, frame)
    lon, lat = fields.frame_coords(64, frame)
    import healpy as hp
    pix = hp.ang2pix(64, gal_l, gal_b, lonlat=True)
    assert abs(np.degrees(lon[pix]) % 360 - 30.0) < 2 and abs(np.degrees(lat[pix]) - 40.0) < 1.5


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_the_knob_is_checked(value):
    with pytest.raises(recipe.RecipeError, match="foregrounds.shared_structure"):
        recipe.validate({"name": "x", "nside": 8, "foregrounds": {"shared_structure": value}})
