import os

import healpy as hp
import numpy as np
import pytest

from cmbcube.interop.planck import read_chain
from cmbcube.science import cosmology, foregrounds, instrument, noise, seeds, sht
from cmbcube.stages import simspec
from helpers import rms, small_recipe


def test_cmb_realisation_matches_theory_within_cosmic_variance():
    params = cosmology.draw_params(np.random.default_rng(3))
    lmax = 383
    cls = cosmology.lensed_spectra(params, lmax)
    assert cls.shape == (4, lmax + 1)
    # plausible amplitudes: first acoustic peak D_l ~ 5000-6500 uK^2 near l = 220
    dl = cls[0] * np.arange(lmax + 1) * (np.arange(lmax + 1) + 1) / (2 * np.pi)
    assert 4500 < dl[180:260].max() < 7000 and 180 < np.argmax(dl[100:300]) + 100 < 260
    alm = cosmology.synalm(cls, np.random.default_rng(4))
    measured = hp.alm2cl(alm)            # TT EE BB TE EB TB
    ell = np.arange(lmax + 1)
    edges = np.arange(10, lmax + 1, 25)
    for k, (name, pred) in enumerate(zip(("TT", "EE", "BB"), cls[:3])):
        for lo, hi in zip(edges[:-1], edges[1:]):
            nmodes = np.sum(2 * ell[lo:hi] + 1)
            ratio = measured[k][lo:hi].sum() / pred[lo:hi].sum()
            assert abs(ratio - 1) < 5 * np.sqrt(2 / nmodes), (name, lo, ratio)
    # TE: variance (TT EE + TE^2) / (2l + 1) per multipole
    for lo, hi in zip(edges[:-1], edges[1:]):
        var = np.sum((cls[0] * cls[1] + cls[3] ** 2)[lo:hi] / (2 * ell[lo:hi] + 1))
        assert abs(measured[3][lo:hi].sum() - cls[3][lo:hi].sum()) < 5 * np.sqrt(var)


@pytest.mark.parametrize("freq", instrument.FREQS)
def test_unit_conversion_matches_pysm3(freq):
    import pysm3
    import pysm3.units as u
    det = instrument.detector(freq)
    nu = np.array([det.centre_ghz]) * u.GHz
    assert instrument.unit_factor(det.centre_ghz, "uK_RJ", "uK_CMB") == pytest.approx(
        pysm3.bandpass_unit_conversion(nu, None, u.uK_CMB).value, rel=1e-10)
    assert instrument.unit_factor(det.centre_ghz, "uK_RJ", "MJy/sr") == pytest.approx(
        pysm3.bandpass_unit_conversion(nu, None, u.MJy / u.sr).value, rel=1e-10)
    assert instrument.unit_factor(det.centre_ghz, "K_CMB", "uK_CMB") == pytest.approx(1e6)


def test_beam_transfer_function_of_simulated_map_matches_gaussian():
    """obs at a noiseless, foreground-free detector is exactly the truth times B_l."""
    r = small_recipe(nside=32, foregrounds__model="none", noise__model="none", instrument__pixel_window=False,
                     detectors=[100, 857], splits={"train": 1, "valid": 0, "test": 0})
    res = simspec.simulator(r).run("train", 0)
    nest2ring = hp.ring2nest(32, np.arange(12 * 32 ** 2))
    lmax = 95
    truth = sht.map2alm(res.cmb[:, nest2ring].astype(float), lmax, 3)
    assert list(r["detectors"]) == [100, 857] and res.obs.shape[0] == 2
    for i, freq in enumerate(r["detectors"]):
        fields = 3 if freq == 100 else 1
        beamed = sht.map2alm(res.obs[i, :fields][:, nest2ring].astype(float), lmax, 3)
        bl = instrument.gaussian_beam(instrument.detector(freq).fwhm_arcmin, lmax)
        for k in range(fields):
            good = slice(2, 80)
            measured = np.ones(lmax + 1)
            measured[good] = hp.alm2cl(beamed[k], truth[k])[good] / hp.alm2cl(truth[k])[good]
            # float32 storage limits the precision; B (100x fainter than E) suffers most
            tol = 5e-3 if k == 2 else 5e-4
            assert np.allclose(measured[good], bl[k][good], rtol=tol, atol=tol), (freq, "TEB"[k])
            assert not np.allclose(measured[good], 1, atol=0.02)        # the beam is really there


