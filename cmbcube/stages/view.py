"""``cmbcube view``: a PNG of any map in the cube (Mollweide, or a gnomonic zoom)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from cmbcube import cube
from cmbcube.compute.fanout import StageReport
from cmbcube.errors import InputError, param
from cmbcube.stages.report_figures import POSITIVE_INTENSITY

IMAGE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg")


@dataclasses.dataclass
class ViewReport(StageReport):
    path: str               # the image written


def select(ds, product: str, split: str, sim: int, field: str, detector=None, run=None):
    """The 1-D NESTED map and a title for a product selection (errors name what is allowed)."""
    if split not in ds.split.values:
        raise InputError(f"{param('split')} {split!r}: allowed: {', '.join(ds.split.values)}")
    if field not in ds.field.values:
        raise InputError(f"{param('field')} {field!r}: allowed: {', '.join(ds.field.values)}")
    if sim not in ds.sim.values:
        raise InputError(f"{param('sim')} {sim}: allowed: 0 to {ds.sizes['sim'] - 1}")
    base = dict(split=split, sim=sim, field=field)
    if product in ("obs", "noise") or ("component" in ds.coords and product in ds.component.values):
        if detector is None or detector not in ds.detector.values:
            what = f"{param('detector')}: required for {product}" if detector is None else \
                f"{param('detector')} {detector}: not a detector of this store"
            raise InputError(f"{what}; allowed: {', '.join(map(str, ds.detector.values))}")
        unit = str(ds.unit.sel(detector=detector).values)
        if product in ("obs", "noise"):
            if product not in ds:
                raise InputError(f"{param('product')} noise: this cube kept no noise maps (recipe keep: [noise])")
            data = ds[product].sel(detector=detector, **base)
        else:
            data = ds.components.sel(component=product, detector=detector, **base)
        return data.values, f"{product} {detector} GHz {field}, {split} sim {sim} [{unit}]"
    if product == "cmb":
        return ds.cmb.sel(**base).values, f"CMB truth {field}, {split} sim {sim} [{ds.cmb.attrs.get('units')}]"
    if product == "pred":
        runs = list(ds.run.values) if "run" in ds.coords else []
        if run not in runs:
            what = f"{param('run')}: required for pred" if run is None else \
                f"{param('run')} {run!r}: not a run of this store"
            raise InputError(f"{what}; allowed: {', '.join(runs) or '(no runs yet)'}")
        return ds.pred.sel(run=run, **base).values, f"{run} prediction {field}, {split} sim {sim}"
    allowed = ["obs", "cmb", "pred", "noise"] + (list(ds.component.values) if "component" in ds.coords else [])
    raise InputError(f"{param('product')} {product!r}: allowed: {', '.join(allowed)}")


def limits(m: np.ndarray, positive: bool = False) -> tuple[float, float, str]:
    """Colour limits and map: signed maps (CMB, noise, Q/U, residual-like) symmetric about zero on a
    diverging map (zero is white); one-signed maps from their 0.5 to 99.5 percentiles on a sequential one.
    ``positive``: the intensity of a positive-definite component (dust, radio sources, ...: see
    :data:`cmbcube.stages.report_figures.POSITIVE_INTENSITY`): sequential from max(0, 0.5 percentile) even
    where band-limiting rings a few pixels below zero (next to bright sources and the Galactic plane)."""
    finite = m[np.isfinite(m)]
    if finite.size == 0:
        return -1.0, 1.0, "RdBu_r"
    neg, pos = float(np.mean(finite < 0)), float(np.mean(finite > 0))
    if min(neg, pos) >= 0.01 and not positive:
        lim = float(np.percentile(np.abs(finite), 99)) or float(np.abs(finite).max()) or 1.0
        return -lim, lim, "RdBu_r"
    lo, hi = (float(x) for x in np.percentile(finite, [0.5, 99.5]))
    if positive:
        lo = max(lo, 0.0)
    if hi <= lo:
        lo, hi = lo - 1.0, hi + 1.0
    return lo, hi, "viridis"


def output_path(store: str, name: str, out: str | None) -> Path:
    """Where the PNG goes: ``out`` (a file, or an existing directory to put ``name`` in), else the folder
    ``<store>.views`` next to a local store (made when the figure is written), else (a store given as a URL)
    ``name`` in the current directory.  A missing parent directory or a suffix matplotlib cannot write is an
    InputError."""
    if out is None:
        if cube.is_remote(store):
            return Path(name)
        return Path(str(store).rstrip("/") + ".views") / name
    path = Path(out)
    if path.is_dir():
        return path / name
    if not path.parent.is_dir():
        raise InputError(f"{param('out')} {out}: no such directory {path.parent}")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise InputError(f"{param('out')} {out}: name a directory or an image file; allowed suffixes: "
                         f"{', '.join(IMAGE_SUFFIXES)}")
    return path


def zoom_size(nside: int) -> tuple[float, int]:
    """Gnomonic default from nside: a field about 30 HEALPix pixels wide (3 to 40 degrees), 800 image pixels;
    returns (resolution in arcmin per image pixel, image side in pixels)."""
    import healpy as hp
    fov_deg = float(np.clip(30 * hp.nside2resol(nside, arcmin=True) / 60, 3.0, 40.0))
    xsize = 800
    return fov_deg * 60 / xsize, xsize


def rotation(text: str) -> tuple[float, float]:
    """``--rot LON,LAT`` in degrees."""
    try:
        lon, lat = (float(x) for x in text.split(","))
    except ValueError:
        raise InputError(f"{param('rot')} {text!r}: expected LON,LAT in degrees, "
                         f"e.g. {param('rot', '30,-60')}") from None
    return lon, lat


def run(store: str, product: str = "obs", split: str = "test", sim: int = 0, field: str = "I", detector=None,
        run_name: str | None = None, rot: str | None = None, zoom: bool = False, out: str | None = None) -> ViewReport:
    """Draw one map of the cube to a PNG (Mollweide; gnomonic with ``zoom`` or ``rot="LON,LAT"``) of run
    ``run_name`` for ``product`` pred; the report's path is the file's (:func:`output_path`: ``out``, else next
    to the store, named after the selection)."""
    import healpy as hp
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    centre = rotation(rot or "0,0") if zoom or rot else None
    name = f"{product}_{detector or ''}{'_' if detector else ''}{field}_{split}_{sim:04d}" \
        + (f"_{cube.safe_name(run_name)}" if run_name else "") + ("_zoom" if zoom or rot else "") + ".png"
    path = output_path(store, name, out)
    ds = cube.open_dataset(store)
    m, title = select(ds, product, split, sim, field, detector, run_name)
    if np.isnan(m).all():
        raise InputError(f"{title}: no data (sim not simulated/predicted, or the pair does not exist)")
    lo, hi, cmap = limits(m, positive=product in POSITIVE_INTENSITY and field == "I")
    m = np.where(np.isfinite(m), m, hp.UNSEEN)
    nside = cube.nside(ds)
    # healpy draws into a figure of its own (handing it ours makes pyplot warn that the figure exists)
    if centre is not None:
        reso, xsize = zoom_size(nside)
        hp.gnomview(m, nest=True, rot=centre, xsize=xsize, reso=reso, min=lo, max=hi, cmap=cmap,
                    title=title, format="%.3g")
    else:
        hp.mollview(m, nest=True, title=title, cmap=cmap, min=lo, max=hi, format="%.3g")
    fig = plt.gcf()
    path.parent.mkdir(exist_ok=True)           # STORE.views on first use
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return ViewReport(str(path))
