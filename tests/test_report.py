"""The report explains itself: units on every figure and table, symmetric residual colours, one beam for
all map panels, and a per-run account of training that flags an undertrained network."""
import re
import shutil

import numpy as np
import pytest

import cmbcube
from cmbcube.stages import analyze, ilc, predict, report, report_figures, train


@pytest.fixture(scope="module")
def reported(tmp_path_factory, tiny_store):
    """NILC (20.6') and a deliberately short patch-UNet run (4 epochs at a small learning rate, 3 skies, its own
    beam 0'), analysed."""
    path = str(tmp_path_factory.mktemp("rep") / "r.zarr")
    shutil.copytree(tiny_store, path)
    ilc.run(path, ilc.ILCConfig(method="nilc"), splits=("test",), scheduler="synchronous")
    config = train.TrainConfig(model="patch-unet", detectors=(100, 143, 217), transform="scale:100",
                               target_transform="scale:100", epochs=4, batch_size=8, repeats=1, lr_start=1e-4,
                               lr_end=1e-4, patch_side=8)
    train.run(path, config, "short", progress=False)
    predict.run(path, "short", splits=("test",), progress=False)
    assert not analyze.run(path, scheduler="synchronous").failed
    return path


def _digits(text):
    return len(re.sub(r"[^0-9]", "", text.lstrip("-").split("e")[0].lstrip("0.")))


def test_map_panels_share_one_beam_and_residuals_are_symmetric(reported):
    ds = cmbcube.open(reported)
    fig = report_figures.map_figure(ds, "short", "test", 0, "I", None)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    # the network's 0' output is shown at NILC's 20.6', and every panel title says so
    assert len(titles) == 3 and all("at 20.6' FWHM" in t for t in titles), titles
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert len(images) == 3
    for im in images:
        lo, hi = im.get_clim()
        assert lo == -hi and hi > 0                       # symmetric: zero sits at the middle colour
        assert im.get_cmap().name.startswith("RdBu_r")    # diverging, white in the middle
        mid = im.get_cmap()(0.5)
        assert min(mid[:3]) > 0.9                         # zero is (nearly) white
    resid = images[2]
    data = np.ma.compressed(resid.get_array())
    assert resid.get_clim()[1] >= np.percentile(np.abs(data), 98)     # the range covers the residual
    colorbars = [ax for ax in fig.axes if ax.get_xlabel() or ax.get_ylabel()]
    assert len(colorbars) == 3 and all("uK_CMB" in ax.get_xlabel() for ax in colorbars)
    for ax in colorbars:
        fig.canvas.draw()
        labels = [t.get_text().replace("\u2212", "-") for t in ax.get_xticklabels() if t.get_text()]
        assert labels and all(_digits(t) <= 3 for t in labels), labels


def test_spectrum_and_distribution_figures_carry_units_titles_mask_and_beam(reported):
    ds = cmbcube.open(reported)
    fig, fig2 = report_figures.spectrum_figure(ds, "test", None, None)
    top = fig.axes[0]
    assert "uK_CMB" in top.get_ylabel() and "f_sky = 0.80" in top.get_title() and "deconvolved" in top.get_title()
    assert "uK_CMB" in fig2.axes[0].get_ylabel() and "f_sky" in fig2.axes[0].get_title()
    fig = report_figures.distribution_figure(ds.assign_coords(beam=ds.beam_fwhm.values), "test", "I", 20.6, None)
    ylabels = [ax.get_ylabel() for ax in fig.axes]
    assert ylabels == ["MAE [uK_CMB]", "RMSE [uK_CMB]", "PSNR [dB]"]


