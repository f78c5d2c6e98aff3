"""``cmbcube info``: a store summarised for people, and sizes on disk."""
from __future__ import annotations

import json
import os

from cmbcube.cube import icechunk_store as ics
from cmbcube.cube.base import DROPPED_ATTR, StoreError, is_remote
from cmbcube.cube.facts import nside
from cmbcube.cube.opener import open_dataset, read_attrs
from cmbcube.cube.sims import done_flags, planned, predicted_counts
from cmbcube.recipe import SPLITS


def disk_size(path: str) -> int | None:
    """Return the bytes of every file under a local store (None for a remote one)."""
    if is_remote(path):
        return None
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def human(nbytes: float) -> str:
    """A size for people: "512 B", "1.5 KB", ... "3.0 PB" (binary multiples); the one formatter of
    cmbcube (``cmbcube.compute.limits.human`` is this function)."""
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(nbytes) < 1024 or unit == "PB":
            return f"{nbytes:.1f} {unit}" if unit != "B" else f"{int(nbytes)} B"
        nbytes /= 1024
    return ""


def summary(path: str) -> str:
    """Human summary for ``cmbcube info``."""
    attrs = read_attrs(path)
    if "recipe_hash" not in attrs:
        raise StoreError(f"{path} is a Zarr store but not a cmbcube store")
    ds = open_dataset(path)
    done = done_flags(path)
    plan = planned(path)
    lines = [f"cmbcube store {path}",
             f"  recipe      {attrs['recipe_name']} (hash {attrs['recipe_hash'][:12]}, created {attrs['created']})"]
    if attrs.get("recipe_overrides"):
        lines.append(f"  overrides   {' '.join(attrs['recipe_overrides'])}")
    grid = nside(attrs)
    lines.append(f"  grid        HEALPix nside {grid} ({12 * grid ** 2} pixels, "
                 f"{attrs['healpix_order'].upper()}), sky model nside {attrs['sky_nside']}, "
                 f"{attrs['coordinate_system']} coordinates, "
                 f"pixel window {'applied' if attrs['pixel_window_applied'] else 'not applied'}")
    lines.append("  splits      " + ", ".join(
        f"{s} {int((done & plan)[i].sum())}/{int(plan[i].sum())} done" for i, s in enumerate(SPLITS)))
    lines.append(f"  fields      {', '.join(map(str, ds.field.values))}")
    lines.append("  detectors   freq  centre GHz  beam'   unit    fields")
    for k, det in enumerate(ds.detector.values):
        fields = "".join(f for f, ok in zip(ds.field.values, ds.has_field.values[k]) if ok)
        lines.append(f"              {int(det):4d}  {float(ds.center_frequency_ghz[k]):9.3f}  "
                     f"{float(ds.beam_fwhm_arcmin[k]):5.2f}  {str(ds.unit.values[k]):7s} {fields}")
    if "cmb" in ds:
        lines.append(f"  CMB truth   unit {attrs['cmb_unit']}, "
                     f"beam {ds.cmb.attrs.get('beam_fwhm_arcmin', 0)}' (0 = none)")
    products = [name for name in ds.data_vars if name not in ("sim_done", "pred_done")]
    lines.append(f"  products    {', '.join(products)}")
    gone = json.loads(attrs.get(DROPPED_ATTR, "[]"))
    if gone:
        lines.append("  dropped     " + ", ".join(f"{d['product']} ({d['dropped']})" for d in gone))
    if "run" in ds.coords:
        counts = predicted_counts(path)
        for k, run in enumerate(ds.run.values):
            cnt = counts[k]
            lines.append(f"  run         {run}: {ds.run_method.values[k]}, "
                         f"beam {float(ds.run_beam_fwhm_arcmin[k]):.1f}', "
                         + ", ".join(f"{s} {int(c)}" for s, c in zip(SPLITS, cnt)) + " sims predicted")
    if "component" in ds.coords:
        lines.append(f"  components  {', '.join(map(str, ds.component.values))}")
    size = disk_size(path)
    if size is not None:
        lines.append(f"  on disk     {human(size)}")
    versions = json.loads(attrs.get("package_versions", "{}"))
    lines.append("  versions    " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    if ics.handles(path):
        from cmbcube.cube.icechunk_versions import summary_lines
        lines += summary_lines(path)                # the snapshot read, branches, tags, last commits
    return "\n".join(lines)
