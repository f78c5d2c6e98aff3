"""The simulate stage: one Dask task per sim, each writing its own shards.

Resumable: sims already flagged done are skipped; failures are collected and
reported at the end while every finished sim stays written.
"""
from __future__ import annotations

import dataclasses
import errno
import logging
import os
import time

import numpy as np

from cmbcube import cube
from cmbcube.recipe import SPLITS, Recipe, load
from cmbcube.errors import MissingFileError

log = logging.getLogger("cmbcube")

_SIMULATORS: dict[str, object] = {}     # per worker process, keyed by recipe hash


@dataclasses.dataclass
class SimulateReport:
    store: str
    status: str                        # created / existing
    planned: int
    already_done: int
    written: list = dataclasses.field(default_factory=list)
    failed: list = dataclasses.field(default_factory=list)   # (split, sim, message)
    seconds: float = 0.0
    timings: dict = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


def _injected_failure(split: str, sim: int) -> None:
    """Testing hook: CMBCUBE_FAIL_SIMS="train/3,test/0" makes those sims raise."""
    wanted = os.environ.get("CMBCUBE_FAIL_SIMS", "")
    if f"{split}/{sim}" in [w.strip() for w in wanted.split(",") if w.strip()]:
        raise RuntimeError(f"injected failure for {split}/{sim} (CMBCUBE_FAIL_SIMS)")


def _injected_delay(split: str, sim: int) -> None:
    """Testing hook for fault drills (cmbcube.drills): CMBCUBE_SIM_DELAY=SECONDS holds every sim that
    long between computing and writing; with CMBCUBE_SIM_TRACE=DIR each sim first touches
    DIR/{split}-{sim}-{pid} (the process running it), so a test can kill exactly that process mid-sim."""
    from cmbcube.drills import hold
    hold("SIM", split, sim)


def simulate_one(store: str, recipe: Recipe, split: str, sim: int) -> dict:
    """Task body: compute one sim and write it (data first, done-flag last)."""
    from cmbcube.stages.simspec import simulator as make_simulator
    if cube.done_flags(store)[SPLITS.index(split), sim]:
        return {}      # already written: Dask reran a finished task whose worker died holding its result
    _injected_failure(split, sim)
    simulator = _SIMULATORS.get(recipe.hash)
    if simulator is None:
        simulator = _SIMULATORS[recipe.hash] = make_simulator(recipe)
    result = simulator.run(split, sim)
    _injected_delay(split, sim)
    t0 = time.perf_counter()
    cube.write_sim(store, split, sim, result)
    result.timings["write"] = time.perf_counter() - t0
    return result.timings


def flagged_without_data(store: str) -> list[tuple[str, int]]:
    """Sims flagged done whose obs or cmb shard file is absent (a flag set by hand, or data deleted):
    one existence check per file, cheap next to reading anything.  (Only the map products: zarr skips
    chunks equal to the fill value, so an all-NaN cosmo_params, e.g. with the CMB disabled, has no file.)"""
    group = cube.fresh_group(store)
    names = set(group.array_keys())
    arrays = [(name, group[name]) for name in ("obs", "cmb") if name in names]
    out = []
    for isplit, sim in zip(*np.nonzero(cube.done_flags(store))):
        for name, arr in arrays:
            if not all(os.path.exists(f) for _, f in cube.unit_files(store, arr, name, (isplit, sim))):
                out.append((SPLITS[int(isplit)], int(sim)))
                break
    return out