def test_noise_pixel_std_matches_depth_and_hit_modulation():
    r = small_recipe(nside=32, foregrounds__model="none", cmb__enabled=False, detectors=[143, 545],
                     splits={"train": 1, "valid": 0, "test": 0})
    res = simspec.simulator(r).run("train", 0)
    hits = noise.scan_hits(32)
    assert 0.5 < hits.min() < 0.8 and 4 < hits.max() < 7
    resol = hp.nside2resol(32, arcmin=True)
    # 143 GHz: 0.55 uK deg (I), 1.17 uK deg (Q/U), the sky average; whitened by the relative depth per pixel
    relative = np.sqrt(hits * np.mean(1 / hits))
    for k, depth in zip(range(3), (0.55, 1.17, 1.17)):
        assert rms(res.obs[0, k]) == pytest.approx(depth * 60 / resol, rel=0.03)
        assert rms(res.obs[0, k] * relative) == pytest.approx(depth * 60 / resol, rel=0.03)
    deep, shallow = hits > np.percentile(hits, 90), hits < np.percentile(hits, 10)
    ratio = rms(res.obs[0, 0][shallow]) / rms(res.obs[0, 0][deep])
    assert ratio == pytest.approx(np.sqrt(hits[deep].mean() / hits[shallow].mean()), rel=0.1)
    # 545 GHz: 0.78 kJy/sr deg, converted to uK_CMB over the 545 GHz band (top-hat by default)
    to_ucmb = instrument.band_unit_factor(instrument.detector(545, bandpass="tophat"), "MJy/sr", "uK_CMB")
    assert rms(res.obs[1, 0]) == pytest.approx(0.78e-3 * 60 / resol * to_ucmb, rel=0.03)
    assert np.isnan(res.obs[1, 1:]).all()


def test_sky_is_the_sum_of_its_parts(tiny_recipe):
    res = simspec.simulator(tiny_recipe).run("valid", 0)
    # obs = beamed CMB + sum of components + noise; reconstruct beamed CMB independently
    foreground = np.nansum(res.components, axis=0)
    residual = res.obs - foreground - res.noise
    # the residual is the beamed CMB: identical in shape across detectors once the beam is divided out
    nest2ring = hp.ring2nest(16, np.arange(12 * 16 ** 2))
    t143 = sht.map2alm(residual[4, 0, nest2ring].astype(float), 47, 3)
    t100 = sht.map2alm(residual[3, 0, nest2ring].astype(float), 47, 3)
    b = {f: instrument.gaussian_beam(instrument.detector(f).fwhm_arcmin, 47)[0] for f in (100, 143)}
    a = sht.almxfl(t143, 1 / b[143])[: 30]
    c = sht.almxfl(t100, 1 / b[100])[: 30]
    assert np.allclose(a, c, rtol=1e-3, atol=1e-3 * np.abs(a).max())


def test_foreground_physics():
    nside = 64
    fg = foregrounds.synthetic_sky(list(foregrounds.PARAMS), nside, lambda n: seeds.rng(1, "t", 0, n),
                                   lambda n: None)
    import pysm3.units as u
    lon, lat = foregrounds.galactic_coords(nside)
    high, plane = np.abs(lat) > np.radians(60), np.abs(lat) < np.radians(2)
    dust353 = fg["dust"].get_emission(353 * u.GHz).value
    assert 3 < np.median(dust353[0][high]) < 40            # ~10 uK_RJ at high latitude
    assert 200 < np.median(dust353[0][plane]) < 3000       # ~1 mK_RJ in the plane
    pfrac = np.hypot(dust353[1], dust353[2]) / dust353[0]
    assert 0.03 < np.median(pfrac) < 0.15
    # modified black body in RJ units: (nu/nu0)^(beta-2) B(nu, T) / B(nu0, T)
    h_k = 6.62607015e-34 / 1.380649e-23
    p = foregrounds.PARAMS["dust"]

    def planck(nu):
        return nu ** 3 / np.expm1(h_k * nu * 1e9 / p["temp_K"])
    expected = (545 / 353) ** (p["beta"] - 2) * planck(545) / planck(353)
    assert np.median(fg["dust"].get_emission(545 * u.GHz).value[0] / dust353[0]) == pytest.approx(expected, rel=0.03)
    sync = [np.median(fg["synchrotron"].get_emission(f * u.GHz).value[0]) for f in (23, 46)]
    assert sync[1] / sync[0] == pytest.approx(2 ** -3.05, rel=0.15)
    # tSZ: decrement below 217 GHz, increment above, null near 217
    tsz = {f: fg["tsz"].get_emission(f * u.GHz).value[0].sum() * instrument.unit_factor(f, "uK_RJ", "uK_CMB")
           for f in (100, 143, 217, 353)}
    assert tsz[100] < tsz[143] < 0 < tsz[353] and abs(tsz[217]) < 0.1 * abs(tsz[143])
    for name in ("freefree", "ame", "cib", "tsz"):
        assert not np.any(fg[name].get_emission(100 * u.GHz).value[1:]), name
    radio = fg["radio"].get_emission(30 * u.GHz).value[0]
    assert (radio > 0).sum() > 1000 and np.median(radio) == 0       # point-like


