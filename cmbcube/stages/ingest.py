"""``cmbcube ingest-cmbml``: read a CMB-ML dataset tree into a cube.

Ingest builds a recipe that describes the tree (nside, splits, detectors, fields, units,
beams: :mod:`cmbcube.interop.cmbml_scan`), creates the cube from it and runs one Dask task per
sim that reads the files (healpy, RING -> NESTED, units converted to the cube's) and writes
them through the cube layer, data first and done-flag last; a rerun resumes.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import time

import numpy as np

from cmbcube import __version__, cube
from cmbcube.compute.fanout import StageReport, fan_out
from cmbcube.interop.cmbml_files import (
    CMB_FILE,
    PARAMS_FILE,
    SPECTRA_FILE,
    CMBMLError,
    read_maps,
    read_params,
    read_spectra,
)
from cmbcube.interop.cmbml_scan import Plan, beam_sources, recipe_for, scan
from cmbcube.science import instrument

log = logging.getLogger("cmbcube")


@dataclasses.dataclass
class IngestReport(StageReport):
    store: str
    source: str
    status: str                        # created / existing
    planned: int
    files: int = 0                     # files checked by the scan

    def add_failure(self, item, error) -> None:
        super().add_failure(item, error)
        log.warning("sim %s/%d failed: %s", item[0], item[1], error)


@dataclasses.dataclass
class IngestedSim:
    """One sim's arrays read from its files, as :func:`cmbcube.cube.write_sim` takes them
    (an ingested tree has no separate foreground components or noise)."""
    obs: np.ndarray                 # (detector, field, pixel) float32, NESTED, the cube's units
    cmb: np.ndarray                 # (field, pixel) float32, NESTED
    params: np.ndarray              # (param,) float64, NaN where the tree gives none
    cls: np.ndarray                 # (spectrum, ell) float64, uK_CMB^2
    components: None = None
    noise: None = None


def ingest_one(store: str, plan: Plan, cube_units: dict, cmb_unit: str, split: str, sim: int) -> dict:
    """Task body: read one sim's files and write them into the cube (data first, done-flag last)."""
    t0 = time.perf_counter()
    sim_dir = plan.sim_dir(split, sim)
    npix = 12 * plan.nside ** 2
    obs = np.full((len(plan.detectors), len(plan.fields), npix), np.nan, dtype=np.float32)
    for i, freq in enumerate(plan.detectors):
        det = instrument.detector(freq)
        wanted = [f for f in plan.fields if f in det.fields]
        maps = read_maps(sim_dir / f"obs_{freq}_map.fits", wanted, plan.nside, cube_units[freq], det.centre_ghz)
        for k, f in enumerate(wanted):
            obs[i, plan.fields.index(f)] = maps[k]
    cmb = read_maps(sim_dir / CMB_FILE, plan.fields, plan.nside, cmb_unit, 143.0)
    params, _ = read_params(plan.side_file(split, sim, PARAMS_FILE))
    cls = read_spectra(plan.side_file(split, sim, SPECTRA_FILE))
    t1 = time.perf_counter()
    cube.write_sim(store, split, sim, IngestedSim(obs, cmb, params, cls))
    return {"read": t1 - t0, "write": time.perf_counter() - t1}


def run(source_dir, store, scheduler: str | None = None, scheduler_file: str | None = None,
        workers: int | None = None, progress: bool | None = None, name: str | None = None,
        units: str | None = None, beams: str = "cmb-ml", force_size: bool = False) -> IngestReport:
    """Read a CMB-ML tree into the cube at ``store`` (created, or resumed when it holds the same tree).

    Every file is checked (names, nside, fields, units) before the store is touched; a store
    made from anything else is refused and left as it is.  One Dask task per sim.
    """
    from cmbcube.compute import limits  # store size and sim caps (no sky model: memory is not checked)
    from cmbcube.science.instrument import cmb_unit as cmb_unit_of
    if units is not None and units not in ("uK_CMB", "K_CMB", "native"):
        raise CMBMLError(f"units {units!r}: allowed: uK_CMB, K_CMB, native")
    store = str(store)
    plan = scan(source_dir)
    recipe = recipe_for(plan, name, units, beams)
    pending = None
    if cube.holds_recipe(store, recipe):
        pending = len(cube.pending(store))
    limits.check(limits.simulate_plan(recipe, pending, "ingest-cmbml"), store, (None, ""), force_size)
    status = cube.create_or_check(store, recipe)
    with cube.sims_lock(store, "ingest-cmbml"):      # one sim writer per store
        r = recipe.data
        cube_units = {d.freq: instrument.resolve_unit(r["units"], d) for d in recipe.detectors()}
        cmb_unit = cmb_unit_of(r["units"])
        planned = cube.planned(store)
        todo = cube.pending(store)
        report = IngestReport(store, plan.root, status, int(planned.sum()), files=plan.n_files,
                              already_done=int(planned.sum()) - len(todo))
        if not todo:
            return report                   # nothing to do: the store is not written at all
        cube.update_attrs(store, {
            "source_format": "cmb-ml",
            "source_dir": plan.root,
            "source_units": json.dumps(plan.source_units),
            "source_beams": json.dumps({str(f): f"{w:g} ({src})" for f, w, src in beam_sources(plan, beams)}),
            "source_params_ignored": json.dumps(plan.ignored_param_keys),
            "ingested": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "ingested_by": f"cmbcube {__version__}",
        })
        return fan_out(report, ingest_one, (store, plan, cube_units, cmb_unit), todo, label="ingest",
                       cluster=r["cluster"], scheduler=scheduler, scheduler_file=scheduler_file, workers=workers,
                       progress=progress, where=store, consolidate=store)
