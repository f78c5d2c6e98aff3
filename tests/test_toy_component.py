"""A foreground component added from outside the package: one Component, one register call.

The toy is a known pattern with a flat SED in uK_RJ: I = A (1 + 0.4 cos theta) with A drawn from its
own template stream (seeds.foreground_streams: 'foreground-toy').  With no beams and no pixel window
its stored component map is that pattern times the band's uK_RJ -> uK_CMB factor, and the observed
map is CMB + components + noise.
"""
import numpy as np
import pytest

import cmbcube
from cmbcube.errors import InputError
from cmbcube.recipe import RecipeError
from cmbcube.science import foregrounds, instrument, seeds
from cmbcube.stages.simulate import run
from helpers import small_recipe

SEED, DETECTORS = 11, [70, 143, 353]


def build_toy(ctx: foregrounds.SkyContext):
    import healpy as hp
    import pysm3.models as m
    import pysm3.units as u
    amplitude = 30.0 * (1 + 0.1 * ctx.template_rng("toy").standard_normal())
    theta, _ = hp.pix2ang(ctx.nside, np.arange(ctx.npix))             # RING, as every template
    zeros = ctx.zeros()
    return m.PowerLaw(map_I=amplitude * (1 + 0.4 * np.cos(theta)) << u.uK_RJ, map_Q=zeros, map_U=zeros,
                      freq_ref_I="100 GHz", freq_ref_P="100 GHz", map_pl_index=0.0 * u.dimensionless_unscaled,
                      nside=ctx.nside)


@pytest.fixture
def toy():
    foregrounds.COMPONENTS.register("toy", foregrounds.Component(build_toy, polarised=False, sed=lambda nu: 1.0,
                                                                 description="a test's flat-SED dipole"))
    try:
        yield
    finally:
        foregrounds.COMPONENTS.unregister("toy")
    assert "toy" not in foregrounds.COMPONENTS


def _recipe(components):
    fg = {} if components is None else {"foregrounds__components": components}
    return small_recipe(seed=SEED, detectors=DETECTORS, splits={"train": 2, "valid": 0, "test": 0},
                        instrument__pixel_window=False, instrument__map2alm_iterations=3,
                        instrument__beam_overrides={f: 0.0 for f in DETECTORS}, **fg)


def test_a_registered_component_is_simulated_and_stored(toy, tmp_path):
    recipe = _recipe(["dust", "toy"])
    store = str(tmp_path / "toy.zarr")
    assert run(recipe, store, scheduler="synchronous", progress=False).ok
    ds = cmbcube.open(store)
    assert list(ds.component.values) == ["dust", "toy"]
    import healpy as hp
    nside = recipe["nside"]
    theta, _ = hp.pix2ang(nside, np.arange(12 * nside ** 2), nest=True)
    dets = {d.freq: d for d in recipe.detectors()}
    for sim in (0, 1):
        amplitude = 30.0 * (1 + 0.1 * seeds.foreground_streams(SEED, "train", sim)[0]("toy").standard_normal())
        for freq in DETECTORS:
            sel = dict(split="train", sim=sim, detector=freq)
            got = ds.components.sel(component="toy", field="I", **sel).values
            expected = amplitude * (1 + 0.4 * np.cos(theta)) * instrument.band_unit_factor(dets[freq], "uK_RJ",
                                                                                            "uK_CMB")
            # analysed at the sky nside with 3 Jacobi iterations (1 leaves 2e-3 near the poles), single
            # precision: measured 1e-5 of the map
            assert np.abs(got - expected).max() < 1e-4 * np.abs(expected).max(), (sim, freq)
            assert np.all(ds.components.sel(component="toy", field=["Q", "U"], **sel).values == 0)
            # no beam, no window, uK_CMB: the observed sky is the sum of what is stored
            total = ds.cmb.sel(split="train", sim=sim).values + ds.components.sel(**sel).values.sum(0) + \
                ds.noise.sel(**sel).values
            obs = ds.obs.sel(**sel).values
            assert np.abs(obs - total).max() < 1e-5 * np.abs(obs).max(), (sim, freq)
    assert np.abs(ds.components.sel(split="train", component="toy").values).max() > 10   # the toy is bright


def test_the_registry_drives_recipes_and_deprojection(toy):
    from cmbcube.science import needlets
    default = _recipe(None)["foregrounds"]["components"]
    assert "toy" not in default and default == list(foregrounds.DEFAULT_SKY)   # registering changes no default
    assert _recipe(["toy"])["foregrounds"]["components"] == ["toy"]
    sed = needlets.sed_vector("toy", [70.0, 143.0], ["uK_RJ", "uK_RJ"])
    assert np.allclose(sed, 1.0)                       # its flat SED, read from the registry


def test_an_unregistered_component_is_rejected_with_the_allowed_names():
    with pytest.raises(RecipeError, match=r"foregrounds\.components\[1\]: 'toy' is not allowed; allowed values: "
                                          r"dust, synchrotron, freefree, ame, cib, tsz, radio"):
        _recipe(["dust", "toy"])
    with pytest.raises(InputError, match="foregrounds.components: unknown foreground component 'toy'"):
        foregrounds.synthetic_sky(["toy"], 16, lambda n: None, lambda n: None)
