"""Benchmark the simulate stage against a CMB-ML-style serial pipeline that writes FITS.

Run from the repository root::

    python benchmarks/simulate.py --quick          # nside 64 only, a few sims (< 3 min on 2 cores)
    python benchmarks/simulate.py                  # nside 64 and 128
    python benchmarks/simulate.py --nside512       # also nside 512, once (slow, several GB per process)
    python benchmarks/simulate.py --foregrounds fixed   # CMB-ML's dataset: one Galaxy for every sim
    python benchmarks/simulate.py --sky-models      # filamentary vs Gaussian sky: per-sim cost ratio only

Every figure comes from one run of this script, measured side by side on the
same machine.  The workload is the same on both sides: all 9 Planck-like
detectors, I/Q/U, every synthetic foreground component (built by
``cmbcube.science.foregrounds.synthetic_sky`` with cmbcube's own seeds, so both sides
evaluate the very same sky), a sky model at 2 x the output nside, CAMB lensed
spectra for a cosmology drawn per sim, white noise.

What is measured
----------------
* baseline ("serial FITS", what CMB-ML does, one process): per sim, CAMB
  spectra, ``healpy.synfast`` CMB at the sky nside, pysm3 ``get_emission`` per
  detector (plus the CMB converted to uK_RJ), pysm3
  ``apply_smoothing_and_coord_transform`` with its defaults (beam FWHM, output
  nside), conversion to uK_CMB, white noise, and one ``healpy.write_map`` FITS
  file per map (9 observed maps + 1 CMB map) into a temporary directory.  The
  process first runs one warm-up sim at min(nside, 64) (numba compiles
  pysm3's kernels on the first ``get_emission``, ~5-9 s, whatever the map
  size), then N sims are timed: steady state.  The
  libraries it calls use as many threads as they like (healpy's OpenMP, pysm3's
  parallel numba kernels) on the machine's cores: "serial" means one sim after
  another in one process, not one thread.  Choices made in the baseline's
  favour: unpolarised detectors (545/857) are smoothed in I only, and the CMB
  target map is synthesised straight from the alm at the output nside.
  Offline, healpy cannot fetch its pixel-weight files; the download is switched
  off (astropy ``allow_internet = False``) so the attempt costs nothing, and
  the map2alm then uses healpy's default 3 iterations, as it does with weights.
* cmbcube: the real ``cmbcube.stages.simulate.run`` into a fresh Zarr store in a
  temporary directory, from a recipe built with ``cmbcube.recipe.validate``
  (keep: [cmb]).  Three modes, each in a fresh Python process:
  - in-process (``scheduler="synchronous"``): one warm-up run of 1 sim into a
    throw-away store, then a timed run of N sims into a new store; per sim =
    the timed run's wall seconds / N (opening the store, building the
    Simulator and consolidating metadata included).  This is the
    single-process per-sim figure and gives the cost breakdown.
  Bandpasses (``--bandpass``, default ``tophat``, cmbcube's default) are the same
  on both sides: with top-hats the baseline integrates each component over the
  detector's band with pysm3's ``get_emission(freqs, weights)`` (the detector's 5
  Gauss-Legendre nodes, ``Detector.pysm3_weights``) and converts units with
  pysm3's ``bandpass_unit_conversion``, as a pysm3 user would; ``delta`` is
  CMB-ML's own choice.  The in-process run is repeated with the other bandpass
  and the ratio top-hat / delta printed.  Lensing is accurate on both sides: the
  baseline runs CAMB per sim to the sky's band limit with
  ``lens_potential_accuracy`` 1 (``cosmology.lensed_spectra(..., "direct")``),
  cmbcube its default ``cmb.lensing: corrected``.
  - local Dask cluster with 1 and with 2 worker processes (``scheduler=None``,
    ``workers=1|2``), one run of N sims each.  "cold" per sim = the run's wall
    seconds / N, which includes starting the cluster and every worker's first
    sim (numba compilation).  "steady" per sim comes from the same run: the
    completion time of every sim is read from the mtime of its ``sim_done``
    chunk (written last, after all of the sim's data), and
    steady = (t_last - t_W) / (N - W) with W workers, i.e. the interval after
    each worker has finished (about) one sim.
* Ratios: ``speedup_vs_serial_fits`` = baseline steady s/sim over cmbcube
  2-worker steady s/sim, on the same 2 cores; ``scaling_2_workers`` = 1-worker
  steady s/sim over 2-worker steady s/sim.
* Peak memory: ``ru_maxrss`` of the process doing the work, read with
  ``resource.getrusage`` in a fresh process per measurement (RUSAGE_SELF) for
  the baseline and the in-process mode; for the cluster runs, the largest
  VmHWM (/proc/self/status) of the Dask workers, read on each worker before the
  cluster closes (RUSAGE_CHILDREN, kept in the JSON as ``peak_rss_children_gb``,
  read 4.68 GB in a 2-worker run at nside 512 where the workers of a separate
  identical run reported VmHWM of 3.50 and 3.54 GB).
  ``peak_rss_gb`` is the largest of these for cmbcube at the largest nside.

* Shared machine: for every measurement the script reports the CPU time
  other processes used meanwhile (/proc/stat busy time minus this
  measurement's own process tree) and warns above 5% of the cores; on a
  2-core machine any other load distorts every figure (threaded healpy/numba
  code suffers most).
* "If it fits": a Dask run is skipped when workers x the in-process peak RSS
  (+0.5 GB) exceeds 85% of physical memory (relevant with --nside512).

* --sky-models: the cost of the default (filamentary, ``synthetic``) sky against the earlier
  Gaussian one (``synthetic-gaussian``): the in-process mode only, alternating the two skies
  (G, F, G, F, ...: a drifting machine load hits both alike), each run in a fresh process after
  its warm-up sim; ratio = mean filamentary s/sim over mean Gaussian s/sim, with the breakdown.
  Then both skies' Simulators in one process, one sim of each in turn after a warm-up of each
  (no store writes, the same for both): the reported cost ratio is the interleaved total time
  of the filamentary sky over the Gaussian one (with the median of the per-pair ratios).

* --lensing: what accurate lensed spectra cost (issue 20).  One process, the default recipe (9
  detectors, IQU, every component, top-hat bands) at nside 128 (--quick: 64), three Simulators after a
  warm-up sim each, timed on the same sims in turn (B, C, D, B, C, D, ...): B "before" = CAMB to the
  map's band limit with lens_potential_accuracy 0, as the simulator did up to e4cd77c (lensed BB 27-32%
  low), C = ``cmb.lensing: corrected`` (the default: the same fast run plus a correction computed once),
  D = ``direct`` (CAMB at lmax 3000 per sim).  Printed: s/sim and its CMB part per mode, the ratio to B,
  the one-time cost of the correction (cold cache), and each mode's largest BB error against CAMB at
  lmax 4000, lens_potential_accuracy 2.

Targets are printed next to the measured values; nothing is asserted.
The last line of stdout is one JSON object.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEED = 20261126
ALL_DETECTORS = [30, 44, 70, 100, 143, 217, 353, 545, 857]
ALL_COMPONENTS = ["dust", "synchrotron", "freefree", "ame", "cib", "tsz", "radio"]
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
FOREGROUND_WORKLOADS = {"per_sim": "a new Galaxy every sim", "fixed": "one Galaxy for every sim, as CMB-ML"}
WARMUP_NSIDE_MAX = 64          # warm-up sims run at min(nside, this): numba compiles per type, not per size

# Sims per measurement: baseline (after its warm-up), in-process (after its warm-up), 1 worker, 2 workers.
SIMS = {
    "quick": {64: dict(baseline=3, sync=4, w1=5, w2=8)},
    "default": {64: dict(baseline=4, sync=6, w1=7, w2=12),
                128: dict(baseline=3, sync=4, w1=5, w2=8)},
    512: dict(baseline=1, sync=1, w1=2, w2=4),
}

TARGETS = {
    "speedup_vs_serial_fits": {512: 10.0, 128: 5.0},
    "scaling_2_workers": 1.6,
    "peak_rss_gb_per_worker_at_512": 4.0,
}

CMBCUBE_PARTS = ["cmb", "foreground_templates", "foreground_emission", "harmonic_transforms", "noise", "write"]
BASELINE_PARTS = ["camb", "cmb_map", "foreground_templates", "emission", "smoothing", "units_noise", "fits_write"]


def vm_hwm_gb() -> float:
    """This process's peak resident memory in GB (VmHWM): run on each Dask worker before it closes."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e9
    return maxrss_gb(resource.RUSAGE_SELF)


