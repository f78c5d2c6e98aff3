"""The report: summary tables (Markdown, CSV, LaTeX), how each run was made, and the index page
assembling them with the figures (PNG, :mod:`cmbcube.stages.report_figures`) from the cube's
metrics and spectra.  File names are deterministic.
"""
from __future__ import annotations

import csv
import dataclasses
import time
from pathlib import Path

import numpy as np

from cmbcube import cube
from cmbcube.compute.fanout import StageReport
from cmbcube.errors import InputError, param
from cmbcube.science.metrics import BEAMS, COVERAGE, GAUSSIAN_COVERAGE, METRICS
from cmbcube.stages import report_figures as plots
from cmbcube.stages.checkpoints import best_epoch
from cmbcube.stages.report_ranking import data_limited, ranking_section
from cmbcube.stages.report_sky import component_table

TABLE_METRICS = tuple(m for m in METRICS if m not in COVERAGE)     # calibration has its own table


@dataclasses.dataclass
class ReportPage(StageReport):
    page: Path              # the index page (index.md); its tables and figures are next to it


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


# LaTeX's special characters in text mode and what typesets each as itself
_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
          "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    r"""``text`` typeset literally by LaTeX (text mode): ``uK_CMB`` -> ``uK\_CMB``, ``50%`` -> ``50\%``."""
    return "".join(_LATEX.get(c, c) for c in str(text))


def _latex_header(header: str) -> str:
    r"""A column header with its unit's powers as superscripts: ``MSE [uK_CMB^2]`` -> ``MSE [uK\_CMB$^{2}$]``."""
    parts = str(header).split("^")
    out = latex_escape(parts[0])
    for part in parts[1:]:
        power = len(part) - len(part.lstrip("0123456789"))
        out += (f"$^{{{part[:power]}}}$" if power else latex_escape("^")) + latex_escape(part[power:])
    return out


def write_tables(rows, out: Path, stem: str, caption: str, units: dict | None = None) -> list[Path]:
    units = plots.metric_units(None) if units is None else units
    md = [f"**{caption}**", "",
          "| run | sims | " + " | ".join(plots.metric_header(m, units) for m in TABLE_METRICS) + " |",
          "|---|---|" + "---|" * len(TABLE_METRICS)]
    for row in rows:
        md.append(f"| {_run_label(row)} | {row['sims']} | " + " | ".join(_fmt(*row[m]) for m in TABLE_METRICS) + " |")
    (out / f"{stem}.md").write_text("\n".join(md) + "\n")
    _write_csv(out / f"{stem}.csv", rows, TABLE_METRICS)
    # every caption, header and cell through latex_escape (units such as uK_CMB, run names with _ or %)
    tex = ["\\begin{table}", "\\centering", f"\\caption{{{latex_escape(caption)}}}",
           "\\begin{tabular}{l" + "c" * len(TABLE_METRICS) + "}", "\\hline",
           "Run & " + " & ".join(_latex_header(plots.metric_header(m, units)) for m in TABLE_METRICS) + " \\\\",
           "\\hline"]
    for row in rows:
        tex.append(latex_escape(_run_label(row)) + " & " + " & ".join(
            " $\\pm$ ".join(latex_escape(x) for x in _fmt(*row[m]).split(" +- ")) for m in TABLE_METRICS)
            + " \\\\")
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
        f"within {plots.LABELS[m]} [% of pixels] (Gaussian {100 * GAUSSIAN_COVERAGE[m]:.1f}%)"
        for m in COVERAGE) + " |",
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
    if "analysis_done" not in ds:
        return float("nan"), float("nan"), float("nan")
    done = ds.analysis_done.sel(split=split).values.astype(bool)[run_index]
    sims = np.nonzero(done)[0]
    if not sims.size or "spectra" not in ds:
        return float("nan"), float("nan"), float("nan")
    spec = ds.spectra.isel(run=run_index, sim=sims).sel(split=split, spectrum="TT")
    p = np.nanmean(spec.sel(kind="pred").values, axis=0)
    t = np.nanmean(spec.sel(kind="truth").values, axis=0)
    width = int(ds.ell_bin.attrs.get("bin_width", 10))
    lo = ds.ell_bin.values
    keep = (lo < 2 * cube.nside(ds)) & np.isfinite(p) & np.isfinite(t) & (t > 0)
    if not keep.any():
        return float("nan"), float("nan"), float("nan")
    ratio = np.where(keep, p / np.where(t > 0, t, 1.0), np.inf)
    b = int(np.argmin(ratio))
    return float(ratio[b]), float(lo[b]), float(lo[b] + width - 1)


