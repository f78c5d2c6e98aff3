"""The simulator's shortcuts give pysm3's answer: separable emission, one transform per
uniform-SED component, cached fixed foregrounds."""
import healpy as hp
import numpy as np
import pysm3.units as u
import pytest
from pysm3.utils import bandpass_unit_conversion

from cmbcube.interop import templates
from cmbcube.science import foregrounds, instrument, seeds, sht
from cmbcube.stages import simspec
from helpers import small_recipe

ALL = ["dust", "synchrotron", "freefree", "ame", "cib", "tsz", "radio"]


@pytest.fixture(scope="module")
def models():
    return foregrounds.synthetic_sky(ALL, 16, lambda n: seeds.rng(3, "test", 0, "foreground-" + n),
                                     lambda n: seeds.rng(3, "test", 0, "sed-" + n))


def test_emission_equals_pysm3_get_emission(models):
    assert list(models) == ALL                          # every component is compared
    for name, model in models.items():
        for freq in instrument.FREQS:
            ref = model.get_emission(freq * u.GHz).to_value(u.uK_RJ)
            ours = foregrounds.emission(model, freq)
            assert np.allclose(ours, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max()), (name, freq)
            assert np.array_equal(foregrounds.emission(model, freq, 1, 2.0), ours[:1] * 2.0)


def test_uniform_seds_are_recognised(models):
    uniform = {name for name, m in models.items() if foregrounds.is_uniform(m)}
    assert uniform == {"freefree", "ame", "cib", "tsz"}       # dust, synchrotron, radio vary per pixel
    # a uniform SED really is one number: emission = reference map x factor
    for name in uniform:
        ref = foregrounds.reference_maps(models[name])
        f_i, _ = foregrounds.sed_factors(models[name], 217.0)
        assert np.allclose(foregrounds.emission(models[name], 217.0)[0], ref[0] * f_i)


def _brute_force(recipe, split, sim):
    """Observed maps the long way: pysm3 get_emission of every component per detector, their
    sum analysed per detector (double precision, same band limit and iterations), beam, window."""
    sim_ = simspec.simulator(recipe)
    models = sim_.foreground_models(split, sim)
    out = []
    for det in sim_.detectors:
        nc = 3 if det.polarised else 1
        # pysm3's own bandpass integration over the detector's band (its weights make pysm3's trapezoid the
        # detector's Gauss-Legendre sum) and unit conversion (MJy/sr: IRAS convention, not pysm3's)
        band = det.band_ghz * u.GHz
        rj = bandpass_unit_conversion(band, det.pysm3_weights, instrument.pysm_unit(sim_.units[det.freq])).value
        if sim_.units[det.freq] == "MJy/sr":
            rj = instrument.band_unit_factor(det, "uK_RJ", "MJy/sr")
        total = sum(m.get_emission(band, det.pysm3_weights).to_value(u.uK_RJ) for m in models.values())[:nc] * rj
        alm = sht.truncate_alm(sht.map2alm(total, sim_.lmax_analysis, 1), sim_.lmax_out)
        out.append(sht.alm2map(sht.almxfl(alm, sim_.transfer[det.freq][:nc]), sim_.nside)[:, sim_.ring2nest])
    return out


def test_simulated_foregrounds_equal_the_brute_force_sum():
    recipe = small_recipe(cmb__enabled=False, noise__model="none", keep=["cmb"])
    res = simspec.simulator(recipe).run("test", 1)
    brute = _brute_force(recipe, "test", 1)
    assert len(brute) == res.obs.shape[0] == len(recipe["detectors"]) == 9     # every detector is compared
    for i, expected in enumerate(brute):
        got = res.obs[i, : expected.shape[0]]
        scale = np.abs(expected).max()
        # single-precision transforms: ~1e-6 of the brightest pixel
        assert np.abs(got - expected).max() < 2e-5 * scale, (i, np.abs(got - expected).max() / scale)


def test_fixed_foregrounds_cache_gives_the_same_bytes():
    recipe = small_recipe(foregrounds__vary="fixed", keep=["cmb"])
    warm = simspec.simulator(recipe)
    warm.run("train", 0)
    assert len(warm._fixed_alms) == len(warm.detectors)          # the cache is filled
    again = warm.run("train", 1)
    fresh = simspec.simulator(recipe).run("train", 1)
    assert np.array_equal(again.obs, fresh.obs, equal_nan=True)
    # and fixed means fixed: the foreground part of two sims is the same
    nofg = small_recipe(foregrounds__vary="fixed", foregrounds__model="none", keep=["cmb"])
    a, b = (simspec.simulator(nofg).run("train", s).obs for s in (0, 1))
    fg0, fg1 = warm.run("train", 0).obs - a, again.obs - b
    assert np.allclose(fg0, fg1, atol=1e-3 * np.nanmax(np.abs(fg0)), equal_nan=True)


