import shutil
import subprocess
import sys

import healpy as hp
import numpy as np
import pytest

import cmbcube
from cmbcube.science import instrument, needlets, sht
from cmbcube.stages import ilc, simulate
from helpers import rms, small_recipe, zarr_files


def test_polarisation_path_recovers_e_and_b():
    nside, lmax = 32, 95
    dets = [70, 100, 143, 217, 353]
    sigma = {70: 30.0, 100: 20.0, 143: 15.0, 217: 25.0, 353: 40.0}
    rng = np.random.default_rng(11)
    ell = np.arange(lmax + 1)
    flat = np.zeros(lmax + 1)
    flat[2:] = 2 * np.pi / (ell[2:] * (ell[2:] + 1.0))
    np.random.seed(11)
    truth = np.array(hp.synalm([2000 * flat, 300 * flat, 100 * flat, 0 * flat], lmax=lmax, new=True))
    nest = hp.ring2nest(nside, np.arange(12 * nside ** 2))
    obs = np.zeros((len(dets), 3, 12 * nside ** 2))
    for k, d in enumerate(dets):
        bl = instrument.gaussian_beam(instrument.detector(d).fwhm_arcmin, lmax)
        sky = sht.alm2map(sht.almxfl(truth, bl), nside)
        sky += rng.standard_normal(sky.shape) * sigma[d]
        obs[k][:, nest] = sky
    config = ilc.ILCConfig(method="nilc", detectors=tuple(dets), peaks=tuple(needlets.default_peaks(nside)))
    out = ilc.clean_sim(obs, dets, ["I", "Q", "U"], ["uK_CMB"] * 5, config, nside, "uK_CMB",
                        beams_arcmin=[instrument.detector(d).fwhm_arcmin for d in dets])
    ring = out[:, nest].astype(np.float64)
    got = sht.map2alm(ring, lmax, 3)
    common = instrument.gaussian_beam(20.6, lmax)
    nl = np.array([sigma[d] ** 2 * 4 * np.pi / (12 * nside ** 2) for d in dets])
    band = slice(40, 80)
    for k, name in ((0, "T"), (1, "E"), (2, "B")):
        resid = hp.alm2cl(got[k] - sht.almxfl(truth[k], common[k]))
        transfers = np.array([instrument.gaussian_beam(instrument.detector(d).fwhm_arcmin, lmax)[k] for d in dets])
        ideal = 1.0 / np.sum(transfers ** 2 / (common[k][None] ** 2 * nl[:, None]), axis=0)
        ratio = resid[band].sum() / ideal[band].sum()
        assert 0.85 < ratio < 1.2, (name, ratio)


@pytest.fixture(scope="module")
def ilc_store(tmp_path_factory, tiny_store):
    path = tmp_path_factory.mktemp("ilc") / "c.zarr"
    shutil.copytree(tiny_store, path)
    return str(path)


def test_stage_writes_predictions_resumes_and_beats_single_channels(ilc_store):
    config = ilc.ILCConfig(method="nilc")
    report = ilc.run(ilc_store, config, splits=("test", "valid"), scheduler="synchronous", progress=False)
    assert sorted(report.written) == [("test", 0), ("test", 1), ("valid", 0)] and not report.failed
    again = ilc.run(ilc_store, config, splits=("test", "valid"), scheduler="synchronous", progress=False)
    assert again.written == [] and again.already_done == 3
    hreport = ilc.run(ilc_store, ilc.ILCConfig(method="hilc"), splits=("test",), scheduler="synchronous")
    assert len(hreport.written) == 2
    ds = cmbcube.open(ilc_store)
    assert list(ds.run.values) == ["nilc", "hilc"] and float(ds.run_beam_fwhm_arcmin[0]) == 20.6
    assert ds.pred.sel(run="nilc", split="test", sim=0, field="I").shape == (12 * 16 ** 2,)
    assert int(ds.pred_done.sel(run="nilc").sum()) == 3 and int(ds.pred_done.sel(run="hilc").sum()) == 2
    # score against the truth at the common beam: NILC beats every single channel brought to that beam
    nside, lmax = 16, 47
    nest = hp.ring2nest(nside, np.arange(12 * nside ** 2))
    common = instrument.gaussian_beam(20.6, lmax)[0]

    def at_common(m, fwhm):
        alm = sht.map2alm(np.asarray(m, dtype=float)[nest], lmax, 3)
        return sht.alm2map(sht.almxfl(alm, common / instrument.gaussian_beam(fwhm, lmax)[0]), nside)

    truth = sht.alm2map(sht.almxfl(sht.map2alm(ds.cmb.sel(split="test", sim=0, field="I").values[nest].astype(float),
                                                lmax, 3), common), nside)
    nilc_resid = rms(ds.pred.sel(run="nilc", split="test", sim=0, field="I").values[nest] - truth)
    singles = [rms(at_common(ds.obs.sel(split="test", sim=0, detector=d, field="I").values,
                             instrument.detector(d).fwhm_arcmin) - truth) for d in (70, 100, 143, 217)]
    assert nilc_resid < min(singles), (nilc_resid, singles)