def training_rows(ds, split: str) -> list[dict]:
    """Per run: how it was made (trained: skies, epochs, final losses) and flags in words."""
    import json
    rows = []
    nside = cube.nside(ds)
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
            every = valid[: len(train)] + [float("nan")] * (len(train) - len(valid))
            best = best_epoch(range(1, len(train) + 1), train, every)
            patience = int(config.get("early_stopping") or 0)
            row.update(train_losses=train, valid_losses=every, best_epoch=best,
                       stopped_epoch=len(train) if patience and len(train) - best >= patience else None)
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
            limited = data_limited(str(config.get("model", method)), skies)
            if limited:
                row["flags"].append(limited)
        ratio, lo, hi = power_loss(ds, r, split)
        row["power_ratio"], row["power_bin"] = ratio, (lo, hi)
        if np.isfinite(ratio) and ratio < POWER_LOST:
            row["flags"].append(f"its TT spectrum keeps only {100 * ratio:.0f}% of the truth's power at ell "
                                f"{lo:g}-{hi:g} (more than half lost at ell < 2 nside = {2 * nside})")
        rows.append(row)
    return rows


def training_section(rows, split: str, curves: dict | None = None) -> list[str]:
    """Markdown: a table of how each run was made, one sentence per run, its learning curve (``curves``:
    {run: PNG name}) linked."""
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
        if row["trained"] and row["run"] in (curves or {}):
            stop = f", stopped early at epoch {row['stopped_epoch']}" if row["stopped_epoch"] else ""
            words.append(f"  Best validation loss at epoch {row['best_epoch']}{stop}: "
                         f"[learning curve]({curves[row['run']]}).")
    lines.append("")
    if words:
        lines += words + [""]
    lines += [f"Flags: validation loss more than {100 * STILL_FALLING:.0f}% lower over the last epochs than over "
              f"the ones before, or a TT spectrum with less than {100 * POWER_LOST:.0f}% of the truth's power in "
              "some multipole bin below 2 nside (spectra mask-corrected, beams deconvolved). Losses are the "
              "training loss on the run's transformed target (its settings in run_config).", ""]
    return lines


def run(store: str, out_dir: str, split: str = "test", sims=(0,)) -> ReportPage:
    """Write the report into ``out_dir``; its page is the index page's path."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{param('out_dir', dest='out')} {out_dir}: is a file; the report needs a directory "
                         "(new or existing)")
    ds = cube.open_dataset(store)
    if "metrics" not in ds or not bool(ds.analysis_done.sel(split=split).any()):
        raise cube.StoreError(f"{store}: no analysed {split} sims yet; run cmbcube analyze first")
    out.mkdir(parents=True, exist_ok=True)
    ds = ds.assign_coords(beam=ds.beam_fwhm.values)
    field = "I"
    units = plots.metric_units(ds)
    unit = units["mae"]
    index = [f"# cmbcube report: {ds.attrs['recipe_name']}", "",
             f"Store `{store}`, split `{split}`, nside {cube.nside(ds)}, analysis mask f_sky = "
             f"{float(ds.mask.mean()):.3f}. Metrics: mean +- std over sims, on unmasked pixels, monopole and "
             "dipole removed, after bringing truth and prediction to the stated common beam. Units: MAE and RMSE "
             f"in {unit}, MSE in {unit}^2, PSNR in dB; NRMSE, R^2 and dCl/Cl are ratios.", ""]
    rows = training_rows(ds, split)
    index += training_section(rows, split, plots.learning_curves(rows, out))
    index += ranking_section(ds, split, field, BEAMS[1], unit, out)
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
    map_beam = plots.common_map_beam(ds)
    runs = [str(run) for run in ds.run.values]
    rlims = {sim: plots.residual_limit(ds, [run for r, run in enumerate(runs) if done[r, sim]], split, sim, field,
                                       map_beam)
             for sim in sims if sim < done.shape[1] and done[:, sim].any()}     # one scale for every run shown
    for r, run in enumerate(ds.run.values):
        for sim in sims:
            if sim < done.shape[1] and done[r, sim]:
                name = f"map_{cube.safe_name(run)}_{split}_{sim:04d}_{field}.png"   # run names come from the store
                plots.map_figure(ds, str(run), split, sim, field, out / name, map_beam, rlims[sim])
                figures.append((f"truth / {run} / residual, {split} sim {sim}, all at {map_beam:g}' ({unit}; "
                                f"residual colours shared by every run; analysis mask outlined, grey in the "
                                f"residual)", name))
    plots.spectrum_figure(ds, split, out / f"spectra_TT_{split}.png", out / f"residual_spectra_TT_{split}.png")
    figures += [("D_ell of truth, predictions and theory (beams deconvolved, f_sky "
                 f"{float(ds.mask.mean()):.2f})", f"spectra_TT_{split}.png"),
                ("residual spectra per method", f"residual_spectra_TT_{split}.png")]
    plots.distribution_figure(ds, split, field, 20.6, out / f"metric_distributions_{field}.png")
    figures.append((f"metric distributions per method (20.6'; {unit}, PSNR in dB)",
                    f"metric_distributions_{field}.png"))
    index += ["## Figures", ""] + [f"### {title}\n\n![{title}]({name})\n" for title, name in figures]
    table = component_table(ds, split)
    if table:
        (out / "sky_statistics.md").write_text(table)
        index += ["## Sky statistics per component (first sim)", "",
                  "[sky_statistics.md](sky_statistics.md) (in each detector's map unit; 545 and 857 GHz in "
                  "MJy/sr)", ""]
    page = out / "index.md"
    page.write_text("\n".join(index) + "\n")
    return ReportPage(page, seconds=time.perf_counter() - t0)
