"""``cmbcube export-cmbml``: write a cube's finished sims as a CMB-ML dataset tree.

The tree's layout and file formats: :mod:`cmbcube.interop.cmbml_files`.  One Dask task per
sim; every file is written under a temporary name and renamed, so none is ever half-written.
"""
from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

import numpy as np

from cmbcube import __version__, cube
from cmbcube.compute.fanout import StageReport, fan_out
from cmbcube.errors import MissingFileError, param
from cmbcube.interop.cmbml_files import (
    CMB_FILE,
    PARAMS_FILE,
    SPECTRA_FILE,
    SPLIT_DIRS,
    CMBMLError,
    atomic_write_text,
    sim_files,
    sim_name,
    write_map,
    write_params,
    write_spectra,
)
from cmbcube.recipe import SPLITS
from cmbcube.science import instrument

EXPORT_UNITS = ("uK_CMB", "K_CMB", "store")


@dataclasses.dataclass
class ExportReport(StageReport):
    destination: str
    skipped: list = dataclasses.field(default_factory=list)    # already complete in the destination

    def add(self, item, result) -> None:
        (self.skipped if result == "skipped" else self.written).append(item)


def export_one(store: str, destination: str, units: str, overwrite: bool, split: str, sim: int) -> str:
    """Task body: one finished sim of the cube -> its CMB-ML folder.  Returns 'written' or 'skipped'."""
    ds = cube.open_dataset(store, chunks=None)
    detectors = [int(d) for d in ds.detector.values]
    sim_dir = Path(destination) / "Simulation" / SPLIT_DIRS[split] / sim_name(sim)
    if not overwrite and all((sim_dir / n).is_file() for n in sim_files(detectors)):
        return "skipped"
    sim_dir.mkdir(parents=True, exist_ok=True)
    fields = [str(f) for f in ds.field.values]
    isplit = SPLITS.index(split)
    obs = np.asarray(ds.obs[isplit, sim].values, dtype=np.float64)
    pixwin = bool(ds.attrs.get("pixel_window_applied", False))
    beams = cube.detector_beams(ds)
    from cmbcube.recipe import from_store_attrs
    bands = {d.freq: d for d in from_store_attrs(ds.attrs).detectors()}     # the store's bandpasses
    for i, freq in enumerate(detectors):
        det = instrument.detector(freq)
        have = [f for k, f in enumerate(fields) if bool(ds.has_field.values[i, k])]
        source_unit = str(ds.unit.values[i])
        unit = source_unit if units == "store" else units
        maps = obs[i, [fields.index(f) for f in have]]
        if unit != source_unit:
            maps = maps * instrument.band_unit_factor(bands[freq], source_unit, unit)    # over the store's band
        extra = [("FWHM", beams[freq], "[arcmin] Gaussian beam FWHM"),
                 ("FREQ", det.freq, "[GHz] detector"), ("PIXWIN", pixwin, "pixel window applied"),
                 ("CREATOR", f"cmbcube {__version__}", "")]
        write_map(sim_dir / f"obs_{freq}_map.fits", maps, have, unit, extra)
    cmb_unit = str(ds.cmb.attrs.get("units", ds.attrs.get("cmb_unit", "uK_CMB")))
    unit = cmb_unit if units == "store" else units
    cmb = np.asarray(ds.cmb[isplit, sim].values, dtype=np.float64)
    if unit != cmb_unit:
        cmb = cmb * instrument.unit_factor(143.0, cmb_unit, unit)
    extra = [("FWHM", cube.truth_beam(ds), "[arcmin] beam of the CMB truth (0: none)"),
             ("PIXWIN", pixwin, "pixel window applied"), ("CREATOR", f"cmbcube {__version__}", "")]
    write_map(sim_dir / CMB_FILE, cmb, fields, unit, extra)
    write_params(sim_dir / PARAMS_FILE, np.asarray(ds.cosmo_params[isplit, sim].values))
    write_spectra(sim_dir / SPECTRA_FILE, np.asarray(ds.cl_theory[isplit, sim].values))
    return "written"


def run(store, destination_dir, splits=None, units: str = "uK_CMB", overwrite: bool = False,
        scheduler: str | None = None, scheduler_file: str | None = None, workers: int | None = None,
        progress: bool | None = None) -> ExportReport:
    """Write the finished sims of ``splits`` (default: all) as a CMB-ML tree under ``destination_dir``.

    Maps go out RING-ordered with their unit in TUNITn (``units``: uK_CMB as CMB-ML's datasets,
    K_CMB, or ``store`` for the cube's own) and the beam in a FWHM card; parameters with WMAP chain
    names; spectra as CAMB writes them.  Sims whose files are all present are skipped unless
    ``overwrite``; each file is written to a temporary name and renamed, so none is ever half-written.
    """
    store = str(store)
    attrs = cube.read_attrs(store)
    if "recipe_hash" not in attrs:
        raise cube.StoreError(f"{store} is a Zarr store but not a cmbcube store")
    if units not in EXPORT_UNITS:
        raise CMBMLError(f"units {units!r}: allowed: {', '.join(EXPORT_UNITS)}")
    splits = list(splits or SPLITS)
    bad = [s for s in splits if s not in SPLITS]
    if bad:
        raise CMBMLError(f"{param('splits', dest='split')} {bad[0]!r}: allowed: {', '.join(SPLITS)}")
    destination = Path(destination_dir)
    if destination.exists() and not destination.is_dir():
        raise CMBMLError(f"{destination}: exists and is not a directory")
    if not destination.parent.exists():
        raise MissingFileError(f"{destination}: parent directory {destination.parent} does not exist")
    done = cube.done_flags(store) & cube.planned(store)
    todo = [(s, int(k)) for s in splits for k in np.nonzero(done[SPLITS.index(s)])[0]]
    report = ExportReport(str(destination))
    if not todo:
        raise CMBMLError(f"{store}: no finished sims in {', '.join(splits)} to export")
    destination.mkdir(exist_ok=True)
    recipe = cube.store_recipe(store)
    fan_out(report, export_one, (store, str(destination), units, overwrite), todo, label="export",
            cluster=recipe["cluster"], scheduler=scheduler, scheduler_file=scheduler_file, workers=workers,
            progress=progress, where=f"{destination}/Simulation")
    import yaml
    atomic_write_text(destination / "cmbcube_export.yaml", yaml.safe_dump({
        "exported_from": str(Path(store).resolve()) if not cube.is_remote(store) else store,
        "recipe_name": attrs.get("recipe_name"), "recipe_hash": attrs.get("recipe_hash"),
        "units": units, "exported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "exported_by": f"cmbcube {__version__}",
        "sims": {s: int(sum(1 for x in todo if x[0] == s)) for s in splits},
    }, sort_keys=False))
    return report