def test_pysm_preset_files_are_files_not_units(tmp_path):
    assert templates.pysm_files("cib1", 512) == ["websky/0.4/"]          # not its 'MJy / sr' input unit
    a1 = templates.pysm_files("a1", 512)
    assert len(a1) == len(set(a1)) and "pysm_2/emissivity.txt" in a1
    assert templates.missing_pysm_files(["cib1", "rg1"], 512, str(tmp_path)) == ["cib1: websky/0.4/",
                                                                                  "rg1: websky/0.4/"]
    (tmp_path / "websky" / "0.4").mkdir(parents=True)
    assert templates.missing_pysm_files(["cib1", "rg1"], 512, str(tmp_path)) == []


def _random_parts(nside, seed):
    """The random fields of the extragalactic and faint diffuse components, from the built models: free-free's
    and AME's lognormal modulations (their maps over the slab envelope / the dust), the CIB's anisotropies."""
    from cmbcube.science.foregrounds import fields
    models = foregrounds.synthetic_sky(["dust", "freefree", "ame", "cib"], nside,
                                       lambda n: seeds.rng(seed, "resolution", 0, "foreground-" + n), lambda n: None)
    ref = {name: foregrounds.reference_maps(m, 1)[0] for name, m in models.items()}
    p = foregrounds.PARAMS
    envelope = p["freefree"]["high_lat_uK_RJ"] * fields.slab_envelope(nside, p["freefree"]["slab_height"], 1.0)
    return {"freefree": ref["freefree"] / envelope, "ame": ref["ame"] / (p["ame"]["dust_ratio"] * ref["dust"]),
            "cib": ref["cib"] - ref["cib"].mean()}


def _band_cl(m, lo=20, hi=60):
    return hp.anafast(m, lmax=hi + 35, iter=3)[lo: hi + 1].mean()


def test_diffuse_fields_do_not_depend_on_the_resolution():
    """Foregrounds are defined on the sky: C_ell at ell 20-60 of free-free's and AME's modulations and of the
    CIB is the same at sky nside 32 and 128 (e4cd77c, where each field had unit variance per pixel at every
    nside: 128 / 32 ratios 0.61, 0.91 and 0.32; the CIB's 1024 / 64 ratio 0.10), and the CIB's spectrum is
    the published one (diffuse.CIB_CL: Planck 2013 XXX, 545 GHz)."""
    nseeds = 3
    low = [_random_parts(32, s) for s in range(nseeds)]
    high = [_random_parts(128, s) for s in range(nseeds)]
    for name in ("freefree", "ame", "cib"):
        ratio = np.mean([_band_cl(h[name]) for h in high]) / np.mean([_band_cl(lo[name]) for lo in low])
        assert ratio == pytest.approx(1.0, abs=0.03), (name, ratio)
    # the CIB's anisotropies in Jy^2/sr at 545 GHz (its reference frequency, RJ units): the measured spectrum
    rj_to_jy = 2 * 1.380649e-23 * 545e9 ** 2 / 2.99792458e8 ** 2 * 1e26 * 1e-6      # Jy/sr per uK_RJ
    ell = np.arange(20, 61)
    expected = np.mean(1.0e4 * (ell / 500.0) ** -1.2 + 1454.0)                        # Jy^2/sr
    measured = np.mean([_band_cl(h["cib"]) for h in high]) * rj_to_jy ** 2
    assert measured == pytest.approx(expected, rel=0.1)


def test_point_sources_conserve_flux_at_any_resolution():
    """tSZ clusters and radio sources are deposited per pixel with their integrated Compton Y / flux conserved:
    the same sources (one seed) give the same total and the same large-scale C_ell at sky nside 32 and 128."""
    def build(nside):
        models = foregrounds.synthetic_sky(["tsz", "radio"], nside, lambda n: seeds.rng(5, "res", 0, "foreground-" + n),
                                           lambda n: None)
        omega = 4 * np.pi / hp.nside2npix(nside)
        return {name: foregrounds.reference_maps(m, 1)[0] * omega for name, m in models.items()}   # per-pixel sums
    low, high = build(32), build(128)
    for name in ("tsz", "radio"):
        assert high[name].sum() == pytest.approx(low[name].sum(), rel=1e-10), name
        npix = {32: low[name].size, 128: high[name].size}
        cl = {n: _band_cl(m * npix[n] / (4 * np.pi)) for n, m in ((32, low[name]), (128, high[name]))}
        assert cl[128] == pytest.approx(cl[32], rel=0.03), name
