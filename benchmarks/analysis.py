"""Analysis benchmark: the analyze stage (Dask, from the cube) against a serial loop over FITS files.

Run from the repository root::

    python benchmarks/analysis.py --quick      # 4 sims at nside 32 (< 2 min on 2 cores)
    python benchmarks/analysis.py              # 8 sims at nside 64
    python benchmarks/analysis.py --spectra-only 32,64,128   # NaMaster vs pseudo-fast spectra only

Every figure comes from one run of this script, side by side on one machine;
the load average is printed with each measurement (the machine may be shared).

Setup (untimed)
---------------
A store of N test sims is simulated (``cmbcube.stages.simulate.run``: all 9
Planck-like detectors, field I, keep [cmb]); NILC (``cmbcube.stages.ilc.run``,
CMB-ML's detectors, common beam 20.6') writes its predictions into it; the
analysis masks (foreground mask at f_sky 0.8 and its apodised version) are
built once with ``cmbcube.stages.analyze.build_masks``, so every copy of the store
and the FITS baseline use the same masks and no timed run builds them.  Then
the CMB-ML layout is written from the same arrays: one healpy FITS file per
map, RING order, float64 (``Test/sim0000/cmb_map_fid.fits`` for the truth,
``NILC/Test/sim0000/cmb_map_pred.fits`` for the prediction, and the two masks).

What is timed
-------------
* ``analyze.run(copy, workers=W)`` for W = 1 and 2, each on its own copy of
  the store (so each analyses all N sims): a local Dask cluster of W worker
  processes, one task per sim, metrics and spectra written into the cube.
  "end-to-end" = wall seconds of the call (cluster start-up and the workers'
  first imports included: what a user waits for); "steady" = the rate after
  every worker has finished one sim, from the completion times of the sims
  (mtime of each sim's ``analysis_done`` chunk, written last):
  (N - W) / (t_N - t_W).
* the same stage in-process (``scheduler="synchronous"``, no Dask), for
  reference: the cube read path without any cluster.
* the baseline, in a fresh process (imports untimed), one sim after another
  as CMB-ML does: read the two masks once, then per sim read the truth and
  the prediction with ``healpy.read_map``, reorder them to NESTED, and do
  exactly the work of ``analyze.analyse_one``: for each common beam
  (0, 20.6', 60') ``metrics.to_beam`` both maps, remove monopole and dipole
  (``metrics.remove_monopole_dipole``) on the mask, ``metrics.pixel_metrics``
  on the unmasked pixels; then the four binned spectra (truth, prediction,
  residual, cross) with NaMaster as the stage does (``analysis_io.namaster_for``:
  coupling matrices once, then ``fields`` / ``spectra`` per sim); results saved
  per sim to an ``.npz``.  "steady" = (N - 1) / (t_N - t_1).
  Its metrics are compared with those the stage wrote into the cube.
* estimators side by side: the in-process stage again with
  ``estimator="pseudo-fast"`` (its own copy of the store), and, on I/Q/U maps at
  the same nside (the store holds I only), the four spectra of one (run, sim)
  with NaMaster (fields + purified B + decoupling) and with the naive pseudo-C_l,
  per sim, the NaMaster coupling matrices (once per worker) timed apart;
  ratio = NaMaster / pseudo-fast seconds.

Memory: a thread samples (psutil, every 20 ms) the RSS of this process and of
all its descendants (skipping a child caught between fork and exec, which
still shows this process's pages).  ``peak_rss_mb`` is the largest RSS of any single worker
process during the 2-worker run (the per-worker footprint, the figure that
limits how many workers fit); the peak of the whole tree (driver with its
in-process scheduler, nannies, workers) is given too, and the baseline's is the
peak RSS of its process, sampled the same way (not ``ru_maxrss``: on Linux a
spawned child inherits the parent's high-water mark through fork + exec, so
it would report at least the driver's RSS).

Ratios: ``speedup_vs_serial_fits`` = 2-worker end-to-end sims/s over the
baseline's sims/s (``_steady`` for the steady rates); ``scaling_2_workers`` =
2-worker over 1-worker sims/s (end-to-end; ``_steady`` likewise).
The last line of stdout is one JSON object.
"""
from __future__ import annotations

import argparse
import glob
import json
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from common import load_average, log

