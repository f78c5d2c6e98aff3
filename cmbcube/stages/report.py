"""The report: summary tables (Markdown, CSV, LaTeX) and figures (PNG) from the cube's
metrics and spectra, with an index page.  File names are deterministic.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from cmbcube import cube
from cmbcube.stages.analysis import BEAMS, COVERAGE, GAUSSIAN_COVERAGE, METRICS

LABELS = {"mae": "MAE", "mse": "MSE", "rmse": "RMSE", "nrmse": "NRMSE", "psnr": "PSNR", "r2": "R^2",
          "cl_err_truth": "dCl/Cl (truth)", "cl_err_theory": "dCl/Cl (theory)",
          "cover_1sigma": "1-sigma", "cover_2sigma": "2-sigma", "cover_3sigma": "3-sigma"}
TABLE_METRICS = tuple(m for m in METRICS if m not in COVERAGE)     # calibration has its own table


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def summary_rows(ds, split: str, field: str, beam: float):
    rows = []
    m = ds.metrics.sel(split=split, field=field).sel(beam=list(BEAMS).index(beam) if "beam" not in ds.coords
                                                     else beam)
    done = ds.analysis_done.sel(split=split).values.astype(bool)
    for r, run in enumerate(ds.run.values):
        sims = np.nonzero(done[r])[0]
        if not sims.size:
            continue
        values = m.isel(run=r, sim=sims).values            # (sim, metric)
        row = {"run": str(run), "method": str(ds.run_method.values[r]), "sims": int(sims.size)}
        for k, name in enumerate(METRICS):
            if k >= values.shape[1]:                       # a store analysed before this metric existed
                row[name] = (float("nan"), 0.0)
                continue
            col = values[:, k]
            finite = col[np.isfinite(col)]
            row[name] = (float(np.mean(finite)), float(np.std(finite))) if finite.size else (float("inf"), 0.0)
        rows.append(row)
    return rows


def metric_units(ds) -> dict[str, str]:
    """Unit of each metric: map units (the store's, uK_CMB by default), dB for PSNR, none for ratios."""
    unit = str(ds.cmb.attrs.get("units", "uK_CMB")) if ds is not None else "uK_CMB"
    return {"mae": unit, "mse": f"{unit}^2", "rmse": unit, "psnr": "dB"}


def _header(metric: str, units: dict) -> str:
    return f"{LABELS[metric]} [{units[metric]}]" if metric in units else LABELS[metric]


def _run_label(row) -> str:
    """The run's name, with its method only where the two differ (no column repeating the other)."""
    return row["run"] if row["method"] == row["run"] else f"{row['run']} ({row['method']})"


def _fmt(mean, std):
    if np.isnan(mean):
        return "n/a"
    if not np.isfinite(mean):
        return "inf"
    digits = 4 if abs(mean) < 1 else 2
    return f"{mean:.{digits}f} +- {std:.{digits}f}"


def write_tables(rows, out: Path, stem: str, caption: str, units: dict | None = None) -> list[Path]:
    units = metric_units(None) if units is None else units
    md = [f"**{caption}**", "", "| run | sims | " + " | ".join(_header(m, units) for m in TABLE_METRICS) + " |",
          "|---|---|" + "---|" * len(TABLE_METRICS)]
    for row in rows:
        md.append(f"| {_run_label(row)} | {row['sims']} | " + " | ".join(_fmt(*row[m]) for m in TABLE_METRICS) + " |")
    (out / f"{stem}.md").write_text("\n".join(md) + "\n")
    _write_csv(out / f"{stem}.csv", rows, TABLE_METRICS)
    tex = ["\\begin{table}", "\\centering", f"\\caption{{{caption}}}",
           "\\begin{tabular}{l" + "c" * len(TABLE_METRICS) + "}", "\\hline",
           "Run & " + " & ".join(_header(m, units).replace("^2", "$^2$").replace("_", "\\_")
                                 for m in TABLE_METRICS) + " \\\\", "\\hline"]
    for row in rows:
        tex.append(_run_label(row).replace("_", "\\_") + " & " + " & ".join(
            _fmt(*row[m]).replace("+-", "$\\pm$") for m in TABLE_METRICS) + " \\\\")
    tex += ["\\hline", "\\end{tabular}", "\\end{table}"]
    (out / f"{stem}.tex").write_text("\n".join(tex) + "\n")
    return [out / f"{stem}.{ext}" for ext in ("md", "csv", "tex")]


def _write_csv(path: Path, rows, metrics) -> None:
    """One line per run: run, method, sims, then mean and std of each metric (machine-readable: both names)."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["run", "method", "sims"] + [f"{m}_{s}" for m in metrics for s in ("mean", "std")])
        for row in rows:
            writer.writerow([row["run"], row["method"], row["sims"]] + [v for m in metrics for v in row[m]])


def calibration_table(rows, out: Path, stem: str, caption: str) -> list[Path] | None:
    """Coverage of the runs that give a per-pixel sigma (Markdown and CSV); None if no run does."""
    rows = [r for r in rows if all(np.isfinite(r[m][0]) for m in COVERAGE)]
    if not rows:
        return None
    md = [f"**{caption}**", "", "| run | sims | " + " | ".join(
        f"within {LABELS[m]} [% of pixels] (Gaussian {100 * GAUSSIAN_COVERAGE[m]:.1f}%)" for m in COVERAGE) + " |",
        "|---|---|" + "---|" * len(COVERAGE)]
    for row in rows:
        md.append(f"| {_run_label(row)} | {row['sims']} | " + " | ".join(
            f"{100 * row[m][0]:.1f}% +- {100 * row[m][1]:.1f}" for m in COVERAGE) + " |")
    (out / f"{stem}.md").write_text("\n".join(md) + "\n")
    _write_csv(out / f"{stem}.csv", rows, COVERAGE)
    return [out / f"{stem}.md", out / f"{stem}.csv"]


# ----------------------------------------------------------------------------- how each run was made
STILL_FALLING = 0.01       # validation loss: > 1% lower over the last epochs than over the ones before
POWER_LOST = 0.5           # flag: less than half the truth's TT power in some bin at ell < 2 nside


def still_falling(valid) -> tuple[bool, str]:
    """Whether a validation-loss curve is still falling at its end, and the evidence in words.

    Compares the mean of the last k epochs with the mean of the k before (k = a quarter of the
    epochs, 1 to 5): more than 1% lower means training stopped before the loss settled.
    """
    v = np.asarray([x for x in valid if np.isfinite(x)], dtype=float)
    if v.size < 2:
        return v.size == 1, "a single epoch: too short to tell whether the validation loss settled"
    k = int(min(5, max(1, v.size // 4)))
    k = min(k, v.size // 2)
    last, before = float(v[-k:].mean()), float(v[-2 * k:-k].mean())
    drop = (before - last) / max(abs(before), 1e-30)
    span, prev = (f"the last {k} epochs", f"the {k} before") if k > 1 else ("the last epoch", "the one before")
    if drop > STILL_FALLING:
        return True, f"validation loss still falling ({100 * drop:.1f}% lower over {span} than over {prev})"
    if drop < -STILL_FALLING:
        return False, f"validation loss rising at the end ({100 * -drop:.1f}% higher over {span} than over {prev})"
    return False, f"validation loss flat at the end ({round(100 * -drop, 1) + 0.0:+.1f}% over {span})"


def power_loss(ds, run_index: int, split: str) -> tuple[float, float, float]:
    """(smallest TT power ratio pred/truth among the bins at ell < 2 nside, its bin's first and last ell)."""
    done = ds.analysis_done.sel(split=split).values.astype(bool)[run_index]
    sims = np.nonzero(done)[0]
    if not sims.size or "spectra" not in ds:
        return float("nan"), float("nan"), float("nan")
    spec = ds.spectra.isel(run=run_index, sim=sims).sel(split=split, spectrum="TT")
    p = np.nanmean(spec.sel(kind="pred").values, axis=0)
    t = np.nanmean(spec.sel(kind="truth").values, axis=0)
    width = int(ds.ell_bin.attrs.get("bin_width", 10))
    lo = ds.ell_bin.values
    keep = (lo < 2 * int(ds.attrs["nside"])) & np.isfinite(p) & np.isfinite(t) & (t > 0)
    if not keep.any():
        return float("nan"), float("nan"), float("nan")
    ratio = np.where(keep, p / np.where(t > 0, t, 1.0), np.inf)
    b = int(np.argmin(ratio))
    return float(ratio[b]), float(lo[b]), float(lo[b] + width - 1)


def training_rows(ds, split: str) -> list[dict]:
    """Per run: how it was made (trained: skies, epochs, final losses) and flags in words."""
    import json
    rows = []
    nside = int(ds.attrs["nside"])
    train_done = int(ds.sim_done.sel(split="train").values.astype(bool).sum()) if "sim_done" in ds else 0
    for r, run in enumerate(ds.run.values):
        method = str(ds.run_method.values[r])
        try:
            config = json.loads(str(ds.run_config.values[r]))
        except ValueError:
            config = {}
        row = {"run": str(run), "method": method, "trained": False, "flags": []}
        losses = ds.loss_train.isel(run=r).values if "loss_train" in ds and r < ds.loss_train.sizes["run"] else []
        train = [float(x) for x in losses if np.isfinite(x)]
        if train:
            valid = [float(x) for x in ds.loss_valid.isel(run=r).values] if "loss_valid" in ds else []
            valid = [x for x in valid if np.isfinite(x)]
            skies = int(ds.train_sims.values[r]) if "train_sims" in ds and r < ds.train_sims.size else -1
            inferred = skies < 0
            if inferred:      # trained before train_sims was recorded: what the settings imply on this store
                skies = min(int(config.get("train_sims") or train_done), train_done)
            row.update(trained=True, skies=skies, skies_inferred=inferred, epochs=len(train),
                       train_loss=train[-1], valid_loss=valid[-1] if valid else float("nan"),
                       loss=str(config.get("loss", "")))
            falling, words = still_falling(valid)
            row["valid_trend"] = words
            if falling:
                row["flags"].append(words)
        ratio, lo, hi = power_loss(ds, r, split)
        row["power_ratio"], row["power_bin"] = ratio, (lo, hi)
        if np.isfinite(ratio) and ratio < POWER_LOST:
            row["flags"].append(f"its TT spectrum keeps only {100 * ratio:.0f}% of the truth's power at ell "
                                f"{lo:g}-{hi:g} (more than half lost at ell < 2 nside = {2 * nside})")
        rows.append(row)
    return rows


def training_section(rows, split: str) -> list[str]:
    """Markdown: a table of how each run was made and one sentence per flagged run."""
    lines = ["## How each run was made", "",
             "| run | training skies | epochs | final train loss | final valid loss | "
             f"lowest TT power ratio pred/truth at ell < 2 nside ({split}) |", "|---|---|---|---|---|---|"]
    words = []
    for row in rows:
        ratio = row["power_ratio"]
        rtext = f"{ratio:.2f} (ell {row['power_bin'][0]:g}-{row['power_bin'][1]:g})" if np.isfinite(ratio) else "n/a"
        if row["trained"]:
            skies = f"{row['skies']}{' (inferred)' if row['skies_inferred'] else ''}"
            lines.append(f"| {_run_label(row)} | {skies} | {row['epochs']} | {row['train_loss']:.4g} | "
                         f"{row['valid_loss']:.4g} | {rtext} |")
        else:
            lines.append(f"| {_run_label(row)} | not trained | - | - | - | {rtext} |")
        if row["flags"]:
            how = (f"trained on {row['skies']} skies for {row['epochs']} epochs" if row["trained"]
                   else f"a {row['method']} run (not trained)")
            label = "undertrained" if row["trained"] else "flagged"
            said = row["flags"] + ([row["valid_trend"]] if row["trained"] and row["valid_trend"] not in row["flags"]
                                   else [])
            if not row["trained"]:
                advice = ""
            elif row["valid_trend"] in row["flags"]:
                advice = " Train it longer (more epochs) before comparing it with the other methods."
            else:
                advice = (" Its validation loss flattened by the end of its schedule: it needs more training skies "
                          "(CMB-ML trains on 1000) or a longer schedule before it can be compared with the other "
                          "methods.")
            words.append(f"- **{row['run']}: {label}**: {how}; " + "; ".join(said) + "." + advice)
        elif row["trained"]:
            words.append(f"- {row['run']}: trained on {row['skies']} skies for {row['epochs']} epochs; "
                         f"{row['valid_trend']}; no flag.")
    lines.append("")
    if words:
        lines += words + [""]
    lines += [f"Flags: validation loss more than {100 * STILL_FALLING:.0f}% lower over the last epochs than over "
              f"the ones before, or a TT spectrum with less than {100 * POWER_LOST:.0f}% of the truth's power in "
              "some multipole bin below 2 nside (spectra mask-corrected, beams deconvolved). Losses are the "
              "training loss on the run's transformed target (its settings in run_config).", ""]
    return lines


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
    from cmbcube.stages.analysis import to_beam
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
    th_b = np.array([theory[int(lo):int(lo) + width].mean() for lo in ds.ell_bin.values])
    theory_label = "theory (mean over sims)"
    if "spectra_window" in ds and ds.spectra.attrs.get("estimator") == "namaster":
        # what NaMaster's bandpowers estimate: the theory through their windows (spectrum_in: TT, EE, BB, TE)
        windows = ds.spectra_window.values[0]                               # TT: (ell_bin, spectrum_in, ell)
        cl_all = ds.cl_theory.sel(split=split).isel(sim=sims).mean("sim").values   # (spectrum, ell)
        n = min(windows.shape[-1], cl_all.shape[-1])
        th_b = np.einsum("bsl,sl->b", windows[..., :n], np.nan_to_num(cl_all[:, :n]))
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
        ax.set_ylabel(_header(metric, units))
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    plt.close(fig)
    return fig


def component_table(ds, split: str) -> str | None:
    if "components" not in ds:
        return None
    sims = np.nonzero(ds.sim_done.sel(split=split).values)[0][:1]
    if not sims.size:
        return None
    sim = int(sims[0])
    units = {int(d): str(u) for d, u in zip(ds.detector.values, ds.unit.values)} if "unit" in ds else {}
    lines = [f"# Sky statistics per component: {split} sim {sim}", "",
             "Pixel statistics of each foreground component as stored (beam-convolved, NESTED full sky, no mask), "
             "in each detector's map unit (the `unit` column; uK_CMB unless the recipe chose otherwise).", "",
             "| component | detector [GHz] | field | unit | min | p25 | median | p75 | max | std |",
             "|---|---|---|---|" + "---|" * 6]
    block = ds.components.sel(split=split).isel(sim=sim).values
    for c, comp in enumerate(ds.component.values):
        for d, det in enumerate(ds.detector.values):
            for f, field in enumerate(ds.field.values):
                m = block[c, d, f]
                if not np.isfinite(m).any():
                    continue
                q = np.nanpercentile(m, [0, 25, 50, 75, 100])
                lines.append(f"| {comp} | {int(det)} | {field} | {units.get(int(det), '')} | " +
                             " | ".join(f"{v:.3g}" for v in q) + f" | {np.nanstd(m):.3g} |")
    return "\n".join(lines) + "\n"


def build(store: str, out_dir: str, split: str = "test", sims=(0,)) -> Path:
    """Write the report; returns the index page's path."""
    ds = cube.open_dataset(store)
    if "metrics" not in ds:
        raise cube.StoreError(f"{store}: no analysis yet; run cmbcube analyze first")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ds = ds.assign_coords(beam=ds.beam_fwhm.values)
    field = "I"
    units = metric_units(ds)
    unit = units["mae"]
    index = [f"# cmbcube report: {ds.attrs['recipe_name']}", "",
             f"Store `{store}`, split `{split}`, nside {ds.attrs['nside']}, analysis mask f_sky = "
             f"{float(ds.mask.mean()):.3f}. Metrics: mean +- std over sims, on unmasked pixels, monopole and "
             "dipole removed, after bringing truth and prediction to the stated common beam. Units: MAE and RMSE "
             f"in {unit}, MSE in {unit}^2, PSNR in dB; NRMSE, R^2 and dCl/Cl are ratios.", ""]
    index += training_section(training_rows(ds, split), split)
    for beam in BEAMS:
        rows = summary_rows(ds, split, field, beam)
        stem = f"metrics_{field}_beam{beam:g}".replace(".", "p")
        caption = (f"{split} split, field {field}, common beam {'none' if beam == 0 else f'{beam:g} arcmin'} "
                   f"(map metrics in {unit}, PSNR in dB)")
        write_tables(rows, out, stem, caption, units)
        index += [(out / f"{stem}.md").read_text(),
                  f"([Markdown]({stem}.md), [CSV]({stem}.csv), [LaTeX]({stem}.tex))", ""]
        if beam == BEAMS[0]:        # coverage is computed at each run's own beam: one table
            cal = f"calibration_{field}"
            if calibration_table(rows, out, cal, f"{split} split, field {field}: fraction of unmasked pixels "
                                 "with |pred - truth| <= k sigma (per-pixel sigma of the run, its own beam)"):
                index += [(out / f"{cal}.md").read_text(), f"([Markdown]({cal}.md), [CSV]({cal}.csv))", ""]
    figures = []
    done = ds.analysis_done.sel(split=split).values.astype(bool)
    map_beam = common_map_beam(ds)
    for r, run in enumerate(ds.run.values):
        for sim in sims:
            if sim < done.shape[1] and done[r, sim]:
                name = f"map_{cube.safe_name(run)}_{split}_{sim:04d}_{field}.png"   # run names come from the store
                map_figure(ds, str(run), split, sim, field, out / name, map_beam)
                figures.append((f"truth / {run} / residual, {split} sim {sim}, all at {map_beam:g}' ({unit})", name))
    spectrum_figure(ds, split, out / f"spectra_TT_{split}.png", out / f"residual_spectra_TT_{split}.png")
    figures += [("D_ell of truth, predictions and theory (beams deconvolved, f_sky "
                 f"{float(ds.mask.mean()):.2f})", f"spectra_TT_{split}.png"),
                ("residual spectra per method", f"residual_spectra_TT_{split}.png")]
    distribution_figure(ds, split, field, 20.6, out / f"metric_distributions_{field}.png")
    figures.append((f"metric distributions per method (20.6'; {unit}, PSNR in dB)", f"metric_distributions_{field}.png"))
    index += ["## Figures", ""] + [f"### {title}\n\n![{title}]({name})\n" for title, name in figures]
    table = component_table(ds, split)
    if table:
        (out / "sky_statistics.md").write_text(table)
        index += ["## Sky statistics per component (first sim)", "",
                  "[sky_statistics.md](sky_statistics.md) (in each detector's map unit)", ""]
    page = out / "index.md"
    page.write_text("\n".join(index) + "\n")
    return page
