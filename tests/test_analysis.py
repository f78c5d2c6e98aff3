import shutil
import subprocess
import sys

import healpy as hp
import numpy as np
import pytest

import cmbcube
from cmbcube.science import instrument, metrics, pixwin, sht, spectra
from cmbcube.stages import analyze, ilc, report


def test_metrics_equal_hand_computed_values():
    t = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([1.5, 2.0, 2.0, 5.0])
    m = metrics.pixel_metrics(t, p)
    assert m["mae"] == pytest.approx((0.5 + 0 + 1 + 1) / 4)
    assert m["mse"] == pytest.approx((0.25 + 0 + 1 + 1) / 4)
    assert m["rmse"] == pytest.approx(np.sqrt(2.25 / 4))
    assert m["nrmse"] == pytest.approx(np.sqrt(2.25) / np.sqrt(30))
    assert m["psnr"] == pytest.approx(10 * np.log10(4.0 ** 2 / (2.25 / 4)))     # range 1..5 over both
    assert m["r2"] == pytest.approx(1 - 2.25 / 5.0)
    perfect = metrics.pixel_metrics(t, t)
    assert perfect["mae"] == 0 and perfect["rmse"] == 0 and perfect["psnr"] == np.inf and perfect["r2"] == 1


def test_mask_and_dipole_removal_remove_an_injected_monopole_and_dipole():
    nside = 16
    rng = np.random.default_rng(0)
    base = rng.standard_normal(12 * nside ** 2)
    vec = np.array(hp.pix2vec(nside, np.arange(12 * nside ** 2), nest=True))
    injected = base + 7.0 + vec.T @ np.array([3.0, -2.0, 5.0])
    mask = np.abs(90 - np.degrees(hp.pix2ang(nside, np.arange(12 * nside ** 2), nest=True)[0])) > 20
    a = metrics.remove_monopole_dipole(injected, mask)
    b = metrics.remove_monopole_dipole(base, mask)
    assert np.allclose(a, b, atol=1e-10)
    fg = np.where(mask, 1.0, 100.0) + rng.random(12 * nside ** 2)
    m = metrics.galactic_mask(fg, 0.6)
    assert m.mean() == pytest.approx(0.6, abs=0.02)
    apod = metrics.apodize(m, 300)
    assert apod.max() <= 1 and np.all(apod[~m] == 0) and 0 < apod[m].mean() < 1


def test_pixel_window_and_beam_deconvolution_recover_the_input_spectrum():
    nside, lmax = 32, 95
    ell = np.arange(lmax + 1)
    cl = np.zeros(lmax + 1)
    cl[2:] = 1000 * 2 * np.pi / (ell[2:] * (ell[2:] + 1.0))
    bins = spectra.ell_bins(nside)
    np.random.seed(3)
    est = []
    for _ in range(12):
        alm = hp.synalm(cl, lmax=lmax)
        t = sht.almxfl(alm, instrument.gaussian_beam(60, lmax)[0] * pixwin.pixel_window(nside))
        m = hp.reorder(sht.alm2map(t, nside), r2n=True)
        est.append(spectra.pseudo_spectra(m[None], m[None], ["I"], np.ones(m.size), 60, 60, nside, True, bins)[0])
        raw = spectra.pseudo_spectra(m[None], m[None], ["I"], np.ones(m.size), 0, 0, nside, False, bins)[0]
    expected = np.array([cl[lo:hi].mean() for lo, hi in zip(bins[:-1], bins[1:])])
    ratio = np.mean(est, axis=0) / expected
    nmodes = np.array([np.sum(2 * ell[lo:hi] + 1) for lo, hi in zip(bins[:-1], bins[1:])]) * 12
    assert np.all(np.abs(ratio - 1) < 4 * np.sqrt(2 / nmodes)), ratio
    assert raw[-1] < 0.8 * expected[-1]          # without deconvolution the beam and window are obvious


@pytest.fixture(scope="module")
def analysed(tmp_path_factory, tiny_store):
    path = str(tmp_path_factory.mktemp("an") / "a.zarr")
    shutil.copytree(tiny_store, path)
    ilc.run(path, ilc.ILCConfig(method="nilc"), splits=("test",), scheduler="synchronous")
    rep = analyze.run(path, scheduler="synchronous")
    assert len(rep.written) == 2 and not rep.failed
    return path