ALL_DETECTORS = [30, 44, 70, 100, 143, 217, 353, 545, 857]


class PeakRSS(threading.Thread):
    """Samples the RSS of this process and its descendants until stopped."""

    def __init__(self, interval: float = 0.02):
        super().__init__(daemon=True)
        self.interval = interval
        self.halt = threading.Event()
        self.peak_total = self.peak_child = self.peak_self = 0

    def run(self):
        import psutil
        me = psutil.Process(os.getpid())
        own_cmdline = me.cmdline()
        while not self.halt.is_set():
            total = 0
            try:
                kids = me.children(recursive=True)
            except psutil.Error:
                kids = []
            for proc in [me] + kids:
                try:
                    # a child forked but not yet exec'd (spawn) still shows this process's pages: skip it
                    if proc is not me and proc.cmdline() == own_cmdline:
                        continue
                    rss = proc.memory_info().rss
                except psutil.Error:
                    continue
                total += rss
                if proc is me:
                    self.peak_self = max(self.peak_self, rss)
                else:
                    self.peak_child = max(self.peak_child, rss)
            self.peak_total = max(self.peak_total, total)
            self.halt.wait(self.interval)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.halt.set()
        self.join()
        return False

    def mb(self) -> dict:
        mib = 2 ** 20
        return {"total": self.peak_total / mib, "child": self.peak_child / mib, "self": self.peak_self / mib}


# ----------------------------------------------------------------------------- setup
def build_store(store: str, nside: int, nsims: int) -> dict:
    from cmbcube import recipe
    from cmbcube.stages import analyze, ilc, simulate
    r = recipe.validate({"name": "analysis-bench", "nside": nside, "splits": {"train": 0, "valid": 0, "test": nsims},
                         "detectors": ALL_DETECTORS, "fields": ["I"], "keep": ["cmb"], "seed": 7})
    t0 = time.perf_counter()
    report = simulate.run(r, store, workers=2, progress=False)
    if not report.ok:
        raise RuntimeError(f"simulation failed: {report.failed[:3]}")
    sim_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    rep = ilc.run(store, ilc.ILCConfig(method="nilc"), splits=("test",), scheduler="synchronous", progress=False)
    if not rep.ok:
        raise RuntimeError(f"NILC failed: {rep.failed[:3]}")
    nilc_s = time.perf_counter() - t0
    analyze.build_masks(store, 0.8)
    log(f"setup: simulated {nsims} sims at nside {nside} in {sim_s:.1f} s, NILC {nilc_s:.1f} s (in-process), "
        f"masks built; load {load_average()}")
    return {"simulate_s": round(sim_s, 1), "nilc_s": round(nilc_s, 1)}


def write_fits(store: str, root: Path) -> list:
    """The CMB-ML layout: one RING float64 FITS file per map. Returns the sim indices."""
    import healpy as hp
    import zarr
    group = zarr.open_group(store, mode="r")
    nside = int(group.attrs["nside"])
    fi = [str(f) for f in group["field"][...]].index("I")
    irun = [str(r) for r in group["run"][...]].index("nilc")
    scale = 1e6 if str(group.attrs["cmb_unit"]) == "K_CMB" else 1.0
    n2r = hp.nest2ring(nside, np.arange(12 * nside * nside))

    def ring(nest_map):
        out = np.empty(nest_map.size, dtype=np.float64)
        out[n2r] = nest_map
        return out

    sims = np.nonzero(np.asarray(group["pred_done"][irun, 2]) == 1)[0].tolist()
    for sim in sims:
        for path, values in ((root / "Test" / f"sim{sim:04d}" / "cmb_map_fid.fits", group["cmb"][2, sim, fi]),
                             (root / "NILC" / "Test" / f"sim{sim:04d}" / "cmb_map_pred.fits",
                              group["pred"][irun, 2, sim, fi])):
            path.parent.mkdir(parents=True, exist_ok=True)
            hp.write_map(str(path), ring(np.asarray(values, dtype=np.float64) * scale), nest=False,
                         dtype=np.float64, overwrite=True)
    hp.write_map(str(root / "mask.fits"), ring(np.asarray(group["mask"][...], dtype=np.float64)), nest=False,
                 dtype=np.float64, overwrite=True)
    hp.write_map(str(root / "mask_apodized.fits"), ring(np.asarray(group["mask_apodized"][...], dtype=np.float64)),
                 nest=False, dtype=np.float64, overwrite=True)
    return sims


