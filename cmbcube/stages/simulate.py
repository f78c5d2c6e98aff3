"""The simulate stage: one Dask task per sim, each writing its own shards.

Resumable: sims already flagged done are skipped; failures are collected and
reported at the end while every finished sim stays written.
"""
from __future__ import annotations

import dataclasses
import errno
import logging
import shutil
import time

from cmbcube import cube, drills
from cmbcube.compute.fanout import StageReport, failure_text, fan_out
from cmbcube.recipe import SPLITS, Recipe, load

log = logging.getLogger("cmbcube")

_SIMULATORS: dict[str, object] = {}     # per worker process, keyed by recipe hash


@dataclasses.dataclass
class SimulateReport(StageReport):
    store: str
    status: str                        # created / existing
    planned: int
    timings: dict = dataclasses.field(default_factory=dict)    # seconds per step, summed over written sims

    def add(self, item, result) -> None:
        super().add(item, result)
        for name, seconds in (result or {}).items():
            self.timings[name] = self.timings.get(name, 0.0) + seconds

    def add_failure(self, item, error) -> None:
        hint = ""
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            hint = f" ({self.store}: the disk is full; free some space, then rerun: finished sims stay)"
        self.failed.append((*item, failure_text(error) + hint))
        log.warning("sim %s/%d failed: %s", item[0], item[1], error)


def simulate_one(store: str, recipe: Recipe, split: str, sim: int) -> dict:
    """Task body: compute one sim and write it (data first, done-flag last)."""
    from cmbcube.stages.simspec import simulator as make_simulator
    if cube.done_flags(store)[SPLITS.index(split), sim]:
        return {}      # already written: Dask reran a finished task whose worker died holding its result
    drills.fail_if_injected(split, sim)             # CMBCUBE_FAIL_SIMS, tests only (cmbcube.drills)
    simulator = _SIMULATORS.get(recipe.hash)
    if simulator is None:
        simulator = _SIMULATORS[recipe.hash] = make_simulator(recipe)
    result = simulator.run(split, sim)
    drills.hold("SIM", split, sim)                  # fault drills only (cmbcube.drills)
    t0 = time.perf_counter()
    cube.write_sim(store, split, sim, result)
    result.timings["write"] = time.perf_counter() - t0
    return result.timings


def preflight(recipe: Recipe) -> None:
    """Check every input file a recipe names before anything is created (fail fast, offline):
    :func:`cmbcube.interop.inputs.require`."""
    from cmbcube.interop import inputs
    inputs.require(recipe)


def run(recipe: Recipe | str, store: str, scheduler: str | None = None, scheduler_file: str | None = None,
        workers: int | None = None, overrides=(), progress: bool | None = None,
        force_size: bool = False) -> SimulateReport:
    """Simulate every planned sim not yet done.  Sizes are checked first (:mod:`cmbcube.compute.limits`):
    a recipe whose store, sims or per-sim memory do not fit is refused (LimitError) before
    anything is created, unless ``force_size``."""
    from cmbcube.compute import cluster, limits
    from cmbcube.cube import location
    if not isinstance(recipe, Recipe):
        recipe = load(recipe, overrides)
    store = str(store)
    location.check_store_path(store)          # before anything looks at the path (a name too long: exit 2)
    pending = None
    if cube.holds_recipe(store, recipe):
        pending = len(cube.pending(store))
    _, forced = limits.check_simulate(recipe, store, scheduler, scheduler_file, workers, force_size, pending)
    for problem in forced:
        log.warning("--force-size: %s", problem)
    preflight(recipe)
    if pending is None or pending:            # sims to compute: a local cluster must be able to start
        cluster.check_can_start(recipe["cluster"], scheduler, scheduler_file, workers)
    status = cube.create_or_check(store, recipe)
    log.info("store %s: %s", store, status)
    try:
        with cube.sims_lock(store, "simulate"):
            return _run(recipe, store, status, scheduler, scheduler_file, workers, progress)
    except cluster.ClusterError as err:
        if status != "created" or cube.done_flags(store).any():
            raise
        if cube.is_remote(store):                     # an Icechunk repository or an s3:// prefix: say so
            raise cluster.ClusterError(f"{err} (nothing was computed; the empty store {store} was created "
                                       "and is left; the next simulate fills it)") from None
        shutil.rmtree(store, ignore_errors=True)      # made by this run, which wrote no sim: leave nothing
        raise cluster.ClusterError(f"{err} ({store} was not created: nothing was computed)") from None


def _run(recipe, store, status, scheduler, scheduler_file, workers, progress) -> SimulateReport:
    # flagged sims whose data files are gone: every map product the store keeps, and the parameters and
    # theory when the CMB is on (all-NaN chunks of a CMB-less store are never written, by design)
    products = ["obs", "cmb"] + (["components"] if cube.component_names(store) else []) + \
        (["noise"] if cube.has_noise(store) else []) + \
        (["cosmo_params", "cl_theory"] if recipe["cmb"]["enabled"] else [])
    hollow = cube.flagged_without_data(store, tuple(products))
    if hollow:
        log.warning("%s: sim_done is set for %d sim(s) whose data files are missing (%s): hand-edited or damaged "
                    "flags; simulating them again (cmbcube verify checks every chunk of every flagged sim)", store,
                    len(hollow), ", ".join(f"{s}/{k}" for s, k in hollow[:10]) + (", ..." if len(hollow) > 10 else ""))
        for split, sim in hollow:
            cube.clear_done(store, split, sim)
    planned = cube.planned(store)
    todo = cube.pending(store)
    report = SimulateReport(store, status, int(planned.sum()), already_done=int(planned.sum()) - len(todo))
    if not todo:
        return report
    # the lensing correction: computed here once (seconds to a minute on first use on a machine, then
    # cached) so that the workers read it instead of each computing it
    from cmbcube.stages import simspec
    log.info("lensed spectra: %s (cmb.lensing)", recipe["cmb"]["lensing"])
    simspec.lensing_correction(recipe)
    # simulate changes no metadata: when consolidation fails after sims failed, the old consolidated
    # copy stays right and the failures' list is what matters (lenient_consolidate)
    return fan_out(report, simulate_one, (store, recipe), todo, label="simulate", cluster=recipe["cluster"],
                   scheduler=scheduler, scheduler_file=scheduler_file, workers=workers, progress=progress,
                   where=store, consolidate=store, lenient_consolidate=True)
