"""The report's figures (PNG): maps of truth, prediction and residual at a common beam, TT spectra against
theory, metric distributions.  Every function returns its figure(s) and writes them when given a path.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cmbcube.science import spectra as ss
from cmbcube.science.metrics import to_beam

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


def _mollweide(fig, ax, m_nest: np.ndarray, nside: int, title: str, lo: float, hi: float, cmap: str, label: str):
    """A NESTED map drawn with imshow on a Mollweide grid (our own axes, colour bar and limits)."""
    import healpy as hp
    import matplotlib
    proj = hp.projector.MollweideProj(xsize=400)
    img = proj.projmap(np.where(np.isfinite(m_nest), m_nest, hp.UNSEEN),
                       lambda x, y, z: hp.vec2pix(nside, x, y, z, nest=True))
    img = np.ma.masked_where(~np.isfinite(img) | (img == hp.UNSEEN), img)
    colours = matplotlib.colormaps[cmap].with_extremes(bad=(1.0, 1.0, 1.0, 0.0))
    im = ax.imshow(img, origin="lower", extent=(-2, 2, -1, 1), cmap=colours, vmin=lo, vmax=hi,
                   interpolation="nearest")
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


def map_figure(ds, run: str, split: str, sim: int, field: str, path: Path | None, beam: float | None = None):
    """Truth, prediction, residual (and sigma) of one sim, all at one common beam; returns the figure.

    Signed maps use symmetric limits on a diverging map (zero is white); the residual gets its own limit.
    """
    plt = _plt()
    nside = int(ds.attrs["nside"])
    unit = str(ds.cmb.attrs.get("units", ""))
    beam = common_map_beam(ds) if beam is None else float(beam)
    run_beam = float(ds.run_beam_fwhm_arcmin.sel(run=run))
    truth = ds.cmb.sel(split=split, sim=sim, field=field).values.astype(float)
    truth = to_beam(truth[None], [field], float(ds.cmb.attrs.get("beam_fwhm_arcmin", 0.0)), beam, nside)[0]
    pred = ds.pred.sel(run=run, split=split, sim=sim, field=field).values.astype(float)
    pred = to_beam(pred[None], [field], run_beam, beam, nside)[0]
    resid = pred - truth
    lim = _nice(float(np.nanpercentile(np.abs(truth), 99)))
    rlim = _nice(float(np.nanpercentile(np.abs(resid), 99)))
    at = f"{field}, at {beam:g}' FWHM"
    panels = [(f"truth ({at})", truth, -lim, lim, "RdBu_r"),
              (f"{run} ({at}; output {run_beam:g}')", pred, -lim, lim, "RdBu_r"),
              (f"residual {run} - truth ({at})", resid, -rlim, rlim, "RdBu_r")]
    if "pred_sigma" in ds and "run" in ds.pred_sigma.dims:
        sigma = ds.pred_sigma.sel(run=run, split=split, sim=sim, field=field).values.astype(float)
        if np.isfinite(sigma).all():
            panels.append((f"sigma ({field}, run's own {run_beam:g}')", sigma, 0.0,
                           _nice(float(np.nanpercentile(sigma, 99))), "viridis"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.0))
    fig.subplots_adjust(left=0.01, right=0.99, top=0.84, bottom=0.02, wspace=0.06)
    for ax, (title, m, lo, hi, cmap) in zip(np.atleast_1d(axes), panels):
        _mollweide(fig, ax, m, nside, title, lo, hi, cmap, f"{field} [{unit}]")
    fig.suptitle(f"{split} sim {sim}: maps at a common {beam:g}' beam", fontsize=10)
    if path is not None:
        fig.savefig(path, dpi=90, bbox_inches="tight")      # the colour bars' labels sit below the axes
    plt.close(fig)
    return fig


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
    """Box plots of MAE, RMSE (store units) and PSNR (dB) per run; returns the figure."""
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
        ax.boxplot(data, tick_labels=labels)
        ax.set_title(f"{LABELS[metric]} ({field}, {split}, common beam {beam:g}')", fontsize=9)
        ax.set_ylabel(metric_header(metric, units))
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    plt.close(fig)
    return fig
