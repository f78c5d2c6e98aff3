"""The report's sky statistics: pixel statistics of every stored component map (sky_statistics.md),
in each detector's map unit (545 and 857 GHz in MJy/sr, as Planck gives them)."""
from __future__ import annotations

import numpy as np

from cmbcube import cube
from cmbcube.stages import report_figures as plots


def _shown_units(ds) -> dict[int, tuple[str, float]]:
    """Per detector: (unit the sky statistics are given in, factor from the stored unit).  Detectors whose
    native unit is MJy/sr (545, 857 GHz) in MJy/sr as Planck gives them, converted over the store's own
    band (instrument.band_unit_factor, the conversion cmbcube validate checks against pysm3 and Planck's
    published coefficients); the others in their stored unit."""
    from cmbcube.recipe import from_store_attrs
    from cmbcube.science import instrument
    try:
        bands = {d.freq: d for d in from_store_attrs(ds.attrs).detectors()}
    except (KeyError, ValueError, TypeError):        # no recorded recipe (an old or foreign store)
        bands = {}
    out = {}
    for det, unit in zip(ds.detector.values, ds.unit.values):
        det, unit = int(det), str(unit)
        band = bands.get(det) or instrument.detector(det)
        if band.native_unit == "MJy/sr" and unit != "MJy/sr":
            out[det] = ("MJy/sr", instrument.band_unit_factor(band, unit, "MJy/sr"))
        else:
            out[det] = (unit, 1.0)
    return out


def component_table(ds, split: str) -> str | None:
    """sky_statistics.md: pixel statistics of every stored component map of the split's first finished sim."""
    if "components" not in ds:
        return None
    sims = np.nonzero(ds.sim_done.sel(split=split).values)[0][:1]
    if not sims.size:
        return None
    sim = int(sims[0])
    shown = _shown_units(ds)
    nside = cube.nside(ds)
    positive = [str(c) for c in ds.component.values if str(c) in plots.POSITIVE_INTENSITY]
    lines = [f"# Sky statistics per component: {split} sim {sim}", "",
             "Pixel statistics of each foreground component as stored (beam-convolved, NESTED full sky, no mask), "
             "in each detector's map unit (the `unit` column; uK_CMB unless the recipe chose otherwise), except "
             "545 and 857 GHz, given in MJy/sr as Planck gives those channels (converted over the store's band "
             "with the unit conversion `cmbcube validate` checks against pysm3 and Planck's coefficients). "
             "`< 0` is the percentage of pixels below zero.", ""]
    if positive:
        lines += [f"The intensity (I) of {', '.join(positive)} is positive in the sky model; their negative "
                  "minima (and `< 0` above zero) are ringing, not emission: each map is band-limited at "
                  f"ell_max = 3 nside - 1 = {3 * nside - 1} before the beam is applied, and the cut rings around "
                  "the sharp Galactic plane and point sources wherever the beam does not already damp ell_max "
                  "(beams not much wider than a pixel, as at low nside). The same is true of any band-limited "
                  "map; the sky model's own maps, before the band limit, are positive there.", ""]
    lines += ["| component | detector [GHz] | field | unit | min | p25 | median | p75 | max | std | < 0 |",
              "|---|---|---|---|" + "---|" * 7]
    block = ds.components.sel(split=split).isel(sim=sim).values
    for c, comp in enumerate(ds.component.values):
        for d, det in enumerate(ds.detector.values):
            unit, factor = shown[int(det)]
            for f, field in enumerate(ds.field.values):
                m = block[c, d, f].astype(np.float64) * factor
                if not np.isfinite(m).any():
                    continue
                q = np.nanpercentile(m, [0, 25, 50, 75, 100])
                below = 100.0 * float(np.mean(m[np.isfinite(m)] < 0))
                lines.append(f"| {comp} | {int(det)} | {field} | {unit} | " + " | ".join(f"{v:.3g}" for v in q)
                             + f" | {np.nanstd(m):.3g} | {below:.1f}% |")
    return "\n".join(lines) + "\n"