def test_report_tables_have_units_and_training_summary_flags_the_short_run(reported, tmp_path):
    page = report.run(reported, str(tmp_path / "rep")).page
    text = page.read_text()
    table = (tmp_path / "rep" / "metrics_I_beam20p6.md").read_text()
    header = table.splitlines()[2]
    assert "MAE [uK_CMB]" in header and "PSNR [dB]" in header and "MSE [uK_CMB^2]" in header
    assert "| method |" not in header                     # run and method no longer repeat each other
    assert "| short (patch-unet) |" in table and "| nilc |" in table
    assert "[uK_CMB]" in (tmp_path / "rep" / "metrics_I_beam20p6.tex").read_text().replace("\\_", "_")
    sky = (tmp_path / "rep" / "sky_statistics.md").read_text()
    assert "| unit |" in sky and "| dust | 100 | I | uK_CMB |" in sky
    # how each run was made: 3 training skies, 4 epochs, flagged in words; NILC is not trained and not flagged
    assert "| short (patch-unet) | 3 | 4 |" in text
    assert "**short: undertrained**: trained on 3 skies for 4 epochs; validation loss still falling" in text
    assert "| nilc | not trained |" in text and "**nilc" not in text
    assert "[learning curve](learning_curve_short.png)" in text                  # one figure per trained run
    assert (tmp_path / "rep" / "learning_curve_short.png").stat().st_size > 1000
    rows = {r["run"]: r for r in report.training_rows(cmbcube.open(reported), "test")}
    assert rows["short"]["skies"] == 3 and not rows["short"]["skies_inferred"]    # recorded at train time
    assert rows["short"]["flags"] and not rows["nilc"]["flags"]
    assert rows["nilc"]["power_ratio"] > 0.5
    # the ranking: each run's mean MAE over the test sims, and the paired difference with the best run,
    # recomputed here from the metrics cmbcube.open returns
    assert "## Ranking" in text and "| rank | run | sims | mean [95%] |" in text
    ds = cmbcube.open(reported)
    mae = ds.metrics.sel(split="test", field="I", metric="mae").isel(beam=1).values     # beam index 1: 20.6'
    done = ds.analysis_done.sel(split="test").values.astype(bool)
    mean = {str(run): mae[r][done[r]] for r, run in enumerate(ds.run.values)}
    csv = [line.split(",") for line in (tmp_path / "rep" / "ranking_I.csv").read_text().splitlines()[1:]]
    got = {(row[0], row[1]): row for row in csv}
    best = min(mean, key=lambda run: mean[run].mean())
    other = ({"nilc", "short"} - {best}).pop()
    assert float(got["mae", best][3]) == pytest.approx(mean[best].mean(), rel=1e-5)
    assert float(got["mae", other][6]) == pytest.approx((mean[other] - mean[best]).mean(), rel=1e-5)
    low, high = float(got["mae", best][4]), float(got["mae", best][5])
    assert mean[best].min() - 1e-6 <= low <= mean[best].mean() <= high <= mean[best].max() + 1e-6


def test_still_falling_tells_a_settled_curve_from_a_falling_one():
    settled = 5 + 1000 * np.exp(-np.arange(30.0))           # flat for the last 25 epochs
    falling = 5 + 10 * np.exp(-np.arange(30.0) / 30)         # still dropping ~2%/epoch at the end
    assert report.still_falling(settled)[0] is False
    flag, words = report.still_falling(falling)
    assert flag and "still falling" in words
    assert report.still_falling([3.0])[0] is True           # one epoch: cannot have settled
    assert report.still_falling([-2.0, -2.5, -2.9, -3.4])[0] is True   # negative (heteroscedastic) losses


def test_view_writes_without_healpy_warnings_and_sizes_the_zoom_from_nside(reported, tmp_path):
    import subprocess
    import sys

    from cmbcube.stages import view
    cli = [sys.executable, "-m", "cmbcube.cli", "view", reported]     # default warning filters, as a user runs it
    for extra in (["--detector", "30", "--product", "radio", "--rot", "30,40"], ["--product", "cmb"]):
        out = tmp_path / f"{extra[-1].replace(',', '_')}.png"
        proc = subprocess.run(cli + extra + ["--out", str(out)], capture_output=True, text=True)
        assert proc.returncode == 0 and out.stat().st_size > 1000, proc.stderr
        assert "Warning" not in proc.stderr and "already exists" not in proc.stderr, proc.stderr
    reso, xsize = view.zoom_size(16)          # a ~40 degree field at nside 16, not the ~275 degrees of before
    assert 10 <= reso * xsize / 60 <= 40
    assert 2.9 <= view.zoom_size(2048)[0] * 800 / 60 <= 3.1
    ds = cmbcube.open(reported)
    lo, hi, cmap = view.limits(ds.cmb.sel(split="test", sim=0, field="I").values)
    assert lo == -hi and cmap == "RdBu_r"                 # signed: symmetric about zero
    lo, hi, cmap = view.limits(np.abs(ds.cmb.sel(split="test", sim=0, field="I").values) + 1)
    assert 0 < lo < hi and cmap == "viridis"              # one-signed: its own range


def test_train_shows_its_losses_inline_on_the_epoch_bar(reported, capsys):
    config = train.TrainConfig(model="patch-unet", detectors=(100, 143, 217), transform="scale:100",
                               target_transform="scale:100", epochs=2, batch_size=8, repeats=1, lr_start=1e-4,
                               lr_end=1e-4, patch_side=8)
    rep = train.run(reported, config, "bar", progress=True)
    err = capsys.readouterr().err
    assert "train bar: 100%" in err and "| 2/2 [" in err
    assert f"train={rep.train_loss[-1]:.4g}" in err and f"valid={rep.valid_loss[-1]:.4g}" in err
    assert "epoch 1/2" in err and "batch" in err          # the batch bar of each epoch, with its running loss