def test_seeds_never_collide_and_repeat_exactly(tiny_recipe):
    s1, s2 = simspec.simulator(tiny_recipe), simspec.simulator(tiny_recipe)
    a, b, c = s1.run("train", 0), s2.run("train", 0), s1.run("train", 1)
    assert np.array_equal(a.obs, b.obs, equal_nan=True) and np.array_equal(a.cmb, b.cmb)
    assert not np.allclose(a.cmb, c.cmb) and not np.array_equal(a.params, c.params)
    # noise differs between detectors and fields
    n = a.noise
    whitened = n[:7] / np.sqrt(np.mean(n[:7] ** 2, axis=-1, keepdims=True))
    flat = whitened.reshape(-1, whitened.shape[-1])
    corr = np.corrcoef(flat)
    assert np.abs(corr[~np.eye(len(flat), dtype=bool)]).max() < 0.1
    # foreground templates differ between components and sims
    assert not np.allclose(a.components[:, 4], c.components[:, 4])
    ids = {seeds.derive_seed(1, s, k, comp, d, f) for s in ("train", "test") for k in range(3)
           for comp in ("cmb", "noise") for d in (100, 143) for f in "IQU"}
    assert len(ids) == 2 * 3 * 2 * 2 * 3
    # same split/sim in another split is another sky
    assert not np.allclose(s1.run("test", 0).cmb, a.cmb)


def test_545_and_857_have_no_polarisation(tiny_recipe):
    res = simspec.simulator(tiny_recipe).run("test", 1)
    assert len(tiny_recipe["detectors"]) == res.obs.shape[0] and {545, 857} < set(tiny_recipe["detectors"])
    for i, freq in enumerate(tiny_recipe["detectors"]):
        assert np.isnan(res.obs[i, 1:]).all() == (freq >= 545)
        assert np.isfinite(res.obs[i, 0]).all()


def test_fixed_foregrounds_repeat_across_sims():
    r = small_recipe(foregrounds__vary="fixed", noise__model="none", cmb__enabled=False,
                     detectors=[353], keep=["cmb"])
    s = simspec.simulator(r)
    assert np.array_equal(s.run("train", 0).obs, s.run("valid", 0).obs, equal_nan=True)
    r2 = small_recipe(noise__model="none", cmb__enabled=False, detectors=[353], keep=["cmb"])
    s2 = simspec.simulator(r2)
    assert not np.allclose(s2.run("train", 0).obs[0, 0], s2.run("valid", 0).obs[0, 0])


def test_cosmology_priors_and_chain(tmp_path):
    rng = np.random.default_rng(0)
    draws = np.array([[cosmology.draw_params(rng, "planck2018")[p] for p in cosmology.PARAMS] for _ in range(400)])
    means = [cosmology.PRIORS["planck2018"][p][0] for p in cosmology.PARAMS]
    sigmas = [cosmology.PRIORS["planck2018"][p][1] for p in cosmology.PARAMS]
    assert np.allclose(draws.mean(0), means, atol=4 * np.array(sigmas) / 20)
    assert np.allclose(draws.std(0), sigmas, rtol=0.15)
    chain = tmp_path / "chain.txt"
    chain.write_text("# H0 ombh2 omch2 ns logA tau\n70 0.022 0.11 0.96 3.0 0.06\n60 0.023 0.12 0.97 3.1 0.07\n")
    got = cosmology.draw_params(rng, "chain", chain=read_chain(str(chain)))
    assert got["H0"] in (70, 60) and got["As"] == pytest.approx(np.exp(3.0 if got["H0"] == 70 else 3.1) * 1e-10)


