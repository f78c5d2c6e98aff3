"""The report's ranking: each run's mean error over the test sims with its 95% interval, and every run
paired with the best one on the same skies (cmbcube.science.ranking)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cmbcube.science import ranking
from cmbcube.science.metrics import METRICS

RANKED = ("mae", "rmse")        # lower is better


def per_run_values(ds, split: str, field: str, beam: float, metric: str) -> dict:
    """run -> {sim: value} over the analysed sims of ``split`` with a finite value."""
    if metric not in METRICS or METRICS.index(metric) >= ds.metrics.sizes["metric"]:
        return {}
    m = ds.metrics.sel(split=split, field=field, beam=beam).isel(metric=METRICS.index(metric)).values   # (run, sim)
    done = ds.analysis_done.sel(split=split).values.astype(bool)
    out = {}
    for r, run in enumerate(ds.run.values):
        values = {int(s): float(m[r, s]) for s in np.nonzero(done[r])[0] if np.isfinite(m[r, s])}
        if values:
            out[str(run)] = values
    return out


def ranking_section(ds, split: str, field: str, beam: float, unit: str, out: Path) -> list[str]:
    """Markdown lines (and ranking_{field}.csv): per metric, runs ordered by their mean with a 95%
    bootstrap interval, and each run minus the best on the sims both have."""
    lines = ["## Ranking", "",
             f"{split} split, field {field}, common beam {beam:g}'. Mean over sims with its 95% bootstrap "
             "interval; then each run minus the best run on the same sims (paired: the sky-to-sky scatter both "
             "see cancels), significant when that interval excludes 0. Lower is better.", ""]
    csv = ["metric,run,sims,mean,low95,high95,minus_best_mean,minus_best_low95,minus_best_high95,significant"]
    shown = False
    for metric in RANKED:
        order, pairs = ranking.rank(per_run_values(ds, split, field, beam, metric))
        if not order:
            continue
        shown = True
        by = {p.a: p for p in pairs}
        lines += [f"**{metric.upper()} ({unit})**", "",
                  f"| rank | run | sims | mean [95%] | minus {order[0][0]} [95%] | significant | sims where better |",
                  "|---|---|---|---|---|---|---|"]
        for k, (run, iv) in enumerate(order, 1):
            p = by.get(run)
            if k == 1:
                diff, sig, better = "best", "-", "-"
            elif p is None:
                diff, sig, better = "too few shared sims", "-", "-"
            else:
                d = p.difference
                diff = f"{d.mean:+.3g} [{d.low:+.3g}, {d.high:+.3g}]"
                sig = "yes" if p.significant else "no"
                better = f"{p.a_better}/{d.n}"
            lines.append(f"| {k} | {run} | {iv.n} | {iv.mean:.3g} [{iv.low:.3g}, {iv.high:.3g}] | {diff} | {sig} | "
                         f"{better} |")
            row = [metric, run, str(iv.n), f"{iv.mean:.6g}", f"{iv.low:.6g}", f"{iv.high:.6g}"]
            row += ([f"{p.difference.mean:.6g}", f"{p.difference.low:.6g}", f"{p.difference.high:.6g}",
                     str(p.significant)] if p else ["", "", "", ""])
            csv.append(",".join(row))
        lines.append("")
    if not shown:
        return []
    (out / f"ranking_{field}.csv").write_text("\n".join(csv) + "\n")
    return lines + [f"([CSV](ranking_{field}.csv))", ""]


def data_limited(model: str, skies: int) -> str:
    """Words for a network trained on fewer skies than the ranking study found it needs
    (Network.data_limited_below), or ''."""
    from cmbcube.networks import NETWORKS
    spec = NETWORKS.get(model) if model in NETWORKS else None
    below = spec.data_limited_below if spec is not None else 0
    if not below or skies >= below:
        return ""
    return (f"it was trained on {skies} skies; in the ranking study ({spec.data_limited_source}: nside 32, the "
            f"default sky, cmbcube's default settings) {model} still improved significantly up to {below} skies, "
            "so it is likely data-limited here")