def preflight(recipe: Recipe) -> None:
    """Check every input file a recipe names before anything is created (fail fast, offline)."""
    from pathlib import Path

    from cmbcube.interop.templates import missing_pysm_files, search_dirs
    r = recipe.data
    fg = r["foregrounds"]
    if fg["model"] == "pysm3":
        missing = missing_pysm_files(fg["presets"], r["sky_nside"], fg["data_dir"])
        if missing:
            where = ", ".join(map(str, search_dirs(fg["data_dir"]))) or "nowhere: set foregrounds.data_dir or PYSM_LOCAL_DATA"
            raise MissingFileError(f"foregrounds.presets: {len(missing)} pysm3 template file(s) missing "
                                    f"(looked in {where}):\n  " + "\n  ".join(missing))
    if r["cmb"]["enabled"] and r["cmb"]["prior"] == "chain" and not Path(r["cmb"]["chain_file"]).is_file():
        raise MissingFileError(f"cmb.chain_file: {r['cmb']['chain_file']} does not exist")
    if r["noise"]["model"] == "variance_maps":
        absent = [f"{f}.fits" for f in r["detectors"] if not (Path(r["noise"]["variance_dir"]) / f"{f}.fits").is_file()]
        if absent:
            raise MissingFileError(f"noise.variance_dir: {r['noise']['variance_dir']} lacks {', '.join(absent)}")


def run(recipe: Recipe | str, store: str, scheduler: str | None = None, scheduler_file: str | None = None,
        workers: int | None = None, overrides=(), progress: bool | None = None,
        force_size: bool = False) -> SimulateReport:
    """Simulate every planned sim not yet done.  Sizes are checked first (:mod:`cmbcube.stages.limits`):
    a recipe whose store, sims or per-sim memory do not fit is refused (LimitError) before
    anything is created, unless ``force_size``."""
    from cmbcube.stages import limits
    from cmbcube.stages.cluster import client_for, run_tasks
    if not isinstance(recipe, Recipe):
        recipe = load(recipe, overrides)
    store = str(store)
    pending = None
    if os.path.isdir(store) and cube.read_attrs(store).get("recipe_hash") == recipe.hash:
        pending = len(cube.pending(store))
    _, forced = limits.check_simulate(recipe, store, scheduler, scheduler_file, workers, force_size, pending)
    for problem in forced:
        log.warning("--force-size: %s", problem)
    preflight(recipe)
    status = cube.create_or_check(store, recipe)
    log.info("store %s: %s", store, status)
    with cube.sims_lock(store, "simulate"):
        return _run(recipe, store, status, scheduler, scheduler_file, workers, progress)


def _run(recipe, store, status, scheduler, scheduler_file, workers, progress) -> SimulateReport:
    from cmbcube.stages.cluster import client_for, run_tasks
    hollow = flagged_without_data(store)
    if hollow:
        log.warning("%s: sim_done is set for %d sim(s) whose data files are missing (%s): hand-edited or damaged "
                    "flags; simulating them again (cmbcube verify checks every chunk of every flagged sim)", store,
                    len(hollow), ", ".join(f"{s}/{k}" for s, k in hollow[:10]) + (", ..." if len(hollow) > 10 else ""))
        for split, sim in hollow:
            cube.clear_done(store, split, sim)
    planned = cube.planned(store)
    todo = cube.pending(store)
    report = SimulateReport(store, status, int(planned.sum()), int(planned.sum()) - len(todo))
    if not todo:
        return report
    t_start = time.perf_counter()
    from cmbcube.progress import bar as progress_bar
    bar = progress_bar(len(todo), "simulate", progress=progress, items=todo, where=store)

    def record(key, timings=None, error=None):
        if error is None:
            report.written.append(key)
            for name, seconds in (timings or {}).items():
                report.timings[name] = report.timings.get(name, 0.0) + seconds
        else:
            hint = ""
            if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
                hint = f" ({store}: the disk is full; free some space, then rerun: finished sims stay)"
            report.failed.append((*key, f"{type(error).__name__}: {error}{hint}"))
            log.warning("sim %s/%d failed: %s", key[0], key[1], error)
        bar.update(1, failed=error is not None)

    try:
        with client_for(recipe["cluster"], scheduler, scheduler_file, workers) as client:
            run_tasks(client, simulate_one, (store, recipe), todo, "simulate",
                      lambda key, timings, error: record(key, timings, error))
    finally:
        bar.close()
        report.seconds = time.perf_counter() - t_start
        try:
            cube.consolidate(store)
        except cube.StoreError as err:
            if not report.failed:
                raise
            # simulate changes no metadata: the old consolidated copy stays right; keep the failures' list
            log.warning("%s", err)
    return report
