"""The ilc stage: NILC or HILC over many sims at once, one Dask task per sim,
temperature and polarisation (E and B separately), predictions written into the
cube's ``pred`` product along the ``run`` axis.
"""
from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from cmbcube import cube
from cmbcube.errors import param
from cmbcube.recipe import SPLITS
from cmbcube.science import needlets

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
from cmbcube.stages.fanout import StageReport, fan_out

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
    from cmbcube.testing import hold
    t0 = time.perf_counter()
    group = cube.read_group(store)      # damaged finished units raise
    if cube.prediction_done(group, run, split, sim):
        return 0.0     # already written: Dask reran a finished task whose worker died holding its result
    fields_in = cube.fields(group)
    obs = cube.read_obs(group, split, sim, config.detectors)
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


@dataclasses.dataclass
class ILCReport(StageReport):
    run: str


def run(store: str, config: ILCConfig, run_name: str | None = None, splits=("test",), scheduler=None,
        scheduler_file=None, workers=None, progress=None, force_size: bool = False) -> ILCReport:
    from cmbcube.stages import limits
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
    return fan_out(report, _clean_task, (store, irun, config), todo, label=f"ilc-{run_name}", desc=f"ilc {run_name}",
                   cluster=cube.store_recipe(store)["cluster"], scheduler=scheduler, scheduler_file=scheduler_file,
                   workers=workers, progress=progress, where=f"{store} pred[run={run_name}]", consolidate=store)