def test_same_bytes_with_one_process_and_two_workers(tmp_path, tiny_store):
    results = []
    for mode, workers in (("synchronous", None), (None, 2)):
        path = tmp_path / f"{mode}.zarr"
        shutil.copytree(tiny_store, path)
        ilc.run(str(path), ilc.ILCConfig(method="nilc", fields=("I",)), splits=("test", "train"),
                scheduler=mode, workers=workers, progress=False)
        results.append({k: v for k, v in zarr_files(path).items() if k.startswith("pred/c")})
    assert results[0] == results[1] and len(results[0]) == 5


def test_mixing_vector_is_right_in_native_units(tmp_path):
    base = dict(detectors=[70, 100, 143, 217, 353, 545], splits={"train": 0, "valid": 0, "test": 1}, keep=["cmb"],
                fields=["I"], foregrounds__components=["dust", "cib"])
    preds = {"nilc": [], "hilc": []}
    for units in ("uK_CMB", "native"):
        path = str(tmp_path / f"{units}.zarr")
        simulate.run(small_recipe(units=units, **base), path, scheduler="synchronous", progress=False)
        for method in preds:
            ilc.run(path, ilc.ILCConfig(method=method, detectors=(70, 100, 143, 217, 353, 545)),
                    scheduler="synchronous")
            ds = cmbcube.open(path)
            preds[method].append(ds.pred.sel(run=method, split="test", sim=0, field="I").values.astype(float))
    assert cmbcube.open(path).attrs["cmb_unit"] == "K_CMB"
    # same sky, same weights up to unit scaling: the K_CMB result is the uK_CMB result / 1e6
    # (HILC too, whose first bin's covariance holds the 545 GHz monopole in MJy/sr)
    for method, (uk, native) in preds.items():
        assert np.allclose(native * 1e6, uk, rtol=1e-3, atol=1e-3 * rms(uk)), method


def test_errors_and_run_mismatch(ilc_store):
    with pytest.raises(needlets.ILCError, match="^detectors: \\[150\\] not in the cube"):
        ilc.run(ilc_store, ilc.ILCConfig(detectors=(100, 150)), scheduler="synchronous")
    with pytest.raises(needlets.ILCError, match="strictly increasing"):
        ilc.run(ilc_store, ilc.ILCConfig(peaks=(0, 30, 20, 48)), scheduler="synchronous")
    with pytest.raises(needlets.ILCError, match="above lmax"):
        ilc.run(ilc_store, ilc.ILCConfig(peaks=(0, 30, 100)), scheduler="synchronous")
    with pytest.raises(needlets.ILCError, match="allowed: dust"):
        ilc.run(ilc_store, ilc.ILCConfig(deproject=("co",)), scheduler="synchronous")
    ilc.run(ilc_store, ilc.ILCConfig(method="nilc", fields=("I",)), run_name="mine", scheduler="synchronous")
    with pytest.raises(cmbcube.cube.RunMismatch, match="other settings"):
        ilc.run(ilc_store, ilc.ILCConfig(method="nilc", fields=("I",), bias_tolerance=0.01), run_name="mine",
                scheduler="synchronous")
    proc = subprocess.run([sys.executable, "-m", "cmbcube.cli", "ilc", ilc_store, "--peaks", "0,30,20,48"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "strictly increasing" in proc.stderr