def maxrss_gb(who: int) -> float:
    """Peak resident set size in GB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(who).ru_maxrss * 1024 / 1e9


def make_recipe(nside: int, nsims: int, name: str, workers: int = 2, vary: str = "per_sim",
                bandpass: str = "delta", model: str = "synthetic"):
    from cmbcube.recipe import validate
    return validate({
        "name": name, "seed": SEED, "nside": nside, "sky_nside": 2 * nside,
        "instrument": {"bandpass": bandpass},
        "splits": {"train": nsims, "valid": 0, "test": 0},
        "detectors": ALL_DETECTORS, "fields": ["I", "Q", "U"], "units": "uK_CMB",
        "foregrounds": {"model": model, "components": ALL_COMPONENTS, "vary": vary},
        "noise": {"model": "white", "hits": "scan"},
        "keep": ["cmb"],
        "storage": {"compression": "none"},
        "cluster": {"kind": "local", "workers": workers, "threads_per_worker": 1},
    })


def quiet() -> None:
    import logging
    import warnings

    import pysm3  # noqa: F401  (imports astropy first: its logger class must be installed by astropy itself)
    warnings.filterwarnings("ignore")
    for name in ("healpy", "pysm3", "astropy", "distributed", "tornado", "numba"):
        logging.getLogger(name).setLevel(logging.ERROR)


# ----------------------------------------------------------------------------- baseline (child process)

def baseline_job(spec: dict) -> dict:
    """CMB-ML-style serial pipeline: warm-up sim, then N timed sims, one FITS file per map."""
    quiet()
    import healpy as hp
    import numpy as np
    import pysm3
    import pysm3.units as u
    from astropy.utils.data import conf
    conf.allow_internet = False      # healpy's pixel-weight download fails at once instead of trying the network

    from cmbcube.science import cosmology, foregrounds, instrument, noise, seeds

    nside, nsims, outdir, vary = spec["nside"], spec["nsims"], Path(spec["dir"]), spec["vary"]
    bandpass = spec.get("bandpass", "delta")
    dets = [instrument.detector(f, "cmb-ml", bandpass=bandpass) for f in ALL_DETECTORS]

    def band(d):
        """pysm3's inputs for detector d's band: (frequencies, weights or None), and the band-integrated
        factors uK_CMB -> uK_RJ (the CMB's emission) and uK_RJ -> uK_CMB (the output), as a pysm3 user
        computes them with ``pysm3.bandpass_unit_conversion``."""
        if bandpass == "delta":
            freq = d.centre_ghz * u.GHz
            return (freq, None, instrument.unit_factor(d.centre_ghz, "uK_CMB", "uK_RJ"),
                    (1 * u.uK_RJ).to_value(u.uK_CMB, equivalencies=u.cmb_equivalencies(freq)))
        freqs = d.band_ghz * u.GHz
        weights = d.pysm3_weights
        return (freqs, weights,
                pysm3.bandpass_unit_conversion(freqs, weights, u.uK_RJ, input_unit=u.uK_CMB).value,
                pysm3.bandpass_unit_conversion(freqs, weights, u.uK_CMB).value)
    bands = {d.freq: band(d) for d in dets}
    fixed_models = {}

    def sky_models(sky_ns, sim):
        if vary == "fixed":
            # CMB-ML's dataset: one Galaxy for every sim, built once per process (not timed, like
            # CMB-ML's pysm3 Sky); its emission and smoothing are still recomputed for every sim
            if sky_ns not in fixed_models:
                fixed_models[sky_ns] = foregrounds.synthetic_sky(
                    ALL_COMPONENTS, sky_ns, lambda name: seeds.rng(SEED, "fixed", 0, "foreground-" + name),
                    lambda name: None)
            return fixed_models[sky_ns]
        return foregrounds.synthetic_sky(
            ALL_COMPONENTS, sky_ns,
            lambda name: seeds.rng(SEED, "train", sim, "foreground-" + name),
            lambda name: seeds.rng(SEED, "train", sim, "sed-" + name))

    def setup(ns):
        # Static per-dataset inputs (CMB-ML reads noise maps once): not timed.
        hits = noise.scan_hits(ns, nest=False)
        sigma = {}
        for d in dets:
            to_uk = instrument.unit_factor(d.centre_ghz, d.native_unit, "uK_CMB")
            sigma[d.freq] = [noise.pixel_sigma(d.noise_depth_arcmin(f), ns, hits) * to_uk for f in d.fields]
        return sigma

    def one_sim(ns, sim, sigma, label):
        sky_ns = 2 * ns
        lmax_sky, lmax_out = 3 * sky_ns - 1, 3 * ns - 1
        t = dict.fromkeys(BASELINE_PARTS, 0.0)
        t0 = time.perf_counter()
        params = cosmology.draw_params(seeds.rng(SEED, "train", sim, "cosmology"), "planck2018")
        cls = cosmology.lensed_spectra(params, lmax_sky, 1, "direct")   # accurate lensing, as cmbcube
        t1 = time.perf_counter()
        t["camb"] += t1 - t0
        np.random.seed(sim)
        cmb_map, cmb_alm = hp.synfast(cls, sky_ns, lmax=lmax_sky, new=True, alm=True)
        target = hp.alm2map(hp.resize_alm(cmb_alm, lmax_sky, lmax_sky, lmax_out, lmax_out), ns, lmax=lmax_out)
        t2 = time.perf_counter()
        t["cmb_map"] += t2 - t1
        models = sky_models(sky_ns, sim)
        t3 = time.perf_counter()
        t["foreground_templates"] += t3 - t2
        noise_rng = np.random.default_rng([SEED, sim])
        for d in dets:
            nc = 3 if d.polarised else 1
            freqs, weights, cmb_to_rj, rj_to_cmb = bands[d.freq]
            ta = time.perf_counter()
            emission = sum(m.get_emission(freqs, weights) for m in models.values())
            emission = emission + cmb_map * cmb_to_rj * u.uK_RJ
            emission = emission[:nc] if nc == 3 else emission[0]
            tb = time.perf_counter()
            smoothed = pysm3.apply_smoothing_and_coord_transform(
                emission, fwhm=d.fwhm_arcmin * u.arcmin, output_nside=ns)
            tc = time.perf_counter()
            obs = smoothed.to_value(u.uK_RJ) * rj_to_cmb
            obs = np.atleast_2d(obs)
            obs = obs + noise_rng.standard_normal(obs.shape) * np.array(sigma[d.freq])
            td = time.perf_counter()
            hp.write_map(str(outdir / f"{label}_{sim:04d}_{d.freq:03d}GHz.fits"),
                         list(obs) if nc == 3 else obs[0], dtype=np.float32, coord="G",
                         column_units="uK_CMB", overwrite=True)
            te = time.perf_counter()
            t["emission"] += tb - ta
            t["smoothing"] += tc - tb
            t["units_noise"] += td - tc
            t["fits_write"] += te - td
        tf = time.perf_counter()
        hp.write_map(str(outdir / f"{label}_{sim:04d}_cmb.fits"), list(target), dtype=np.float32, coord="G",
                     column_units="uK_CMB", overwrite=True)
        t["fits_write"] += time.perf_counter() - tf
        t["total"] = time.perf_counter() - t0
        return t

    warm_ns = min(nside, WARMUP_NSIDE_MAX)
    warm = one_sim(warm_ns, 10_000, setup(warm_ns), "warmup")
    sigma = setup(nside)
    if vary == "fixed":
        sky_models(2 * nside, 0)
    runs = [one_sim(nside, sim, sigma, "sim") for sim in range(nsims)]
    fits = list(outdir.glob("sim_*.fits"))
    return {
        "warmup_nside": warm_ns, "warmup_s": warm["total"], "nsims": nsims,
        "s_per_sim": sum(r["total"] for r in runs) / nsims,
        "per_sim_s": [r["total"] for r in runs],
        "breakdown": {k: sum(r[k] for r in runs) / nsims for k in BASELINE_PARTS},
        "peak_rss_gb": maxrss_gb(resource.RUSAGE_SELF),
        "files_per_sim": len(fits) / nsims,
        "bytes_per_sim": sum(f.stat().st_size for f in fits) / nsims,
    }


# ----------------------------------------------------------------------------- cmbcube (child process)

def completion_times(store: str) -> list[float]:
    """Sorted completion times (mtime, s) of each sim's done-flag chunk: it is written last."""
    paths = [p for p in glob.glob(os.path.join(store, "sim_done", "c", "**"), recursive=True) if os.path.isfile(p)]
    return sorted(os.stat(p).st_mtime_ns / 1e9 for p in paths)


def store_bytes(store: str) -> int:
    return sum(p.stat().st_size for p in Path(store).rglob("*") if p.is_file())


def cmbcube_job(spec: dict) -> dict:
    quiet()
    import dask

    from cmbcube.stages import simulate
    nside, nsims, workers, mode, tmp = spec["nside"], spec["nsims"], spec["workers"], spec["mode"], spec["dir"]
    dask.config.set({"temporary-directory": tmp})     # Dask worker scratch space inside our temp dir
    out: dict = {"mode": mode, "workers": workers, "nsims": nsims}
    if mode == "synchronous":
        warm_ns = min(nside, WARMUP_NSIDE_MAX)
        t0 = time.perf_counter()
        rep = simulate.run(make_recipe(warm_ns, 1, f"bench-warmup-{warm_ns}", vary=spec["vary"],
                                       model=spec.get("model", "synthetic")),
                           os.path.join(tmp, "warmup.zarr"),
                           scheduler="synchronous", progress=False)
        if not rep.ok:
            raise RuntimeError(f"warm-up failed: {rep.failed}")
        out.update(warmup_nside=warm_ns, warmup_s=time.perf_counter() - t0)
    store = os.path.join(tmp, "bench.zarr")
    recipe = make_recipe(nside, nsims, f"bench-{nside}", workers, spec["vary"], bandpass=spec.get("bandpass", "delta"),
                         model=spec.get("model", "synthetic"))
    t0 = time.perf_counter()
    if mode == "synchronous":
        rep = simulate.run(recipe, store, scheduler="synchronous", workers=workers, progress=False)
        wall, start_s, worker_peak = time.perf_counter() - t0, 0.0, None
    else:
        # the cluster is started here (as simulate.run would start it) so that every worker's own peak
        # memory (VmHWM) can be read before it closes
        import contextlib

        from cmbcube.compute import cluster
        with contextlib.redirect_stdout(sys.stderr), \
                cluster.client_for({"kind": "local", "workers": workers, "threads_per_worker": 1}) as client:
            start_s = time.perf_counter() - t0
            rep = simulate.run(recipe, store, scheduler=client.scheduler.address, progress=False)
            wall = time.perf_counter() - t0
            worker_peak = max(client.run(vm_hwm_gb).values())
    if not rep.ok or len(rep.written) != nsims:
        raise RuntimeError(f"simulate.run wrote {len(rep.written)} of {nsims} sims; failures: {rep.failed}")
    done = completion_times(store)
    w = 1 if mode == "synchronous" else workers
    steady = (done[-1] - done[w - 1]) / (nsims - w) if len(done) == nsims and nsims > w else None
    out.update(
        wall_s=wall, report_seconds=rep.seconds, cold_s_per_sim=(start_s + rep.seconds) / nsims,
        steady_s_per_sim=steady,
        completion_offsets_s=[t - done[0] for t in done],
        breakdown={k: rep.timings.get(k, 0.0) / nsims for k in CMBCUBE_PARTS},
        peak_rss_self_gb=maxrss_gb(resource.RUSAGE_SELF),
        peak_rss_children_gb=maxrss_gb(resource.RUSAGE_CHILDREN),
        store_bytes_per_sim=store_bytes(store) / nsims,
    )
    if mode == "synchronous":
        out["s_per_sim"] = rep.seconds / nsims           # after the warm-up run: steady state
        out["peak_rss_worker_gb"] = out["peak_rss_self_gb"]
    else:
        out["peak_rss_worker_gb"] = worker_peak
    return out


# ----------------------------------------------------------------------------- driver

def busy_cpu_seconds() -> float | None:
    """CPU seconds spent busy by the whole machine so far (all processes, all cores), from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_job(kind: str, **spec) -> dict:
    """Run one measurement in a fresh Python process (its own numba compile, its own peak RSS).

    Also reports how much CPU other processes on the machine used meanwhile
    (machine busy time from /proc/stat minus the CPU time of this job's process
    tree): a shared machine makes every figure here slower and the scaling worse.
    """
    with tempfile.TemporaryDirectory(prefix=f"cmbcube-bench-{kind}-") as tmp:
        spec.update(kind=kind, dir=tmp)
        spec_path, out_path = os.path.join(tmp, "spec.json"), os.path.join(tmp, "result.json")
        Path(spec_path).write_text(json.dumps(spec))
        busy0, ours0 = busy_cpu_seconds(), children_cpu_seconds()
        t0 = time.perf_counter()
        # The child's stdout goes to our stderr: this script's stdout carries only the report.
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--job", spec_path, out_path],
                              stdout=sys.stderr, stderr=sys.stderr)
        if proc.returncode != 0:
            raise RuntimeError(f"{kind} measurement failed (exit {proc.returncode}); see stderr")
        result = json.loads(Path(out_path).read_text())
        result["process_wall_s"] = time.perf_counter() - t0
        ours = children_cpu_seconds() - ours0
        busy1 = busy_cpu_seconds()
        result["cpu_s"] = ours
        result["other_cpu_s"] = None if busy0 is None else max(0.0, busy1 - busy0 - ours)
    return result


def interleaved_job(spec: dict) -> dict:
    """Both skies' Simulators in one process, one sim of each in turn (G, F, G, F, ...), after a
    warm-up sim of each: the per-sim seconds of ``Simulator.run`` (everything but the store write,
    which is the same for both skies)."""
    quiet()
    from cmbcube.stages import simspec
    nside, nsims = spec["nside"], spec["nsims"]
    sims = {m: simspec.simulator(make_recipe(nside, nsims, f"bench-{m}", 1, spec["vary"], model=m))
            for m in ("synthetic-gaussian", "synthetic")}
    times = {m: [] for m in sims}
    parts = {m: {} for m in sims}
    for simulator in sims.values():
        simulator.run("train", 10_000)
    for i in range(nsims):
        for m, simulator in sims.items():
            t0 = time.perf_counter()
            res = simulator.run("train", i)
            times[m].append(time.perf_counter() - t0)
            for k, v in res.timings.items():
                parts[m][k] = parts[m].get(k, 0.0) + v / nsims
    return {"times": times, "breakdown": parts}


def child(spec_path: str, out_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    if spec["kind"] == "interleaved":
        Path(out_path).write_text(json.dumps(interleaved_job(spec)))
        return
    result = baseline_job(spec) if spec["kind"] == "baseline" else cmbcube_job(spec)
    Path(out_path).write_text(json.dumps(result))


def fmt(x, spec=".2f", none="n/a"):
    return none if x is None else format(x, spec)


def ratio(x):
    return "n/a" if x is None else f"{x:.2f}x"


def per_hour(s):
    return None if not s else 3600.0 / s


def mem_total_gb() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9


def measure(nside: int, sims: dict, vary: str, bandpass: str = "tophat") -> dict:
    say = lambda msg: print(f"[nside {nside}] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    other_band = "delta" if bandpass == "tophat" else "tophat"
    say(f"baseline ({bandpass} bandpasses): warm-up + {sims['baseline']} sims")
    base = run_job("baseline", nside=nside, nsims=sims["baseline"], vary=vary, bandpass=bandpass)
    say(f"cmbcube in-process ({bandpass} bandpasses): warm-up + {sims['sync']} sims")
    sync = run_job("cmbcube", nside=nside, nsims=sims["sync"], workers=1, mode="synchronous", vary=vary,
                   bandpass=bandpass)
    say(f"cmbcube in-process, {other_band} bandpasses: warm-up + {sims['sync']} sims")
    other = run_job("cmbcube", nside=nside, nsims=sims["sync"], workers=1, mode="synchronous", vary=vary,
                    bandpass=other_band)
    tophat, delta = (sync, other) if bandpass == "tophat" else (other, sync)
    dask_runs, skipped = {}, {}
    for workers in (1, 2):
        # "If it fits": a Dask worker needs about what the in-process run needed (plus the driver).
        need = workers * sync["peak_rss_worker_gb"] + 0.5
        if need > 0.85 * mem_total_gb():
            skipped[workers] = f"needs ~{need:.1f} GB of {mem_total_gb():.1f} GB"
            say(f"cmbcube local Dask, {workers} worker(s): skipped, {skipped[workers]}")
            dask_runs[workers] = None
            continue
        n = sims[f"w{workers}"]
        say(f"cmbcube local Dask, {workers} worker(s): {n} sims")
        dask_runs[workers] = run_job("cmbcube", nside=nside, nsims=n, workers=workers, mode="local", vary=vary,
                                     bandpass=bandpass)
    w1, w2 = dask_runs[1], dask_runs[2]

    get = lambda job, key: None if job is None else job[key]  # noqa: E731
    w1_steady, w2_steady = get(w1, "steady_s_per_sim"), get(w2, "steady_s_per_sim")
    speedup = base["s_per_sim"] / w2_steady if w2_steady else None
    scaling = w1_steady / w2_steady if (w1_steady and w2_steady) else None
    peak_cmbcube = max(j["peak_rss_worker_gb"] for j in (sync, w1, w2) if j is not None)

    rows = [
        ("baseline, serial FITS (1 process)", base, base["s_per_sim"], None, base["peak_rss_gb"]),
        ("cmbcube in-process (synchronous)", sync, sync["s_per_sim"], None, sync["peak_rss_worker_gb"]),
        ("cmbcube local Dask, 1 worker", w1, w1_steady, get(w1, "cold_s_per_sim"), get(w1, "peak_rss_worker_gb")),
        ("cmbcube local Dask, 2 workers", w2, w2_steady, get(w2, "cold_s_per_sim"), get(w2, "peak_rss_worker_gb")),
    ]
    print(f"\n== nside {nside} (sky model nside {2 * nside}): 9 detectors, I/Q/U, "
          f"{len(ALL_COMPONENTS)} synthetic components ({FOREGROUND_WORKLOADS[vary]}), {bandpass} bandpasses "
          "both sides, accurate lensing both sides, white noise ==")
    print(f"{'mode':<36}{'sims':>5}{'steady s/sim':>14}{'sims/hour':>11}{'cold s/sim':>12}{'peak RSS/proc':>15}")
    for name, job, steady, cold, rss in rows:
        if job is None:
            print(f"{name:<36}  skipped: does not fit in memory")
            continue
        print(f"{name:<36}{job['nsims']:>5}{fmt(steady, '.2f'):>14}{fmt(per_hour(steady), '.0f'):>11}"
              f"{fmt(cold, '.2f'):>12}{fmt(rss, '.2f') + ' GB':>15}")
    print("  steady: baseline and in-process after a warm-up sim; Dask runs from sim completion times "
          "after each worker's first sim.\n  cold: the whole simulate.run (cluster start, numba compile) / sims.")
    jobs = {k: j for k, j in {"baseline": base, "in-process": sync, "1 worker": w1, "2 workers": w2}.items()
            if j is not None}
    others = {k: j["other_cpu_s"] for k, j in jobs.items()}
    if all(v is not None for v in others.values()):
        ncpu = CORES or 1
        share = {k: others[k] / (jobs[k]["process_wall_s"] * ncpu) for k in jobs}
        print("  CPU used by other processes meanwhile: "
              + ", ".join(f"{k} {others[k]:.1f} s ({100 * share[k]:.0f}% of the cores)" for k in jobs))
        if max(share.values()) > 0.05:
            print("  WARNING: the machine was shared during this measurement; figures are pessimistic and "
                  "noisy. Rerun on an idle machine.")
    print(f"  warm-up sims (not in steady): baseline {base['warmup_s']:.1f} s at nside {base['warmup_nside']}, "
          f"in-process {sync['warmup_s']:.1f} s at nside {sync['warmup_nside']}")
    print(f"  output per sim: baseline {base['files_per_sim']:.0f} FITS files, {base['bytes_per_sim'] / 1e6:.1f} MB; "
          f"cmbcube Zarr {sync['store_bytes_per_sim'] / 1e6:.1f} MB (incl. store metadata)")

    print(f"\n  cost per sim (s), steady state{'':<10}{'baseline':>10}   cmbcube in-process")
    pairs = [("camb", "cmb"), ("cmb_map", None), ("foreground_templates", "foreground_templates"),
             ("emission", "foreground_emission"), ("smoothing", "harmonic_transforms"),
             ("units_noise", "noise"), ("fits_write", "write")]
    for b, c in pairs:
        left = f"{b}: {base['breakdown'][b]:.3f}"
        right = "" if c is None else f"{c}: {sync['breakdown'][c]:.3f}"
        print(f"    {left:<46}{right}")
    base_other = base["s_per_sim"] - sum(base["breakdown"].values())
    sync_other = sync["s_per_sim"] - sum(sync["breakdown"].values())
    print(f"    {'other: ' + format(base_other, '.3f'):<46}other (store open, Simulator build, consolidate): "
          f"{sync_other:.3f}")
    print(f"    {'total: ' + format(base['s_per_sim'], '.3f'):<46}total: {sync['s_per_sim']:.3f}")
    print("    (baseline 'smoothing' = pysm3 map2alm, beam, alm2map; cmbcube 'cmb' = CAMB + CMB alm + target map,\n"
          "     'harmonic_transforms' = map2alm, beam, pixel window, alm2map; both for all 9 detectors)")
    for label, job in (("1 worker", w1), ("2 workers", w2)):
        if job is not None:
            print(f"    cmbcube {label}, mean per sim incl. each worker's first sim: "
                  + ", ".join(f"{k} {job['breakdown'][k]:.3f}" for k in CMBCUBE_PARTS))
    print(f"\n  speedup_vs_serial_fits = {ratio(speedup)}  (baseline {fmt(per_hour(base['s_per_sim']), '.0f')} sims/h "
          f"vs cmbcube 2 workers {fmt(per_hour(w2_steady), '.0f')} sims/h, same {CORES} cores)")
    print(f"  scaling_2_workers      = {ratio(scaling)}  (1 worker {fmt(w1_steady)} s/sim, "
          f"2 workers {fmt(w2_steady)} s/sim)")
    print(f"  in-process vs baseline = {ratio(base['s_per_sim'] / sync['s_per_sim'])} (one process each)")
    print(f"  bandpass: in-process top-hat {tophat['s_per_sim']:.3f} s/sim vs delta {delta['s_per_sim']:.3f} s/sim, "
          f"ratio {tophat['s_per_sim'] / delta['s_per_sim']:.2f} (foreground_emission "
          f"{tophat['breakdown']['foreground_emission']:.3f} vs {delta['breakdown']['foreground_emission']:.3f} s, "
          f"harmonic_transforms {tophat['breakdown']['harmonic_transforms']:.3f} vs "
          f"{delta['breakdown']['harmonic_transforms']:.3f} s)")

    keep_dask = ("steady_s_per_sim", "cold_s_per_sim", "nsims", "wall_s", "peak_rss_worker_gb", "peak_rss_self_gb",
                 "completion_offsets_s", "breakdown")
    return {
        "nside": nside, "sky_nside": 2 * nside, "foregrounds": vary, "bandpass": bandpass,
        "speedup_vs_serial_fits": speedup, "scaling_2_workers": scaling, "peak_rss_gb": peak_cmbcube,
        "speedup_cold_2_workers": base["s_per_sim"] / w2["cold_s_per_sim"] if w2 else None,
        "speedup_in_process": base["s_per_sim"] / sync["s_per_sim"],
        "other_cpu_s": {k: (None if v is None else round(v, 2)) for k, v in others.items()},
        "skipped": {f"{k}_workers": v for k, v in skipped.items()},
        "baseline": {k: base[k] for k in ("s_per_sim", "per_sim_s", "nsims", "peak_rss_gb", "breakdown",
                                          "warmup_s", "bytes_per_sim")},
        "cmbcube_in_process": {k: sync[k] for k in ("s_per_sim", "steady_s_per_sim", "nsims", "peak_rss_worker_gb",
                                                   "breakdown", "warmup_s")},
        f"cmbcube_in_process_{other_band}": {k: other[k] for k in ("s_per_sim", "nsims", "breakdown")},
        "tophat_over_delta_in_process": tophat["s_per_sim"] / delta["s_per_sim"],
        "cmbcube_1_worker": None if w1 is None else {k: w1[k] for k in keep_dask},
        "cmbcube_2_workers": None if w2 is None else {k: w2[k] for k in keep_dask},
    }


SKY_MODEL_TARGET = 1.3      # the filamentary sky may cost at most 1.3x the Gaussian one per sim (issue 14)


def compare_sky_models(nside: int, nsims: int, repeats: int, vary: str) -> dict:
    """In-process s/sim of the filamentary and the Gaussian sky, alternating, and their ratio."""
    import numpy as np
    models = ("synthetic-gaussian", "synthetic")
    runs = {m: [] for m in models}
    for rep in range(repeats):
        for m in models:
            print(f"[nside {nside}] {m}, repeat {rep + 1}/{repeats}: warm-up + {nsims} sims", file=sys.stderr,
                  flush=True)
            runs[m].append(run_job("cmbcube", nside=nside, nsims=nsims, workers=1, mode="synchronous", vary=vary,
                                   model=m))
    per_sim = {m: [r["s_per_sim"] for r in runs[m]] for m in models}
    mean = {m: sum(v) / len(v) for m, v in per_sim.items()}
    ratio = mean["synthetic"] / mean["synthetic-gaussian"]
    print(f"\n== sky models, nside {nside} (sky model nside {2 * nside}), in-process, {nsims} sims x {repeats} "
          f"runs each, foregrounds {vary} ==")
    print(f"{'sky':<22}{'s/sim per run':>30}{'mean s/sim':>12}   breakdown (mean s/sim)")
    for m in models:
        brk = {k: sum(r["breakdown"][k] for r in runs[m]) / len(runs[m]) for k in CMBCUBE_PARTS}
        print(f"{m:<22}{', '.join(f'{v:.2f}' for v in per_sim[m]):>30}{mean[m]:>12.3f}   "
              + ", ".join(f"{k} {v:.3f}" for k, v in brk.items()))
    others = [r["other_cpu_s"] / r["process_wall_s"] for m in models for r in runs[m] if r["other_cpu_s"] is not None]
    if others:
        print(f"  CPU used by other processes meanwhile: up to {max(others) / (CORES or 1) * 100:.0f}% of the cores")
    print(f"  separate runs: cost ratio filamentary / Gaussian = {ratio:.2f}x (mean s/sim, store writes included)")
    # the same in one process, one sim of each sky in turn: drift in the machine's load cancels
    print(f"[nside {nside}] interleaved: warm-up + {2 * nsims * repeats} sims in one process", file=sys.stderr,
          flush=True)
    inter = run_job("interleaved", nside=nside, nsims=nsims * repeats, vary=vary)
    t = {m: np.asarray(v) for m, v in inter["times"].items()}
    pair = t["synthetic"] / t["synthetic-gaussian"]
    i_ratio = float(t["synthetic"].sum() / t["synthetic-gaussian"].sum())
    print(f"  interleaved in one process ({nsims * repeats} sims each, G, F, G, F, ...): s/sim Gaussian "
          f"{t['synthetic-gaussian'].mean():.3f} (median {np.median(t['synthetic-gaussian']):.3f}), filamentary "
          f"{t['synthetic'].mean():.3f} (median {np.median(t['synthetic']):.3f}); templates "
          f"{inter['breakdown']['synthetic-gaussian'].get('foreground_templates', 0):.3f} vs "
          f"{inter['breakdown']['synthetic'].get('foreground_templates', 0):.3f} s/sim")
    print(f"  cost ratio filamentary / Gaussian = {i_ratio:.2f}x (interleaved, total time; median of per-pair "
          f"ratios {np.median(pair):.2f}x)  target <= {SKY_MODEL_TARGET}x: "
          f"{verdict(i_ratio, SKY_MODEL_TARGET, higher_is_better=False)}")
    return {"nside": nside, "nsims": nsims, "repeats": repeats, "foregrounds": vary,
            "s_per_sim": per_sim, "mean_s_per_sim": mean, "cost_ratio_separate_runs": ratio,
            "interleaved_s_per_sim": {m: v.tolist() for m, v in t.items()},
            "interleaved_breakdown": inter["breakdown"], "cost_ratio": i_ratio,
            "cost_ratio_median_pair": float(np.median(pair)), "target": SKY_MODEL_TARGET}


def verdict(measured, target, higher_is_better=True):
    if measured is None:
        return "not measured"
    ok = measured >= target if higher_is_better else measured <= target
    return "met" if ok else "NOT met"


def print_targets(results: dict) -> None:
    print("\n== targets (printed next to the measured values, not asserted) ==")

    def line(what, target, measured, note):
        print(f"  {what:<38} target {target:<9} measured {measured:<10} {note}")

    for nside in sorted(set(results) | set(TARGETS["speedup_vs_serial_fits"])):
        target = TARGETS["speedup_vs_serial_fits"].get(nside)
        if nside not in results:
            line(f"speedup vs serial FITS, nside {nside}", f">= {target:g}x", "-", "not measured in this run")
            continue
        value = results[nside]["speedup_vs_serial_fits"]
        line(f"speedup vs serial FITS, nside {nside}", f">= {target:g}x" if target else "none", ratio(value),
             verdict(value, target) if target else "")
    target = TARGETS["scaling_2_workers"]
    for nside in sorted(results):
        value = results[nside]["scaling_2_workers"]
        line(f"2 workers vs 1 worker, nside {nside}", f">= {target:g}x", ratio(value), verdict(value, target))
    limit = TARGETS["peak_rss_gb_per_worker_at_512"]
    for nside in sorted(set(results) | {512}):
        if nside not in results:
            line(f"peak RSS per worker, nside {nside}", f"<= {limit:g} GB", "-", "not measured in this run")
            continue
        value = results[nside]["peak_rss_gb"]
        line(f"peak RSS per worker, nside {nside}", f"<= {limit:g} GB", f"{value:.2f} GB",
             verdict(value, limit, higher_is_better=False) if nside == 512 else "(the target is for nside 512)")


def lensing_cost(nside: int, nsims: int) -> dict:
    """Per-sim cost of the three ways to get lensed spectra, side by side in one process (see --lensing)."""
    import numpy as np

    from cmbcube import recipe as recipe_mod
    from cmbcube.science import cosmology
    from cmbcube.stages import simspec

    def build(lensing):
        return recipe_mod.validate({"name": "lensing-cost", "nside": nside, "seed": SEED,
                                    "splits": {"train": nsims + 1}, "keep": ["cmb"], "cmb": {"lensing": lensing}})

    with tempfile.TemporaryDirectory() as cache:
        os.environ["CMBCUBE_CACHE_DIR"] = cache
        t0 = time.perf_counter()
        simspec.lensing_correction(build("corrected"))
        setup = time.perf_counter() - t0
        sims = {"before": simspec.simulator(build("corrected")), "corrected": simspec.simulator(build("corrected")),
                "direct": simspec.simulator(build("direct"))}
        accurate = cosmology.lensed_spectra

        def run(mode, sim):
            # "before": the call the simulator made up to e4cd77c (CAMB to lmax, lens_potential_accuracy 0)
            cosmology.lensed_spectra = (lambda p, lmax, *a, **k: cosmology.camb_lensed(p, lmax, 0)) \
                if mode == "before" else accurate
            try:
                t = time.perf_counter()
                result = sims[mode].run("train", sim)
                return time.perf_counter() - t, result
            finally:
                cosmology.lensed_spectra = accurate

        out = {m: {"total": [], "cmb": [], "bb_error": None} for m in sims}
        for mode in sims:
            _, result = run(mode, nsims)                  # warm-up (numba, caches), not timed
            params = dict(zip(cosmology.PARAMS, result.params))
            ref = cosmology.camb_lensed(params, 4000, 2)[:, : 3 * nside]
            out[mode]["bb_error"] = float(np.max(np.abs(result.cls[2, 2:] / ref[2, 2:] - 1)))
        for sim in range(nsims):
            for mode in sims:
                seconds, result = run(mode, sim)
                out[mode]["total"].append(seconds)
                out[mode]["cmb"].append(result.timings["cmb"])
    base = np.mean(out["before"]["total"])
    print(f"\nlensed spectra at nside {nside}, {nsims} sims per mode interleaved in one process "
        f"(load {' '.join(f'{v:.2f}' for v in os.getloadavg())}):")
    print(f"{'mode':<10} {'s/sim':>7} {'cmb part':>9} {'x before':>9} {'max BB error vs CAMB 4000/acc 2':>33}")
    for mode, m in out.items():
        print(f"{mode:<10} {np.mean(m['total']):7.2f} {np.mean(m['cmb']):9.2f} {np.mean(m['total']) / base:9.3f} "
            f"{m['bb_error']:33.4f}")
    extra = np.mean(out["direct"]["total"]) - np.mean(out["corrected"]["total"])
    print(f"one-time lensing correction (cold cache, 7 CAMB runs at lmax 3000 + 7 fast): {setup:.1f} s, "
        f"i.e. the cost of 'direct' over 'corrected' in {setup / extra if extra > 0 else float('nan'):.1f} sims")
    return {"nside": nside, "sims": nsims, "setup_seconds": round(setup, 2),
            **{mode: {"s_per_sim": round(float(np.mean(m["total"])), 3),
                      "cmb_s_per_sim": round(float(np.mean(m["cmb"])), 3),
                      "ratio_to_before": round(float(np.mean(m["total"]) / base), 3),
                      "max_bb_error": round(m["bb_error"], 5)} for mode, m in out.items()}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="nside 64 only, few sims (< 3 minutes on 2 cores)")
    parser.add_argument("--nside512", action="store_true",
                        help="also measure nside 512 once (not with --quick; slow, several GB per process)")
    parser.add_argument("--foregrounds", choices=tuple(FOREGROUND_WORKLOADS), default="per_sim",
                        help="per_sim: a new Galaxy every sim (cmbcube's default); fixed: one Galaxy for all "
                             "sims (CMB-ML's dataset; the baseline still recomputes emission and smoothing per sim)")
    parser.add_argument("--bandpass", choices=("tophat", "delta"), default="tophat",
                        help="bandpasses on both sides: tophat (cmbcube's default; the baseline integrates with "
                             "pysm3's get_emission(freqs, weights) and bandpass_unit_conversion) or delta "
                             "(CMB-ML's own); an extra in-process run with the other one gives their cost ratio")
    parser.add_argument("--nsides", help="comma-separated nsides to measure instead of the mode's, e.g. 512 "
                                         f"(sims per nside: the default mode's, 512: {SIMS[512]})")
    parser.add_argument("--sky-models", action="store_true",
                        help="compare the per-sim cost of the filamentary (default) and the Gaussian sky only")
    parser.add_argument("--sky-model-sims", type=int, default=6, help="--sky-models: sims per run (default 6)")
    parser.add_argument("--sky-model-repeats", type=int, default=2,
                        help="--sky-models: alternating runs per sky (default 2)")
    parser.add_argument("--lensing", action="store_true",
                        help="what accurate lensed spectra cost per sim at nside 128 (--quick: 64)")
    parser.add_argument("--lensing-sims", type=int, default=4, help="--lensing: timed sims per mode (default 4)")
    parser.add_argument("--job", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.job:
        child(*args.job)
        return 0

    # On SIGTERM (e.g. `timeout`), unwind normally: the running measurement process is killed and the
    # temporary directories are removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.lensing:
        nside = 64 if args.quick else 128
        print(f"cmbcube simulate benchmark, lensing: {CORES} CPU cores, nside {nside}")
        print(json.dumps({"lensing": lensing_cost(nside, args.lensing_sims)}))
        return 0
    if args.sky_models:
        nsides = [int(x) for x in args.nsides.split(",")] if args.nsides else [64]
        print(f"cmbcube simulate benchmark, sky models: {CORES} CPU cores, nsides {nsides}")
        out = [compare_sky_models(n, args.sky_model_sims, args.sky_model_repeats, args.foregrounds) for n in nsides]
        print(json.dumps({"sky_models": out}))
        return 0
    plan = dict(SIMS["quick" if args.quick else "default"])
    if args.nsides:
        try:
            wanted = [int(x) for x in args.nsides.split(",")]
        except ValueError:
            parser.error(f"--nsides: {args.nsides!r} is not a comma-separated list of integers")
        known = {**SIMS["default"], 512: SIMS[512]}
        unknown = [n for n in wanted if n not in known]
        if unknown:
            parser.error(f"--nsides: no sim plan for {unknown}; allowed: {sorted(known)}")
        plan = {n: known[n] for n in wanted}
    if args.nside512:
        if args.quick:
            print("--nside512 is ignored with --quick", file=sys.stderr)
        else:
            plan[512] = SIMS[512]
    t0 = time.perf_counter()
    print(f"cmbcube simulate benchmark: {CORES} CPU cores, nsides {sorted(plan)}, "
          f"{'quick' if args.quick else 'default'} mode, foregrounds {args.foregrounds}, bandpasses {args.bandpass}")
    results = {nside: measure(nside, plan[nside], args.foregrounds, args.bandpass) for nside in sorted(plan)}
    print_targets(results)
    top = results[max(results)]
    elapsed = time.perf_counter() - t0
    print(f"\ntotal benchmark time {elapsed:.0f} s")
    summary = {
        "speedup_vs_serial_fits": top["speedup_vs_serial_fits"],
        "scaling_2_workers": top["scaling_2_workers"],
        "peak_rss_gb": top["peak_rss_gb"],
        "nside": max(results),
        "foregrounds": args.foregrounds,
        "bandpass": args.bandpass,
        "quick": args.quick,
        "cpu_count": CORES,
        "benchmark_seconds": round(elapsed, 1),
        "targets": {"speedup_vs_serial_fits": {str(k): v for k, v in TARGETS["speedup_vs_serial_fits"].items()},
                    "scaling_2_workers": TARGETS["scaling_2_workers"],
                    "peak_rss_gb_per_worker_at_512": TARGETS["peak_rss_gb_per_worker_at_512"]},
        "per_nside": {str(k): v for k, v in results.items()},
    }
    print(json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
