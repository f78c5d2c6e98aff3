"""The ilc stage: NILC or HILC over many sims at once, one Dask task per sim,
temperature and polarisation (E and B separately), predictions written into the
cube's ``pred`` product along the ``run`` axis.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time

import numpy as np

from cmbcube import cube
from cmbcube.compute.fanout import StageReport, fan_out
from cmbcube.errors import param
from cmbcube.recipe import SPLITS
from cmbcube.science import needlets, sht

# the ILC itself (pure numpy) and its method registry, re-exported: cmbcube.stages.ilc.METHODS is the same table
from cmbcube.science.ilc import (  # noqa: F401
    CMBML_COMMON_BEAM,
    CMBML_DETECTORS,
    METHODS,
    ILCConfig,
    clean_sim,
    hilc_method,
    nilc_method,
)

log = logging.getLogger("cmbcube")


def resolve_config(store: str, config: ILCConfig) -> ILCConfig:
    """Validate against the cube and fill defaults; errors name the parameter."""
    if config.method not in METHODS:
        raise needlets.ILCError(f"{param('method')} {config.method!r}: allowed: {', '.join(METHODS)}")
    nside = cube.nside(store)
    have = cube.detectors(store)
    in_cube = cube.fields(store)
    wanted = list(config.detectors)
    if config.detectors == CMBML_DETECTORS:
        wanted = [d for d in CMBML_DETECTORS if d in have]
    unknown = [d for d in wanted if d not in have]
    if unknown:
        raise needlets.ILCError(f"{param('detectors')}: {unknown} not in the cube; "
                                f"allowed: {', '.join(map(str, have))}")
    fields = [f for f in config.fields if f in in_cube]
    missing = [f for f in config.fields if f not in in_cube]
    if missing and config.fields != ("I", "Q", "U"):
        raise needlets.ILCError(f"{param('fields')}: {missing} not in the cube; allowed: {', '.join(in_cube)}")
    if not fields:
        raise needlets.ILCError(f"{param('fields')}: none of the requested fields is in the cube")
    lmax = 3 * nside - 1
    if config.gaussian_fwhms:
        needlets.gaussian_windows(config.gaussian_fwhms, lmax)
        peaks = None
    else:
        peaks = tuple(config.peaks) if config.peaks else tuple(needlets.default_peaks(nside))
        needlets.cosine_windows(peaks, lmax)
    for name in config.deproject:
        needlets.sed_vector(name, [100.0], ["uK_CMB"])
    if config.bias_tolerance <= 0:
        raise needlets.ILCError(f"{param('bias_tolerance')} {config.bias_tolerance}: must be > 0")
    if config.common_beam_arcmin < 0:
        raise needlets.ILCError(f"{param('common_beam_arcmin', dest='common_beam')} {config.common_beam_arcmin}: "
                                "must be >= 0 arcmin")
    if len(wanted) < 1 + len(config.deproject):
        raise needlets.ILCError(f"{param('detectors')}: {len(wanted)} channel(s) cannot constrain CMB + "
                                f"{len(config.deproject)} deprojected SED(s)")
    return dataclasses.replace(config, detectors=tuple(wanted), fields=tuple(fields), peaks=peaks,
                               gaussian_fwhms=tuple(config.gaussian_fwhms) if config.gaussian_fwhms else None)


def _clean_task(store: str, run: int, config: ILCConfig, split: str, sim: int) -> float:
    from cmbcube.drills import hold
    t0 = time.perf_counter()
    group = cube.read_group(store)      # damaged finished units raise
    if cube.prediction_done(group, run, split, sim):
        return 0.0     # already written: Dask reran a finished task whose worker died holding its result
    fields_in = cube.fields(group)
    obs = read_detectors(group, split, sim, config.detectors)
    beams = cube.detector_beams(group, config.detectors)
    maps = clean_sim(obs, list(config.detectors), fields_in, cube.detector_units(group, config.detectors), config,
                     cube.nside(group), cube.cmb_unit(group), cube.bandpass(group),
                     beams_arcmin=[beams[d] for d in config.detectors])
    full = np.full((len(fields_in), maps.shape[-1]), np.nan, dtype=np.float32)
    for k, f in enumerate(config.fields):
        full[fields_in.index(f)] = maps[k]
    hold("ILC", split, sim)                    # fault drills only (cmbcube.testing)
    cube.write_prediction(store, run, split, sim, full)
    return time.perf_counter() - t0


def read_detectors(group, split: str, sim: int, detectors) -> np.ndarray:
    """(detector, field, pixel) of ``detectors``: the whole sim read at once, then selected here.

    Asking the cube for a subset of detectors goes through zarr's orthogonal selection, which peaks
    at ~25x the bytes it returns (measured: 650 MB for 25 MB at nside 256, more than the ILC itself);
    the whole sim costs its own size."""
    have = cube.detectors(group)
    index = [have.index(int(d)) for d in detectors]
    every = cube.read_obs(group, split, sim)
    return every if index == list(range(len(have))) else every[index]


@dataclasses.dataclass
class ILCReport(StageReport):
    run: str


def run(store: str, config: ILCConfig, run_name: str | None = None, splits=("test",), scheduler=None,
        scheduler_file=None, workers=None, progress=None, force_size: bool = False) -> ILCReport:
    from cmbcube.compute import limits
    cube.require_store(store)
    for split in splits:
        if split not in SPLITS:
            raise needlets.ILCError(f"{param('splits', dest='split')} {split!r}: allowed: {', '.join(SPLITS)}")
    config = resolve_config(store, config)
    run_name = run_name or config.method
    limits.check_ilc(store, run_name, splits, len(config.detectors), len(config.fields),
                     len(config.peaks or config.gaussian_fwhms or ()), cube.store_recipe(store)["cluster"],
                     scheduler, scheduler_file, workers, force_size)      # disk and memory, before the run exists
    beam = config.common_beam_arcmin
    beams = cube.detector_beams(store, config.detectors)
    log.info("ilc %s: channel beams as the store records them: %s; output at %g'", run_name,
             ", ".join(f"{d} GHz {w:g}'" for d, w in beams.items()), beam)
    irun = cube.ensure_run(store, run_name, config.method, config.as_dict(), beam)
    todo = cube.run_pending(store, irun, splits)
    done_before = cube.pred_done_count(store, irun, splits)
    report = ILCReport(run_name, already_done=done_before)
    if not todo:
        return report
    settings = cube.store_recipe(store)["cluster"]
    scheduler, threads = in_process_plan(settings, scheduler, scheduler_file, workers, len(todo))
    previous = sht.nthreads()
    sht.set_threads(threads or previous)
    try:
        return fan_out(report, _clean_task, (store, irun, config), todo, label=f"ilc-{run_name}",
                       desc=f"ilc {run_name}", cluster=settings, scheduler=scheduler, scheduler_file=scheduler_file,
                       workers=workers, progress=progress, where=f"{store} pred[run={run_name}]", consolidate=store)
    finally:
        sht.set_threads(previous)


def in_process_plan(settings, scheduler, scheduler_file, workers, n_units: int):
    """(scheduler, transform threads or None) for the ILC stage.

    One sim on a local cluster runs in this process instead (starting a cluster costs seconds and one
    task would leave all workers but one idle), and a run in this process (that case, or ``synchronous``)
    gives each transform the cores the local cluster would have used (workers x threads_per_worker,
    at most the CPUs this process may use), unless $CMBCUBE_SHT_THREADS says otherwise.
    Returns threads None when nothing changes (tasks on a cluster: one thread each, as before).
    """
    from cmbcube.compute import cluster
    p = cluster.plan(settings, scheduler, scheduler_file, workers)
    if p["mode"] == "local" and n_units == 1:
        scheduler = "synchronous"
        log.info("ilc: one sim to clean: running it in this process instead of starting %d workers", p["workers"])
    elif p["mode"] != "synchronous":
        return scheduler, None
    if os.environ.get("CMBCUBE_SHT_THREADS"):
        return scheduler, None
    local = cluster.plan(settings, None, None, workers)
    cores = local["workers"] * local["threads"] if local["mode"] == "local" else 1
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return scheduler, max(1, min(cores, available))