# ----------------------------------------------------------------------------- baseline
def serial_fits(root: str, sims: list, nside: int, beam_truth: float, beam_pred: float, pixel_window: bool,
                queue) -> None:
    """Child process: the CMB-ML-style serial loop (see the docstring); reports times and metrics."""
    import healpy as hp

    from cmbcube.cube import analysis_io
    from cmbcube.science import metrics as sm, spectra as ss
    root = Path(root)
    out_dir = root / "results"
    out_dir.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    mask = hp.reorder(hp.read_map(str(root / "mask.fits")), r2n=True) > 0.5
    apod = hp.reorder(hp.read_map(str(root / "mask_apodized.fits")), r2n=True).astype(np.float64)
    bins = ss.ell_bins(nside)
    done_at, all_metrics = [], []
    for sim in sims:
        truth = hp.reorder(hp.read_map(str(root / "Test" / f"sim{sim:04d}" / "cmb_map_fid.fits")), r2n=True)
        pred = hp.reorder(hp.read_map(str(root / "NILC" / "Test" / f"sim{sim:04d}" / "cmb_map_pred.fits")), r2n=True)
        truth = np.asarray(truth, dtype=np.float64)[None]
        pred = np.asarray(pred, dtype=np.float64)[None]
        metrics = np.full((len(sm.BEAMS), len(sm.METRICS)), np.nan)
        for b, beam in enumerate(sm.BEAMS):
            t = sm.to_beam(truth, ["I"], beam_truth, beam, nside)[0]
            p = sm.to_beam(pred, ["I"], beam_pred, beam, nside)[0]
            t, p = sm.remove_monopole_dipole(t, mask), sm.remove_monopole_dipole(p, mask)
            values = sm.pixel_metrics(t[mask], p[mask])
            metrics[b] = [values.get(m, np.nan) for m in sm.METRICS]   # cl_err_*, cover_*: not here
        resid = pred - sm.to_beam(truth, ["I"], beam_truth, beam_pred, nside)
        nm = analysis_io.namaster_for(nside, apod, mask, len(bins) - 1)      # coupling matrices once, as a worker
        ft, fp, fr = (nm.fields(m, ["I"]) for m in (truth, pred, resid))
        spectra = np.stack([nm.spectra(ft, ft, beam_truth, beam_truth, pixel_window),
                            nm.spectra(fp, fp, beam_pred, beam_pred, pixel_window),
                            nm.spectra(fr, fr, beam_pred, beam_pred, pixel_window),
                            nm.spectra(fp, ft, beam_pred, beam_truth, pixel_window)])
        np.savez(out_dir / f"sim{sim:04d}.npz", metrics=metrics, spectra=spectra)
        all_metrics.append(metrics)
        done_at.append(time.perf_counter() - t0)
    queue.put({"seconds": time.perf_counter() - t0, "done_at": done_at, "metrics": np.array(all_metrics).tolist()})


def run_baseline(root: Path, sims: list, store: str) -> dict:
    import zarr

    from cmbcube import cube
    group = zarr.open_group(store, mode="r")
    nside = int(group.attrs["nside"])
    irun = [str(r) for r in group["run"][...]].index("nilc")
    beam_truth = cube.truth_beam(group)
    beam_pred = cube.run_beam(group, irun)
    pw = bool(group.attrs.get("pixel_window_applied", False))
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    with PeakRSS() as peak:
        proc = ctx.Process(target=serial_fits, args=(str(root), sims, nside, beam_truth, beam_pred, pw, queue))
        proc.start()
        import queue as queue_mod
        while True:                 # a child that dies (an exception) must not leave us waiting for an hour
            try:
                result = queue.get(timeout=5)
                break
            except queue_mod.Empty:
                if not proc.is_alive():
                    raise RuntimeError(f"the serial FITS baseline died (exit {proc.exitcode}); see stderr") from None
        proc.join()
    result["peak"] = peak.mb()
    return result


