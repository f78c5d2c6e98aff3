"""The analyze stage: score every run the same way, lazily from the cube, with Dask over sims.

Per (run, sim): map metrics at each common beam and the run's coverage
(:func:`cmbcube.science.metrics.map_metrics`), spectra of truth, prediction, residual and
their cross spectrum by the chosen estimator (``namaster`` default, or ``pseudo-fast``;
:mod:`cmbcube.science.spectra`), and the spectra's errors against truth and theory.
The store is read and written through :mod:`cmbcube.cube.analysis_io`: ``metrics``
(run, split, sim, beam, field, metric), ``spectra`` (run, split, sim, kind, spectrum,
ell_bin), ``analysis_done``, the masks ``mask`` / ``mask_apodized`` (pixel) and, for
NaMaster, ``spectra_window``.  One store holds one estimator's spectra.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

from cmbcube.compute.fanout import StageReport, fan_out
from cmbcube.cube import analysis_io
from cmbcube.errors import InputError, param
from cmbcube.science import metrics as sm, spectra as ss


@dataclasses.dataclass
class AnalysisReport(StageReport):
    """written: the (run, split, sim) analysed now; failed: (run, split, sim, message)."""


def build_masks(store: str, f_sky: float, mask_file: str | None = None) -> None:
    """Driver-side: the analysis mask (binary) and its apodised version, stored once per f_sky."""
    import healpy as hp
    nside, existing, estimator = analysis_io.mask_state(store)
    source = mask_file or f"foreground f_sky={f_sky}"
    scale = sm.apodization_arcmin(nside)
    if existing and existing.get("source") == source and (
            (existing.get("apodization") == sm.APODIZATION and existing.get("apodization_arcmin") == scale)
            or estimator is not None):     # analysed sims keep the taper they were analysed on
        return
    if mask_file:
        m = hp.read_map(mask_file, nest=True)
        mask = hp.ud_grade(m, nside, order_in="NESTED", order_out="NESTED") > 0.5
    else:
        mask = sm.galactic_mask(sm.foreground_tracer(*analysis_io.read_mask_maps(store)), f_sky)
    analysis_io.write_masks(store, mask, sm.apodize(mask, scale), sm.mask_attrs(source, mask, scale))


def store_windows(store: str, nside: int) -> None:
    """Driver-side: NaMaster's bandpower windows for the store's mask (``spectra_window``, with the E-to-B
    leakage measured on pure-E sims), once per mask; computing them also writes the coupling matrices and
    the leakage the workers share."""
    mask, apod, source = analysis_io.read_masks(store)
    if analysis_io.windows_current(store, source):
        return
    nbins = len(ss.ell_bins(nside)) - 1
    windows = analysis_io.namaster_for(nside, apod, mask, nbins, store).windows()
    analysis_io.write_windows(store, windows, source)


def analyse_one(store: str, run: int, split: str, sim: int, estimator: str = "namaster") -> None:
    """Task body: metrics and spectra of one (run, sim); written as one chunk each, flag last."""
    x = analysis_io.read_analysis_inputs(store, run, split, sim)
    ok = [k for k in range(len(x.fields)) if np.isfinite(x.pred[k]).all()]
    fields_ok = [x.fields[k] for k in ok]
    truth, pred = x.truth[ok], x.pred[ok]
    sigma = x.sigma[ok] if x.sigma is not None else None
    values = sm.map_metrics(truth, pred, fields_ok, x.fields, x.mask, x.beam_truth, x.beam_pred, x.nside, sigma)
    nm = None
    if estimator == "namaster":
        nm = analysis_io.namaster_for(x.nside, x.apod, x.mask, len(ss.ell_bins(x.nside)) - 1, store)
    resid = pred - sm.to_beam(truth, fields_ok, x.beam_truth, x.beam_pred, x.nside)
    spectra = ss.sim_spectra(truth, pred, resid, fields_ok, x.apod, x.beam_truth, x.beam_pred, x.nside,
                             x.pixel_window, nm)
    for f, errors in ss.spectrum_errors(spectra, x.cl_theory, fields_ok, x.nside, nm).items():
        for name, value in errors.items():
            values[:, x.fields.index(f), sm.METRICS.index(name)] = value
    from cmbcube.drills import hold
    hold("ANALYZE", run, split, sim)           # fault drills only (cmbcube.drills)
    analysis_io.write_analysis(store, run, split, sim, values, spectra)


def run(store: str, runs="all", splits=("test",), f_sky: float = 0.8, mask_file: str | None = None,
        scheduler=None, scheduler_file=None, workers=None, progress=None,
        estimator: str = "namaster", force_size: bool = False) -> AnalysisReport:
    """Analyse every predicted (run, sim) not analysed yet.  ``estimator``: ``namaster`` (default: NaMaster
    bandpowers, refused with an InputError naming how to install pymaster when it is missing) or
    ``pseudo-fast``; one store holds one estimator's spectra (checked before anything is written)."""
    from cmbcube import cube
    from cmbcube.compute import limits
    ss.check_estimator(estimator)           # before the store: the estimator is wrong whatever the store
    cube.require_store(store)
    names = analysis_io.run_names(store)
    wanted = names if runs in ("all", None) else list(runs)
    unknown = [r for r in wanted if r not in names]
    if unknown:
        raise InputError(f"{param('runs')} {unknown}: not in the cube; allowed: all, {', '.join(names)}")
    previous = analysis_io.stored_estimator(store)
    if previous is not None and previous != estimator:
        raise InputError(f"{param('estimator')} {estimator}: {store} holds spectra from the {previous} estimator; "
                         f"analyse with {param('estimator', previous)}, or drop the analysis first "
                         f"(cmbcube drop {store} analysis)")
    build_masks(store, f_sky, mask_file)
    nside = cube.nside(store)
    analysis_io.ensure_analysis_arrays(store, len(ss.ell_bins(nside)) - 1, estimator)
    if estimator == "namaster":
        store_windows(store, nside)
    todo, already = analysis_io.analysis_todo(store, [names.index(r) for r in wanted], splits)
    report = AnalysisReport(already_done=already)
    if not todo:
        return report
    recipe = cube.store_recipe(store)
    per_sim = analysis_io.analysis_bytes_per_sim(store)
    limits.check_growth(store, "analyze", len(todo) * (per_sim + 64), 3 * len(todo),
                        limits.PROCESS_BASE + 12 * nside ** 2 * 8 * 40, recipe["cluster"],
                        scheduler, scheduler_file, workers, force_size)
    return fan_out(report, functools.partial(analyse_one, estimator=estimator), (store,), todo, label="analyze",
                   cluster=recipe["cluster"], scheduler=scheduler, scheduler_file=scheduler_file, workers=workers,
                   progress=progress, bar_items=[(names[r], s, k) for r, s, k in todo],
                   where=f"{store} metrics, spectra", consolidate=store)
