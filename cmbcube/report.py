"""The report: summary tables (Markdown, CSV, LaTeX) and figures (PNG) from the cube's
metrics and spectra, with an index page.  File names are deterministic.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from . import cube
from .analysis import BEAMS, COVERAGE, GAUSSIAN_COVERAGE, METRICS

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


def _fmt(mean, std):
    if np.isnan(mean):
        return "n/a"
    if not np.isfinite(mean):
        return "inf"
    digits = 4 if abs(mean) < 1 else 2
    return f"{mean:.{digits}f} +- {std:.{digits}f}"


def write_tables(rows, out: Path, stem: str, caption: str) -> list[Path]:
    md = [f"**{caption}**", "", "| run | method | sims | " + " | ".join(LABELS[m] for m in TABLE_METRICS) + " |",
          "|---|---|---|" + "---|" * len(TABLE_METRICS)]
    for row in rows:
        md.append(f"| {row['run']} | {row['method']} | {row['sims']} | " +
                  " | ".join(_fmt(*row[m]) for m in TABLE_METRICS) + " |")
    (out / f"{stem}.md").write_text("\n".join(md) + "\n")
    _write_csv(out / f"{stem}.csv", rows, TABLE_METRICS)
    tex = ["\\begin{table}", "\\centering", f"\\caption{{{caption}}}",
           "\\begin{tabular}{l" + "c" * len(TABLE_METRICS) + "}", "\\hline",
           "Run & " + " & ".join(LABELS[m].replace("^2", "$^2$") for m in TABLE_METRICS) + " \\\\", "\\hline"]
    for row in rows:
        tex.append(row["run"].replace("_", "\\_") + " & " + " & ".join(
            _fmt(*row[m]).replace("+-", "$\\pm$") for m in TABLE_METRICS) + " \\\\")
    tex += ["\\hline", "\\end{tabular}", "\\end{table}"]
    (out / f"{stem}.tex").write_text("\n".join(tex) + "\n")
    return [out / f"{stem}.{ext}" for ext in ("md", "csv", "tex")]


def _write_csv(path: Path, rows, metrics) -> None:
    """One line per run: run, method, sims, then mean and std of each metric."""
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
    md = [f"**{caption}**", "", "| run | method | sims | " + " | ".join(
        f"within {LABELS[m]} (Gaussian {100 * GAUSSIAN_COVERAGE[m]:.1f}%)" for m in COVERAGE) + " |",
        "|---|---|---|" + "---|" * len(COVERAGE)]
    for row in rows:
        md.append(f"| {row['run']} | {row['method']} | {row['sims']} | " + " | ".join(
            f"{100 * row[m][0]:.1f}% +- {100 * row[m][1]:.1f}" for m in COVERAGE) + " |")
    (out / f"{stem}.md").write_text("\n".join(md) + "\n")
    _write_csv(out / f"{stem}.csv", rows, COVERAGE)
    return [out / f"{stem}.md", out / f"{stem}.csv"]


def map_figure(ds, run: str, split: str, sim: int, field: str, path: Path) -> None:
    import healpy as hp

    from .analysis import to_beam
    plt = _plt()
    nside = int(ds.attrs["nside"])
    beam = float(ds.run_beam_fwhm_arcmin.sel(run=run))
    truth = ds.cmb.sel(split=split, sim=sim, field=field).values.astype(float)
    truth = to_beam(truth[None], [field], float(ds.cmb.attrs.get("beam_fwhm_arcmin", 0.0)), beam, nside)[0]
    pred = ds.pred.sel(run=run, split=split, sim=sim, field=field).values.astype(float)
    lim = float(np.nanpercentile(np.abs(truth), 99))
    panels = [("truth", truth, lim), (f"{run}", pred, lim), ("residual", pred - truth, None)]
    if "pred_sigma" in ds and "run" in ds.pred_sigma.dims:
        sigma = ds.pred_sigma.sel(run=run, split=split, sim=sim, field=field).values.astype(float)
        if np.isfinite(sigma).all():
            panels.append(("sigma", sigma, "sigma"))
    fig = plt.figure(figsize=(5 * len(panels), 3.6))
    for k, (title, m, scale) in enumerate(panels):
        lo, hi = (-scale, scale) if isinstance(scale, float) else (None, None)
        if scale == "sigma":
            lo, hi = 0.0, float(np.nanpercentile(m, 99))
        hp.mollview(m, nest=True, fig=fig.number, sub=(1, len(panels), k + 1), title=f"{title} ({field}, {beam:g}')",
                    unit=str(ds.cmb.attrs.get("units", "")), min=lo, max=hi,
                    cmap="viridis" if scale == "sigma" else "RdBu_r")
    fig.savefig(path, dpi=90)
    plt.close(fig)


def spectrum_figure(ds, split: str, path: Path, residual_path: Path) -> None:
    plt = _plt()
    ell = ds.ell_bin.values + 0.5 * float(ds.ell_bin.attrs.get("bin_width", 10)) - 0.5
    fac = ell * (ell + 1) / (2 * np.pi)
    done = ds.analysis_done.sel(split=split).values.astype(bool)
    fig, (ax, axd) = plt.subplots(2, 1, figsize=(8, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    first = int(np.nonzero(done.any(axis=0))[0][0])
    truth = ds.spectra.isel(run=int(np.nonzero(done[:, first])[0][0])).sel(split=split, kind="truth", spectrum="TT")
    sims = np.nonzero(done.any(axis=0))[0]
    t_mean = np.nanmean(truth.isel(sim=sims).values, axis=0)
    theory = ds.cl_theory.sel(split=split, spectrum="TT").isel(sim=sims).mean("sim").values
    th_b = np.array([theory[int(lo):int(lo) + 10].mean() for lo in ds.ell_bin.values])
    nmodes = (2 * ell + 1) * 10 * float(ds.mask.mean())
    cv = th_b * np.sqrt(2 / nmodes / max(len(sims), 1))
    ax.fill_between(ell, fac * (th_b - cv), fac * (th_b + cv), color="0.85", label="theory +- cosmic variance")
    ax.plot(ell, fac * th_b, "k-", lw=1, label="theory (mean over sims)")
    ax.plot(ell, fac * t_mean, "ko", ms=3, label="truth")
    fig2, ax2 = plt.subplots(figsize=(8, 4))
    for r, run in enumerate(ds.run.values):
        if not done[r].any():
            continue
        sel = np.nonzero(done[r])[0]
        p = np.nanmean(ds.spectra.isel(run=r, sim=sel).sel(split=split, kind="pred", spectrum="TT").values, axis=0)
        res = np.nanmean(ds.spectra.isel(run=r, sim=sel).sel(split=split, kind="resid", spectrum="TT").values, axis=0)
        line = ax.plot(ell, fac * p, "-", label=str(run))[0]
        axd.plot(ell, 100 * (p - t_mean) / t_mean, "-", color=line.get_color())
        ax2.plot(ell, fac * res, "-", color=line.get_color(), label=str(run))
    ax.set_ylabel(r"$D_\ell^{TT}$ [$\mu K^2$]")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    axd.axhline(0, color="k", lw=0.5)
    axd.set_ylabel(r"$\Delta D_\ell / D_\ell$ [%]")
    axd.set_xlabel(r"$\ell$")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    ax2.set_yscale("log")
    ax2.set_xlabel(r"$\ell$")
    ax2.set_ylabel(r"residual $D_\ell^{TT}$ [$\mu K^2$]")
    ax2.legend(fontsize=8)
    fig2.tight_layout()
    fig2.savefig(residual_path, dpi=100)
    plt.close(fig2)


def distribution_figure(ds, split: str, field: str, beam: float, path: Path) -> None:
    plt = _plt()
    done = ds.analysis_done.sel(split=split).values.astype(bool)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for ax, metric in zip(axes, ("mae", "rmse", "psnr")):
        data, labels = [], []
        for r, run in enumerate(ds.run.values):
            sims = np.nonzero(done[r])[0]
            if sims.size:
                data.append(ds.metrics.isel(run=r, sim=sims).sel(split=split, field=field, beam=beam,
                                                                 metric=metric).values)
                labels.append(str(run))
        ax.boxplot(data, tick_labels=labels)
        ax.set_title(f"{LABELS[metric]} ({field}, {beam:g}')")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def component_table(ds, split: str) -> str | None:
    if "components" not in ds:
        return None
    sims = np.nonzero(ds.sim_done.sel(split=split).values)[0][:1]
    if not sims.size:
        return None
    lines = ["| component | detector | field | min | p25 | median | p75 | max | std |", "|---|---|---|" + "---|" * 6]
    block = ds.components.sel(split=split).isel(sim=int(sims[0])).values
    for c, comp in enumerate(ds.component.values):
        for d, det in enumerate(ds.detector.values):
            for f, field in enumerate(ds.field.values):
                m = block[c, d, f]
                if not np.isfinite(m).any():
                    continue
                q = np.nanpercentile(m, [0, 25, 50, 75, 100])
                lines.append(f"| {comp} | {int(det)} | {field} | " + " | ".join(f"{v:.3g}" for v in q) +
                             f" | {np.nanstd(m):.3g} |")
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
    index = [f"# cmbcube report: {ds.attrs['recipe_name']}", "",
             f"Store `{store}`, split `{split}`, nside {ds.attrs['nside']}, analysis mask f_sky = "
             f"{float(ds.mask.mean()):.3f}. Metrics: mean +- std over sims, on unmasked pixels, monopole and "
             "dipole removed, after bringing truth and prediction to the stated common beam.", ""]
    for beam in BEAMS:
        rows = summary_rows(ds, split, field, beam)
        stem = f"metrics_{field}_beam{beam:g}".replace(".", "p")
        caption = f"{split} split, field {field}, common beam {'none' if beam == 0 else f'{beam:g} arcmin'}"
        write_tables(rows, out, stem, caption)
        index += [(out / f"{stem}.md").read_text(),
                  f"([Markdown]({stem}.md), [CSV]({stem}.csv), [LaTeX]({stem}.tex))", ""]
        if beam == BEAMS[0]:        # coverage is computed at each run's own beam: one table
            cal = f"calibration_{field}"
            if calibration_table(rows, out, cal, f"{split} split, field {field}: fraction of unmasked pixels "
                                 "with |pred - truth| <= k sigma (per-pixel sigma of the run, its own beam)"):
                index += [(out / f"{cal}.md").read_text(), f"([Markdown]({cal}.md), [CSV]({cal}.csv))", ""]
    figures = []
    done = ds.analysis_done.sel(split=split).values.astype(bool)
    for r, run in enumerate(ds.run.values):
        for sim in sims:
            if sim < done.shape[1] and done[r, sim]:
                name = f"map_{cube.safe_name(run)}_{split}_{sim:04d}_{field}.png"   # run names come from the store
                map_figure(ds, str(run), split, sim, field, out / name)
                figures.append((f"truth / {run} / residual, {split} sim {sim}", name))
    spectrum_figure(ds, split, out / f"spectra_TT_{split}.png", out / f"residual_spectra_TT_{split}.png")
    figures += [("D_ell of truth, predictions and theory", f"spectra_TT_{split}.png"),
                ("residual spectra per method", f"residual_spectra_TT_{split}.png")]
    distribution_figure(ds, split, field, 20.6, out / f"metric_distributions_{field}.png")
    figures.append(("metric distributions per method (20.6')", f"metric_distributions_{field}.png"))
    index += ["## Figures", ""] + [f"### {title}\n\n![{title}]({name})\n" for title, name in figures]
    table = component_table(ds, split)
    if table:
        (out / "sky_statistics.md").write_text(table)
        index += ["## Sky statistics per component (first sim)", "", "[sky_statistics.md](sky_statistics.md)", ""]
    page = out / "index.md"
    page.write_text("\n".join(index) + "\n")
    return page