# ----------------------------------------------------------------------------- stage
def done_times(store: str) -> list:
    """Completion times (s since the epoch) of each analysed sim: its analysis_done chunk is written last."""
    paths = [p for p in glob.glob(os.path.join(store, "analysis_done", "c", "**"), recursive=True)
             if os.path.isfile(p)]
    return sorted(os.stat(p).st_mtime_ns / 1e9 for p in paths)


def run_stage(store: str, workers: int | None, synchronous: bool = False, estimator: str = "namaster") -> dict:
    from cmbcube.stages import analyze
    with PeakRSS() as peak:
        t_start = time.time()
        t0 = time.perf_counter()
        report = analyze.run(store, workers=workers, scheduler="synchronous" if synchronous else None,
                              progress=False, estimator=estimator)
        seconds = time.perf_counter() - t0
    if report.failed:
        raise RuntimeError(f"analysis failed: {report.failed[:3]}")
    times = [t - t_start for t in done_times(store)]
    return {"seconds": seconds, "done_at": times, "n": len(report.written), "peak": peak.mb()}


def spectra_cost(nside: int, nsims: int) -> dict:
    """NaMaster against pseudo-fast on I, Q, U maps, side by side in this process: the four spectra of one
    (run, sim) (truth, pred, resid, cross) as analyse_one computes them, per sim; NaMaster's one-off
    coupling matrices (per worker and mask) timed apart.  Maps: lensed-CMB-like power laws, a 60' beam."""
    import healpy as hp

    from cmbcube.cube import analysis_io
    from cmbcube.science import metrics as sm, sht, spectra as ss
    lmax, npix = 3 * nside - 1, 12 * nside * nside
    ell = np.arange(lmax + 1)
    cls = np.zeros((4, lmax + 1))
    cls[0, 2:] = 6000 * 2 * np.pi / (ell[2:] * (ell[2:] + 1.0))
    cls[1, 2:], cls[2, 2:], cls[3, 2:] = cls[0, 2:] * 0.01, cls[0, 2:] * 1e-4, cls[0, 2:] * 0.05
    theta, phi = hp.pix2ang(nside, np.arange(npix), nest=True)
    mask = np.abs(90 - np.degrees(theta)) > 15 + 8 * np.sin(phi) ** 2
    apod = sm.apodize(mask, sm.apodization_arcmin(nside))
    bins = ss.ell_bins(nside)
    fields = ["I", "Q", "U"]
    rng = np.random.default_rng(1)
    from cmbcube.science import cosmology
    sims = []
    for _ in range(nsims):
        truth = hp.reorder(sht.alm2map(cosmology.synalm(cls, rng), nside), r2n=True)
        pred = truth + 0.1 * hp.reorder(sht.alm2map(cosmology.synalm(cls, rng), nside), r2n=True)
        sims.append((truth, pred, pred - truth))
    analysis_io.forget_namaster()
    t0 = time.perf_counter()
    nm = analysis_io.namaster_for(nside, apod, mask, len(bins) - 1)
    setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    for truth, pred, resid in sims:
        ft, fp, fr = (nm.fields(m, fields) for m in (truth, pred, resid))
        for fa, fb in ((ft, ft), (fp, fp), (fr, fr), (fp, ft)):
            nm.spectra(fa, fb, 60.0, 60.0, True)
    namaster = (time.perf_counter() - t0) / nsims
    t0 = time.perf_counter()
    for truth, pred, resid in sims:
        for a, b in ((truth, truth), (pred, pred), (resid, resid), (pred, truth)):
            ss.pseudo_spectra(a, b, fields, apod, 60.0, 60.0, nside, True, bins)
    fast = (time.perf_counter() - t0) / nsims
    return {"namaster_s_per_sim": namaster, "pseudo_fast_s_per_sim": fast, "namaster_setup_s": setup,
            "ratio": namaster / fast}


