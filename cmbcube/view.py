"""``cmbcube view``: a PNG of any map in the cube (Mollweide, or a gnomonic zoom)."""
from __future__ import annotations

import numpy as np

from . import cube


def select(ds, product: str, split: str, sim: int, field: str, detector=None, run=None):
    """The 1-D NESTED map and a title for a product selection (errors name what is allowed)."""
    if split not in ds.split.values:
        raise ValueError(f"--split {split!r}: allowed: {', '.join(ds.split.values)}")
    if field not in ds.field.values:
        raise ValueError(f"--field {field!r}: allowed: {', '.join(ds.field.values)}")
    base = dict(split=split, sim=sim, field=field)
    if product in ("obs", "noise") or ("component" in ds.coords and product in ds.component.values):
        if detector is None or detector not in ds.detector.values:
            raise ValueError(f"--detector: required for {product}; allowed: {', '.join(map(str, ds.detector.values))}")
        unit = str(ds.unit.sel(detector=detector).values)
        if product in ("obs", "noise"):
            if product not in ds:
                raise ValueError("--product noise: this cube kept no noise maps (recipe keep: [noise])")
            data = ds[product].sel(detector=detector, **base)
        else:
            data = ds.components.sel(component=product, detector=detector, **base)
        return data.values, f"{product} {detector} GHz {field}, {split} sim {sim} [{unit}]"
    if product == "cmb":
        return ds.cmb.sel(**base).values, f"CMB truth {field}, {split} sim {sim} [{ds.cmb.attrs.get('units')}]"
    if product == "pred":
        runs = list(ds.run.values) if "run" in ds.coords else []
        if run not in runs:
            raise ValueError(f"--run: required for pred; allowed: {', '.join(runs) or '(no runs yet)'}")
        return ds.pred.sel(run=run, **base).values, f"{run} prediction {field}, {split} sim {sim}"
    allowed = ["obs", "cmb", "pred", "noise"] + (list(ds.component.values) if "component" in ds.coords else [])
    raise ValueError(f"--product {product!r}: allowed: {', '.join(allowed)}")


def view(args) -> str:
    import healpy as hp
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ds = cube.open_dataset(args.store)
    m, title = select(ds, args.product, args.split, args.sim, args.field, args.detector, args.run)
    if np.isnan(m).all():
        raise ValueError(f"{title}: no data (sim not simulated/predicted, or the pair does not exist)")
    out = args.out or f"{args.product}_{args.detector or ''}{'_' if args.detector else ''}{args.field}_{args.split}_{args.sim:04d}" \
        + (f"_{cube.safe_name(args.run)}" if args.run else "") + ("_zoom" if args.zoom or args.rot else "") + ".png"
    fig = plt.figure(figsize=(9, 5.5))
    if args.zoom or args.rot:
        lon, lat = (float(x) for x in (args.rot or "0,0").split(","))
        hp.gnomview(m, nest=True, rot=(lon, lat), xsize=600, reso=max(hp.nside2resol(int(ds.attrs["nside"]), arcmin=True) / 4, 1.0),
                    title=title, fig=fig.number, cmap="RdBu_r")
    else:
        lim = np.nanpercentile(np.abs(m - np.nanmedian(m)), 99) or None
        med = float(np.nanmedian(m))
        hp.mollview(m, nest=True, title=title, fig=fig.number, cmap="RdBu_r",
                    min=med - lim if lim else None, max=med + lim if lim else None)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