def test_analysis_in_the_cube_and_resume(analysed):
    ds = cmbcube.open(analysed)
    m = ds.metrics.sel(run="nilc", split="test", sim=0, field="I")
    assert m.shape == (3, len(metrics.METRICS))
    # every metric is finite; the calibration coverage exists only for runs with a per-pixel sigma (NILC: none)
    assert np.isfinite(m.drop_sel(metric=list(metrics.COVERAGE)).values).all()
    assert np.isnan(m.sel(metric=list(metrics.COVERAGE)).values).all()
    # spectrum metrics: NILC's spectrum is close to the realisation's, further from the theory (cosmic variance)
    err_truth = float(m.sel(metric="cl_err_truth").isel(beam=0))
    assert 0 <= err_truth < 0.5 and float(m.sel(metric="cl_err_theory").isel(beam=0)) > 0
    # NILC's output carries 20.6': taking it to no beam deconvolves noise up, errors grow
    mae = m.sel(metric="mae").values
    assert mae[0] > mae[1]
    assert 0.5 < float(m.sel(metric="r2").isel(beam=2)) <= 1
    s = ds.spectra.sel(run="nilc", split="test", sim=0, spectrum="TT")
    assert np.all(s.sel(kind="truth").values > 0)
    assert np.isfinite(ds.spectra.sel(run="nilc", split="test", sim=0, spectrum="EE", kind="truth").values).all()
    assert float(ds.mask.mean()) == pytest.approx(0.8, abs=0.02)
    again = analyze.run(analysed, scheduler="synchronous")
    assert again.written == [] and again.already_done == 2


def test_report_for_a_store_with_one_method(analysed, tmp_path):
    page = report.run(analysed, str(tmp_path / "rep")).page
    text = page.read_text()
    assert "nilc" in text and "MAE" in text
    for name in ("metrics_I_beam20p6.md", "metrics_I_beam20p6.csv", "metrics_I_beam20p6.tex", "spectra_TT_test.png",
                 "residual_spectra_TT_test.png", "map_nilc_test_0000_I.png", "metric_distributions_I.png",
                 "sky_statistics.md"):
        assert (tmp_path / "rep" / name).stat().st_size > 100, name
        assert name in text or name.endswith((".csv", ".tex"))
    csv = (tmp_path / "rep" / "metrics_I_beam0.csv").read_text().splitlines()
    assert csv[0].startswith("run,method,sims,mae_mean") and csv[1].startswith("nilc,nilc,2,")


def test_view_and_errors(analysed, tmp_path):
    cli = [sys.executable, "-m", "cmbcube.cli", "view", analysed]
    proc = subprocess.run(cli + ["--detector", "30", "--product", "radio", "--rot", "10,20", "--out",
                                 str(tmp_path / "z.png")], capture_output=True, text=True)
    assert proc.returncode == 0 and (tmp_path / "z.png").stat().st_size > 1000
    proc = subprocess.run(cli + ["--product", "pred"], capture_output=True, text=True)
    assert proc.returncode == 2 and "allowed: nilc" in proc.stderr
    proc = subprocess.run(cli + ["--product", "obs", "--detector", "545", "--field", "Q"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "no data" in proc.stderr


def test_cmbcube_run_end_to_end_then_quick_rerun(tmp_path):
    """The README's main job on a tiny quickstart: every stage, the report, then a skip-everything rerun."""
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    store = tmp_path / "q.zarr"
    args = [sys.executable, "-m", "cmbcube.cli", "run", str(root / "recipes" / "quickstart.yaml"),
            "--store", str(store), "--set", "splits={train: 2, valid: 1, test: 1}", "--set", "fields=[I]",
            "--set", "keep=[cmb]",
            "--set", "foregrounds.components=[dust, synchrotron]", "--set", "pipeline.epochs=1",
            "--scheduler", "synchronous", "--no-progress"]
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = tmp_path / "q.report" / "index.md"
    assert f"report: {page}" in proc.stdout and page.exists()
    text = page.read_text()
    for run in ("nilc", "hilc", "cmbnncs-unet5"):
        assert f"| {run} |" in text
    rerun = subprocess.run(args, capture_output=True, text=True)
    assert rerun.returncode == 0
    assert "simulate: 0 new sim(s)" in rerun.stdout and "already trained" in rerun.stdout
    assert "analyze: 0 new" in rerun.stdout
    # another pipeline.epochs is not "already trained": refused, naming both numbers and the way out
    other = subprocess.run(args + ["--set", "pipeline.epochs=2"], capture_output=True, text=True)
    assert other.returncode == 2 and "was trained for 1 epochs and the recipe asks for 2" in other.stderr, \
        other.stderr[-2000:]


def test_foreground_mask_is_the_same_in_any_unit(tmp_path):
    import zarr

    from cmbcube.stages import simulate
    from helpers import small_recipe
    masks = []
    for units in ("uK_CMB", "K_CMB"):
        path = str(tmp_path / f"{units}.zarr")
        simulate.run(small_recipe(units=units, fields=["I"], keep=["cmb"], splits={"train": 1, "valid": 0, "test": 0}),
                     path, scheduler="synchronous", progress=False)
        analyze.build_masks(path, 0.8)
        masks.append(np.asarray(zarr.open_group(path, mode="r")["mask"][...]))
    assert np.mean(masks[0] == masks[1]) > 0.99