def test_pysm3_presets_need_local_files_and_use_them(tmp_path, monkeypatch):
    from cmbcube.stages import simulate
    monkeypatch.delenv("PYSM_LOCAL_DATA", raising=False)
    r = small_recipe(foregrounds__model="pysm3", foregrounds__presets=["f1", "d9"], detectors=[30, 143],
                     foregrounds__data_dir=str(tmp_path / "pysm"), keep=["cmb", "components"])
    with pytest.raises(FileNotFoundError) as err:
        simulate.run(r, str(tmp_path / "s.zarr"), scheduler="synchronous", progress=False)
    assert "f1: pysm_2/ff_t_new.fits" in str(err.value)
    assert "d9: dust_gnilc/gnilc_dust_template_nside2048" in str(err.value)
    assert not (tmp_path / "s.zarr").exists()
    # give f1 a (synthetic) template file: it is read from disk, never from the network
    (tmp_path / "pysm" / "pysm_2").mkdir(parents=True)
    template = np.full(12 * 32 ** 2, 50.0)
    hp.write_map(str(tmp_path / "pysm" / "pysm_2" / "ff_t_new.fits"), template, dtype=np.float64)
    r = small_recipe(foregrounds__model="pysm3", foregrounds__presets=["f1"], detectors=[30, 143],
                     foregrounds__data_dir=str(tmp_path / "pysm"), keep=["cmb", "components"],
                     noise__model="none", cmb__enabled=False, instrument__pixel_window=False)
    res = simspec.simulator(r).run("train", 0)
    # free-free power law, beta = -2.14 from 30 GHz, uniform 50 uK_RJ -> monopole at each detector
    for i, det in enumerate(r.detectors()):
        # integrated over the detector's band (top-hat by default): the pysm3 path evaluates it too
        expected = det.band_average(lambda nu: 50.0 * (nu / 30.0) ** -2.14) * \
            instrument.band_unit_factor(det, "uK_RJ", "uK_CMB")
        # 1e-3: HEALPix quadrature at the sky model's band limit (3 nside - 1) is not exact
        assert np.allclose(res.obs[i, 0], expected, rtol=3e-3)
        assert np.mean(res.obs[i, 0]) == pytest.approx(expected, rel=1e-5)
    assert res.components.shape[0] == 1


def test_variance_map_noise(tmp_path):
    variance = np.full((3, 12 * 32 ** 2), 4e-12)          # K_CMB^2 at nside 32
    variance[0, : 12 * 32 ** 2 // 2] = 16e-12
    for f in (143,):
        hp.write_map(str(tmp_path / f"{f}.fits"), variance, nest=True, dtype=np.float64)
    r = small_recipe(foregrounds__model="none", cmb__enabled=False, detectors=[143], noise__model="variance_maps",
                     noise__variance_dir=str(tmp_path))
    res = simspec.simulator(r).run("train", 0)
    # nside 16: four nside-32 pixels averaged -> variance / 4; in uK: x 1e12
    half = 12 * 16 ** 2 // 2
    assert rms(res.obs[0, 0, :half]) == pytest.approx(np.sqrt(16 / 4), rel=0.08)
    assert rms(res.obs[0, 0, half:]) == pytest.approx(np.sqrt(4 / 4), rel=0.08)


def test_target_beam_option():
    base = small_recipe(foregrounds__model="none", noise__model="none", detectors=[143])
    beamed = small_recipe(foregrounds__model="none", noise__model="none", detectors=[143], cmb__target_beam_arcmin=32.4)
    a, b = simspec.simulator(base).run("train", 0), simspec.simulator(beamed).run("train", 0)
    assert rms(b.cmb[0]) < rms(a.cmb[0])
    # a target at the detector's own beam equals the noiseless, foreground-free observation
    assert np.allclose(b.cmb, b.obs[0], rtol=1e-5, atol=1e-4)


def test_camb_spectra_do_not_depend_on_the_thread_count():
    """The same parameters give the same bytes whatever OMP_NUM_THREADS the process started with
    (CAMB's sums change in the last bits with its thread count; cosmology pins it to one)."""
    import subprocess
    import sys
    code = ("import hashlib; from cmbcube.science import cosmology; "
            "p = dict(H0=67.5, ombh2=0.022, omch2=0.12, ns=0.965, As=2.1e-9, tau=0.054); "
            "print(hashlib.sha256(cosmology.lensed_spectra(p, 47).tobytes()).hexdigest())")
    digests = set()
    for threads in ("1", "3"):
        env = dict(os.environ, OMP_NUM_THREADS=threads)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        digests.add(out.stdout.strip())
    assert len(digests) == 1
