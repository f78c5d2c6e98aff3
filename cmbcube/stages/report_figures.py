"""The report's figures (PNG): maps of truth, prediction and residual at a common beam, TT spectra against
theory, metric distributions.  Every function returns its figure(s) and writes them when given a path.

Residual maps of every run of a sim share one colour range (:func:`residual_limit`), so methods can be
compared by eye, and show the analysis mask: its outline on every map, its pixels grey in the residual
(the metrics use only the unmasked ones).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cmbcube import cube
from cmbcube.science import spectra as ss
from cmbcube.science.metrics import to_beam

# Components whose intensity (field I) is positive in the sky model: sequential colours, and the sky
# statistics' negative values in them are the band limit's ringing (report_sky.component_table)
POSITIVE_INTENSITY = ("dust", "synchrotron", "freefree", "ame", "cib", "radio")
MASKED_GREY = (0.72, 0.72, 0.72, 1.0)
LABELS = {"mae": "MAE", "mse": "MSE", "rmse": "RMSE", "nrmse": "NRMSE", "psnr": "PSNR", "r2": "R^2",
          "cl_err_truth": "dCl/Cl (truth)", "cl_err_theory": "dCl/Cl (theory)",
          "cover_1sigma": "1-sigma", "cover_2sigma": "2-sigma", "cover_3sigma": "3-sigma"}


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def metric_units(ds) -> dict[str, str]:
    """Unit of each metric: map units (the store's, uK_CMB by default), dB for PSNR, none for ratios."""
    unit = str(ds.cmb.attrs.get("units", "uK_CMB")) if ds is not None else "uK_CMB"
    return {"mae": unit, "mse": f"{unit}^2", "rmse": unit, "psnr": "dB"}


def metric_header(metric: str, units: dict) -> str:
    return f"{LABELS[metric]} [{units[metric]}]" if metric in units else LABELS[metric]


def _nice(x: float) -> float:
    """A round colour limit at or above x (two significant digits), so colour bar ticks stay short."""
    if not np.isfinite(x) or x <= 0:
        return 1.0
    scale = 10 ** np.floor(np.log10(x) - 1)
    return float(np.ceil(x / scale) * scale)


def _project(m_nest: np.ndarray, nside: int) -> np.ndarray:
    """A NESTED map on a 400-pixel-wide Mollweide grid: -inf outside the ellipse, UNSEEN where the map is NaN."""
    import healpy as hp
    proj = hp.projector.MollweideProj(xsize=400)
    return proj.projmap(np.where(np.isfinite(m_nest), m_nest, hp.UNSEEN),
                        lambda x, y, z: hp.vec2pix(nside, x, y, z, nest=True))


def _mollweide(fig, ax, m_nest: np.ndarray, nside: int, title: str, lo: float, hi: float, cmap: str, label: str,
               mask: np.ndarray | None = None, grey_masked: bool = False):
    """A NESTED map drawn with imshow on a Mollweide grid (our own axes, colour bar and limits).

    ``mask`` (NESTED, 1 = analysed): its outline is drawn; with ``grey_masked`` its masked pixels are grey
    instead of coloured.  Pixels without data are grey too; the image is clipped to the ellipse."""
    import healpy as hp
    import matplotlib
    from matplotlib.patches import Ellipse
    if mask is not None and grey_masked:
        m_nest = np.where(np.asarray(mask) > 0, m_nest, np.nan)
    img = _project(m_nest, nside)
    img = np.ma.masked_where(~np.isfinite(img) | (img == hp.UNSEEN), img)
    colours = matplotlib.colormaps[cmap].with_extremes(bad=MASKED_GREY)
    im = ax.imshow(img, origin="lower", extent=(-2, 2, -1, 1), cmap=colours, vmin=lo, vmax=hi,
                   interpolation="nearest")
    im.set_clip_path(Ellipse((0.0, 0.0), 4.0, 2.0, transform=ax.transData))    # grey stops at the sky's edge
    if mask is not None:
        kept = _project(np.asarray(mask, dtype=float), nside)
        kept = np.ma.masked_where(~np.isfinite(kept), kept)
        ny, nx = kept.shape
        x = np.linspace(-2, 2, nx + 1)[:-1] + 2.0 / nx             # pixel centres of the extent
        y = np.linspace(-1, 1, ny + 1)[:-1] + 1.0 / ny
        ax.contour(x, y, kept, levels=[0.5], colors="k", linewidths=0.6)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    ticks = [lo, 0.0, hi] if lo < 0 < hi else [lo, 0.5 * (lo + hi), hi]
    cb = fig.colorbar(im, ax=ax, orientation="horizontal", fraction=0.06, pad=0.04, ticks=ticks, format="%.3g")
    cb.set_label(label, fontsize=8)
    cb.ax.tick_params(labelsize=8)
    return im


def common_map_beam(ds) -> float:
    """The beam every map panel is shown at: the largest of the runs' and the truth's (nothing deconvolved)."""
    beams = [float(b) for b in np.atleast_1d(ds.run_beam_fwhm_arcmin.values) if np.isfinite(b)]
    return max(beams + [float(ds.cmb.attrs.get("beam_fwhm_arcmin", 0.0))])


def _maps(ds, run: str, split: str, sim: int, field: str, beam: float):
    """(truth, prediction) of one sim and run, both at ``beam``."""
    nside = cube.nside(ds)
    truth = ds.cmb.sel(split=split, sim=sim, field=field).values.astype(float)
    truth = to_beam(truth[None], [field], float(ds.cmb.attrs.get("beam_fwhm_arcmin", 0.0)), beam, nside)[0]
    pred = ds.pred.sel(run=run, split=split, sim=sim, field=field).values.astype(float)
    pred = to_beam(pred[None], [field], float(ds.run_beam_fwhm_arcmin.sel(run=run)), beam, nside)[0]
    return truth, pred


def _analysis_mask(ds) -> np.ndarray | None:
    return np.asarray(ds.mask.values) > 0 if "mask" in ds else None


def residual_limit(ds, runs, split: str, sim: int, field: str, beam: float) -> float:
    """The colour limit shared by the residual maps of ``runs`` (one sim): the largest of their 99th
    percentiles of |pred - truth| over the analysed pixels, rounded up; every run's map covers its own
    residual and a better method looks paler."""
    keep = _analysis_mask(ds)
    worst = 0.0
    for run in runs:
        truth, pred = _maps(ds, str(run), split, sim, field, beam)
        resid = np.abs(pred - truth)
        resid = resid[keep] if keep is not None else resid
        if np.isfinite(resid).any():
            worst = max(worst, float(np.nanpercentile(resid, 99)))
    return _nice(worst)


def map_figure(ds, run: str, split: str, sim: int, field: str, path: Path | None, beam: float | None = None,
               rlim: float | None = None):
    """Truth, prediction, residual (and sigma) of one sim, all at one common beam; returns the figure.

    Signed maps use symmetric limits on a diverging map (zero is white).  The residual's limit is ``rlim``,
    by default :func:`residual_limit` over every run holding a prediction of this sim, so the residual
    panels of all runs share one scale.  The analysis mask is outlined; its pixels are grey in the residual.
    """
    plt = _plt()
    nside = cube.nside(ds)
    unit = str(ds.cmb.attrs.get("units", ""))
    beam = common_map_beam(ds) if beam is None else float(beam)
    run_beam = float(ds.run_beam_fwhm_arcmin.sel(run=run))
    truth, pred = _maps(ds, run, split, sim, field, beam)
    resid = pred - truth
    if rlim is None:
        rlim = residual_limit(ds, runs_with_prediction(ds, split, sim, field), split, sim, field, beam)
    mask = _analysis_mask(ds)
    lim = _nice(float(np.nanpercentile(np.abs(truth), 99)))
    at = f"{field}, at {beam:g}' FWHM"
    panels = [(f"truth ({at})", truth, -lim, lim, "RdBu_r"),
              (f"{run} ({at}; output {run_beam:g}')", pred, -lim, lim, "RdBu_r"),
              (f"residual {run} - truth ({at}; masked: grey)", resid, -rlim, rlim, "RdBu_r")]
    if "pred_sigma" in ds and "run" in ds.pred_sigma.dims:
        sigma = ds.pred_sigma.sel(run=run, split=split, sim=sim, field=field).values.astype(float)
        if np.isfinite(sigma).all():
            panels.append((f"sigma ({field}, run's own {run_beam:g}')", sigma, 0.0,
                           _nice(float(np.nanpercentile(sigma, 99))), "viridis"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.0))
    fig.subplots_adjust(left=0.01, right=0.99, top=0.84, bottom=0.02, wspace=0.06)
    for k, (ax, (title, m, lo, hi, cmap)) in enumerate(zip(np.atleast_1d(axes), panels)):
        _mollweide(fig, ax, m, nside, title, lo, hi, cmap, f"{field} [{unit}]", mask, grey_masked=k == 2)
    fig.suptitle(f"{split} sim {sim}: maps at a common {beam:g}' beam; residual colours shared by every run; "
                 "black line: analysis mask edge", fontsize=10)
    if path is not None:
        fig.savefig(path, dpi=90, bbox_inches="tight")      # the colour bars' labels sit below the axes
    plt.close(fig)
    return fig


def runs_with_prediction(ds, split: str, sim: int, field: str) -> list[str]:
    """The runs holding a (finite) prediction of this sim and field."""
    out = []
    for run in np.atleast_1d(ds.run.values):
        m = ds.pred.sel(run=run, split=split, sim=sim, field=field).values
        if np.isfinite(m).any():
            out.append(str(run))
    return out


def _spectrum_note(ds, split: str, nsims: int) -> str:
    estimator = str(ds.spectra.attrs.get("estimator", "pseudo-fast"))
    return (f"{split} split, mean of {nsims} sim(s); mask f_sky = {float(ds.mask.mean()):.2f}\n"
            f"beams and pixel window deconvolved; {estimator} estimator")


def spectrum_figure(ds, split: str, path: Path | None, residual_path: Path | None):
    """D_ell of truth, theory and each run (with its ratio to the truth), and the residual spectra;
    returns the two figures."""
    plt = _plt()
    unit = str(ds.cmb.attrs.get("units", "uK_CMB"))
    width = int(ds.ell_bin.attrs.get("bin_width", 10))
    ell = ds.ell_bin.values + 0.5 * width - 0.5
    fac = ell * (ell + 1) / (2 * np.pi)
    done = ds.analysis_done.sel(split=split).values.astype(bool)
    fig, (ax, axd) = plt.subplots(2, 1, figsize=(8, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    first = int(np.nonzero(done.any(axis=0))[0][0])
    truth = ds.spectra.isel(run=int(np.nonzero(done[:, first])[0][0])).sel(split=split, kind="truth", spectrum="TT")
    sims = np.nonzero(done.any(axis=0))[0]
    t_mean = np.nanmean(truth.isel(sim=sims).values, axis=0)
    theory = ds.cl_theory.sel(split=split, spectrum="TT").isel(sim=sims).mean("sim").values
    th_b = ss.bin_means(theory, ds.ell_bin.values, width)
    theory_label = "theory (mean over sims)"
    if "spectra_window" in ds and ds.spectra.attrs.get("estimator") == "namaster":
        # what NaMaster's bandpowers estimate: the theory through their windows (spectrum_in: TT, EE, BB, TE)
        cl_all = ds.cl_theory.sel(split=split).isel(sim=sims).mean("sim").values   # (spectrum, ell)
        th_b = ss.window_theory(ds.spectra_window.values, np.nan_to_num(cl_all))[0]
        theory_label = "theory through the bandpower windows (mean over sims)"
    nmodes = (2 * ell + 1) * width * float(ds.mask.mean())
    cv = th_b * np.sqrt(2 / nmodes / max(len(sims), 1))
    ax.fill_between(ell, fac * (th_b - cv), fac * (th_b + cv), color="0.85", label="theory +- cosmic variance")
    ax.plot(ell, fac * th_b, "k-", lw=1, label=theory_label)
    ax.plot(ell, fac * t_mean, "ko", ms=3, label="truth")
    fig2, ax2 = plt.subplots(figsize=(8, 4.4))
    for r, run in enumerate(ds.run.values):
        if not done[r].any():
            continue
        sel = np.nonzero(done[r])[0]
        p = np.nanmean(ds.spectra.isel(run=r, sim=sel).sel(split=split, kind="pred", spectrum="TT").values, axis=0)
        res = np.nanmean(ds.spectra.isel(run=r, sim=sel).sel(split=split, kind="resid", spectrum="TT").values, axis=0)
        line = ax.plot(ell, fac * p, "-", label=str(run))[0]
        axd.plot(ell, 100 * (p - t_mean) / t_mean, "-", color=line.get_color())
        ax2.plot(ell, fac * res, "-", color=line.get_color(), label=str(run))
    note = _spectrum_note(ds, split, len(sims))
    ax.set_title(f"TT power spectra of truth and predictions\n{note}", fontsize=10)
    ax.set_ylabel(rf"$D_\ell^{{TT}}$ [{unit}$^2$]")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    axd.axhline(0, color="k", lw=0.5)
    axd.axhline(-50, color="0.5", lw=0.5, ls=":")
    axd.set_ylabel(r"$\Delta D_\ell / D_\ell^{truth}$ [%]")
    axd.set_xlabel(rf"$\ell$ (bins of {width})")
    fig.tight_layout()
    ax2.set_title(f"TT power spectra of the residuals (prediction - truth)\n{note}", fontsize=10)
    ax2.set_yscale("log")
    ax2.set_xlabel(rf"$\ell$ (bins of {width})")
    ax2.set_ylabel(rf"residual $D_\ell^{{TT}}$ [{unit}$^2$]")
    ax2.legend(fontsize=8)
    fig2.tight_layout()
    for f, where in ((fig, path), (fig2, residual_path)):
        if where is not None:
            f.savefig(where, dpi=100)
        plt.close(f)
    return fig, fig2


def distribution_figure(ds, split: str, field: str, beam: float, path: Path | None):
    """Box plots of MAE, RMSE (store units) and PSNR (dB) per run with every sim's value drawn on top
    (a box of a few sims hides them); returns the figure."""
    plt = _plt()
    units = metric_units(ds)
    done = ds.analysis_done.sel(split=split).values.astype(bool)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    for ax, metric in zip(axes, ("mae", "rmse", "psnr")):
        data, labels = [], []
        for r, run in enumerate(ds.run.values):
            sims = np.nonzero(done[r])[0]
            if sims.size:
                data.append(ds.metrics.isel(run=r, sim=sims).sel(split=split, field=field, beam=beam,
                                                                 metric=metric).values)
                labels.append(str(run))
        ax.boxplot(data, tick_labels=labels, showfliers=False)     # every point is drawn below
        for k, values in enumerate(data):
            values = np.asarray(values, dtype=float)
            jitter = np.linspace(-0.12, 0.12, values.size) if values.size > 1 else np.zeros(1)
            ax.plot(k + 1 + jitter, values, "o", ms=3.5, color="C0", alpha=0.7, zorder=3)
        ax.set_title(f"{LABELS[metric]} ({field}, {split}, common beam {beam:g}')", fontsize=9)
        ax.set_ylabel(metric_header(metric, units))
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    plt.close(fig)
    return fig


def learning_curve_figure(train, valid, title: str, path: Path | None = None, best: int | None = None,
                          stopped: int | None = None):
    """Training and validation loss per epoch (log y; symlog where a loss goes negative, as the
    heteroscedastic one does), the best epoch (the checkpoint predict uses by default) and an early stop
    marked by vertical lines; lines carry gids ``train``, ``valid``, ``best``, ``stop``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    train = np.asarray(train, dtype=float)
    valid = np.asarray(valid, dtype=float)[: train.size]
    epochs = np.arange(1, train.size + 1)
    ax.plot(epochs, train, "o-", ms=3, label="train", gid="train")
    if np.isfinite(valid).any():
        ax.plot(epochs[: valid.size], valid, "s-", ms=3, label="valid", gid="valid")
    if best:
        ax.axvline(best, color="tab:green", ls="--", label=f"best epoch {best} (predicts)", gid="best")
    if stopped:
        ax.axvline(stopped, color="tab:red", ls=":", label=f"early stop at epoch {stopped}", gid="stop")
    values = np.concatenate([train, valid])
    values = values[np.isfinite(values)]
    if values.size and values.min() > 0:
        ax.set_yscale("log")
    else:
        ax.set_yscale("symlog", linthresh=1.0)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (transformed target)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=90)
        plt.close(fig)
    return fig


def learning_curves(rows, out: Path) -> dict[str, str]:
    """Write one learning-curve PNG per trained run of report.training_rows; {run: file name}."""
    names = {}
    for row in rows:
        if row.get("trained"):
            name = f"learning_curve_{cube.safe_name(row['run'])}.png"
            learning_curve_figure(row["train_losses"], row["valid_losses"], f"{row['run']}: loss per epoch",
                                  Path(out) / name, row.get("best_epoch"), row.get("stopped_epoch"))
            names[row["run"]] = name
    return names