def steady_rate(done_at: list, warm: int) -> float:
    """Sims/s after the first ``warm`` completions (each worker's first sim)."""
    if len(done_at) <= warm or done_at[-1] <= done_at[warm - 1]:
        return float("nan")
    return (len(done_at) - warm) / (done_at[-1] - done_at[warm - 1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 sims at nside 32")
    parser.add_argument("--nside", type=int, help="override the nside (default 64; 32 with --quick)")
    parser.add_argument("--sims", type=int, help="number of test sims (default 8; 4 with --quick)")
    parser.add_argument("--spectra-only", metavar="NSIDES",
                        help="only NaMaster vs pseudo-fast on I/Q/U maps at these nsides (comma-separated), "
                             "e.g. 32,64,128")
    args = parser.parse_args(argv)
    if args.spectra_only:
        out = {}
        for n in (int(x) for x in args.spectra_only.split(",")):
            cost = spectra_cost(n, args.sims or 3)
            log(f"nside {n}: NaMaster {cost['namaster_s_per_sim']:.3f} s, pseudo-fast "
                f"{cost['pseudo_fast_s_per_sim']:.3f} s per (run, sim), ratio {cost['ratio']:.2f}; coupling "
                f"matrices {cost['namaster_setup_s']:.2f} s; load {load_average()}")
            out[n] = {k: round(v, 4) for k, v in cost.items()}
        print(json.dumps(out))
        return 0
    nside = args.nside or (32 if args.quick else 64)
    nsims = args.sims or (4 if args.quick else 8)
    log(f"analysis benchmark: {nsims} sims at nside {nside}, {os.cpu_count()} cores; load average {load_average()}")
    loads = {"start": load_average()}
    work = Path(tempfile.mkdtemp(prefix="cmbcube-analysis-bench-"))
    try:
        store = str(work / "store.zarr")
        setup = build_store(store, nside, nsims)
        fits_root = work / "fits"
        t0 = time.perf_counter()
        sims = write_fits(store, fits_root)
        log(f"wrote {2 * len(sims) + 2} FITS files in {time.perf_counter() - t0:.1f} s (untimed setup)")
        copies = {}
        for name in ("sync", "sync_fast", "w1", "w2"):
            copies[name] = str(work / f"{name}.zarr")
            shutil.copytree(store, copies[name])

        results = {}
        results["serial FITS (CMB-ML way)"] = base = run_baseline(fits_root, sims, store)
        base["rate"] = len(sims) / base["seconds"]
        base["steady"] = steady_rate(base["done_at"], 1)
        log(f"  serial FITS: {base['seconds']:.2f} s, {base['rate']:.3f} sims/s "
            f"(steady {base['steady']:.3f}); peak RSS {base['peak']['child']:.0f} MB; load {load_average()}")
        for label, name, workers in (("cube, in-process (no Dask)", "sync", None),
                                     ("cube, Dask 1 worker", "w1", 1), ("cube, Dask 2 workers", "w2", 2)):
            r = run_stage(copies[name], workers, synchronous=name == "sync")
            r["rate"] = r["n"] / r["seconds"]
            r["steady"] = steady_rate(r["done_at"], workers or 1)
            results[label] = r
            mem = r["peak"]["self"] if name == "sync" else r["peak"]["child"]
            log(f"  {label}: {r['seconds']:.2f} s, {r['rate']:.3f} sims/s (steady {r['steady']:.3f}); "
                f"peak RSS {'driver' if name == 'sync' else 'per process'} {mem:.0f} MB, "
                f"tree {r['peak']['total']:.0f} MB; load {load_average()}")

        fast = run_stage(copies["sync_fast"], None, synchronous=True, estimator="pseudo-fast")
        fast["rate"] = fast["n"] / fast["seconds"]
        fast["steady"] = steady_rate(fast["done_at"], 1)
        results["cube, in-process, pseudo-fast"] = fast
        log(f"  cube, in-process, pseudo-fast: {fast['seconds']:.2f} s, {fast['rate']:.3f} sims/s; "
            f"load {load_average()}")
        cost = spectra_cost(nside, nsims)
        log(f"  spectra of one (run, sim), I/Q/U at nside {nside}: NaMaster {cost['namaster_s_per_sim']:.3f} s, "
            f"pseudo-fast {cost['pseudo_fast_s_per_sim']:.3f} s (ratio {cost['ratio']:.1f}); NaMaster coupling "
            f"matrices once per worker {cost['namaster_setup_s']:.2f} s; load {load_average()}")

        # the baseline computes the same numbers as the stage
        import zarr
        group = zarr.open_group(copies["w2"], mode="r")
        irun = [str(x) for x in group["run"][...]].index("nilc")
        fi = [str(f) for f in group["field"][...]].index("I")
        cube_metrics = np.asarray(group["metrics"][irun, 2])[sims][:, :, fi, :]
        base_metrics = np.asarray(base["metrics"])
        finite = np.isfinite(cube_metrics) & np.isfinite(base_metrics)
        rel = np.abs(cube_metrics - base_metrics)[finite] / np.maximum(np.abs(cube_metrics[finite]), 1e-30)
        max_rel = float(rel.max()) if rel.size else float("nan")
        loads["end"] = load_average()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    one, two = results["cube, Dask 1 worker"], results["cube, Dask 2 workers"]
    sync = results["cube, in-process (no Dask)"]
    log("")
    log(f"{'':32s}{'seconds':>9s}{'sims/s':>9s}{'steady':>9s}{'peak MB':>9s}")
    for label, r in results.items():
        mem = r["peak"]["self"] if label.startswith("cube, in-process") else r["peak"]["child"]
        log(f"{label:32s}{r['seconds']:9.2f}{r['rate']:9.3f}{r['steady']:9.3f}{mem:9.0f}")
    log(f"(peak MB: the largest single process: the baseline's process, a Dask worker (or nanny), or the driver "
        f"for the in-process run; the 2-worker run's whole tree: {two['peak']['total']:.0f} MB)")
    log(f"speedup 2 workers vs serial FITS: {two['rate'] / base['rate']:.2f} end-to-end, "
        f"{two['steady'] / base['steady']:.2f} steady")
    log(f"scaling 2 vs 1 workers: {two['rate'] / one['rate']:.2f} end-to-end, "
        f"{two['steady'] / one['steady']:.2f} steady")
    log(f"in-process cube vs serial FITS (same serial work, other read path): {sync['rate'] / base['rate']:.2f}")
    log(f"baseline metrics vs the cube's: max relative difference {max_rel:.2e}")
    log(f"estimators, in-process stage (field I): namaster / pseudo-fast seconds "
        f"{sync['seconds'] / fast['seconds']:.2f}; spectra alone (I, Q, U): {cost['ratio']:.1f}x "
        f"({cost['namaster_s_per_sim']:.3f} vs {cost['pseudo_fast_s_per_sim']:.3f} s per (run, sim)), "
        f"+ {cost['namaster_setup_s']:.2f} s of coupling matrices per worker")

    def r3(x):
        return round(float(x), 3) if np.isfinite(x) else None

    summary = {
        "nside": nside, "sims": nsims, **setup,
        "sims_per_s": {"serial_fits": r3(base["rate"]), "cube_in_process": r3(sync["rate"]),
                       "dask_1_worker": r3(one["rate"]), "dask_2_workers": r3(two["rate"])},
        "sims_per_s_steady": {"serial_fits": r3(base["steady"]), "cube_in_process": r3(sync["steady"]),
                              "dask_1_worker": r3(one["steady"]), "dask_2_workers": r3(two["steady"])},
        "speedup_vs_serial_fits": r3(two["rate"] / base["rate"]),
        "speedup_vs_serial_fits_steady": r3(two["steady"] / base["steady"]),
        "scaling_2_workers": r3(two["rate"] / one["rate"]),
        "scaling_2_workers_steady": r3(two["steady"] / one["steady"]),
        "in_process_cube_vs_serial_fits": r3(sync["rate"] / base["rate"]),
        "peak_rss_mb": round(two["peak"]["child"], 1),
        "peak_rss_mb_1_worker": round(one["peak"]["child"], 1),
        "peak_rss_total_mb_2_workers": round(two["peak"]["total"], 1),
        "peak_rss_mb_serial_fits": round(base["peak"]["child"], 1),
        "peak_rss_mb_in_process_driver": round(sync["peak"]["self"], 1),
        "max_rel_diff_metrics_vs_baseline": max_rel,
        "stage_in_process_namaster_over_pseudo_fast": r3(sync["seconds"] / fast["seconds"]),
        "spectra_iqu_s_per_sim": {"namaster": round(cost["namaster_s_per_sim"], 4),
                                  "pseudo_fast": round(cost["pseudo_fast_s_per_sim"], 4),
                                  "namaster_setup_s": round(cost["namaster_setup_s"], 3)},
        "spectra_iqu_namaster_over_pseudo_fast": r3(cost["ratio"]),
        "load_average": loads,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
