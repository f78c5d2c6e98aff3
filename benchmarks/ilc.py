"""NILC / HILC benchmark: per-sim time, peak memory, worker scaling, residuals.

Measured in one run on the same store:
- seconds per sim of NILC (CMB-ML settings: 44-857 GHz, cosine needlets with the
  nside rule, common beam 20.6', bias tolerance 1e-3), temperature only as PyILC
  does, in one process (steady state, after a warm-up sim);
- peak RSS of a fresh process cleaning one sim (includes the interpreter and
  libraries, ~150 MB);
- sims/s through the Dask stage with 1 and 2 local workers;
- residual RMS against the truth brought to the common beam, for NILC, HILC and
  every single channel brought to the same beam (full sky and |b| > 20 deg).

Reference points (issue #4, this machine): PyILC ~29 s and ~680 MB per sim at
nside 128, its HILC ~4.6 s; targets NILC <= 5 s/sim, <= 700 MB, near-linear scaling.

    python benchmarks/ilc.py            # nside 128
    python benchmarks/ilc.py --quick    # nside 64, under 3 minutes
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def simulate_store(path: str, nside: int, nsims: int) -> None:
    from cmbcube import recipe
    from cmbcube.stages import simulate
    r = recipe.validate({"name": "ilc-bench", "nside": nside, "splits": {"train": 0, "valid": 0, "test": nsims},
                         "fields": ["I"], "keep": ["cmb"], "seed": 4})
    report = simulate.run(r, path, workers=2, progress=False)
    assert report.ok, report.failed


def _one_sim_peak(store, config, queue):
    """Child process: clean sim 0 and report its peak RSS (MB) and seconds."""
    import zarr

    from cmbcube import cube
    from cmbcube.stages import ilc
    group = zarr.open_group(store, mode="r")
    have = [int(d) for d in group["detector"][...]]
    idx = [have.index(d) for d in config.detectors]
    obs = group["obs"].get_orthogonal_selection((2, 0, idx, slice(None), slice(None)))
    units = [str(u) for u in group["unit"][...]]
    t0 = time.perf_counter()
    ilc.clean_sim(obs, list(config.detectors), ["I"], [units[i] for i in idx], config, int(group.attrs["nside"]),
                  "uK_CMB", beams_arcmin=list(cube.detector_beams(group, config.detectors).values()))
    queue.put((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, time.perf_counter() - t0))


def per_sim_seconds(store, config, nsims):
    """In-process steady state: warm-up sim, then the mean over the others."""
    import zarr

    from cmbcube import cube
    from cmbcube.stages import ilc
    group = zarr.open_group(store, mode="r")
    have = [int(d) for d in group["detector"][...]]
    idx = [have.index(d) for d in config.detectors]
    units = [str(u) for u in group["unit"][...]]
    times = []
    for sim in range(nsims):
        obs = group["obs"].get_orthogonal_selection((2, sim, idx, slice(None), slice(None)))
        t0 = time.perf_counter()
        ilc.clean_sim(obs, list(config.detectors), ["I"], [units[i] for i in idx], config,
                      int(group.attrs["nside"]), "uK_CMB",
                      beams_arcmin=list(cube.detector_beams(group, config.detectors).values()))
        times.append(time.perf_counter() - t0)
    return float(np.mean(times[1:] if len(times) > 1 else times))


def residuals(store, nside):
    """RMS of (map at 20.6' - truth at 20.6') for NILC, HILC and each channel, sim 0..n."""
    import healpy as hp

    import cmbcube
    from cmbcube import cube
    from cmbcube.science import instrument, sht
    ds = cmbcube.open(store)
    lmax = 3 * nside - 1
    nest = hp.ring2nest(nside, np.arange(12 * nside ** 2))
    common = instrument.gaussian_beam(20.6, lmax)[0]
    theta, _ = hp.pix2ang(nside, np.arange(12 * nside ** 2))
    high = np.abs(90 - np.degrees(theta)) > 20
    sims = np.nonzero(ds.sim_done.sel(split="test").values)[0]
    out = {}

    def rms(x, sel=None):
        x = x if sel is None else x[sel]
        return float(np.sqrt(np.mean(x ** 2)))

    def to_common(ring_map, fwhm):
        alm = sht.map2alm(ring_map.astype(float), lmax, 3)
        return sht.alm2map(sht.almxfl(alm, common / instrument.gaussian_beam(fwhm, lmax)[0]), nside)

    def no_dipole(ring_map):
        # as CMB-ML's analysis: monopole and dipole removed before comparing maps
        return hp.remove_dipole(ring_map, nest=False)

    acc = {}
    for sim in sims:
        truth = ds.cmb.sel(split="test", sim=sim, field="I").values[nest]
        # the stored truth carries the pixel window (as obs and predictions do); add the common beam
        truth = sht.alm2map(sht.almxfl(sht.map2alm(truth.astype(float), lmax, 3), common), nside)
        maps = {run: ds.pred.sel(run=run, split="test", sim=sim, field="I").values[nest].astype(float)
                for run in ("nilc", "hilc")}
        for det in ds.detector.values:
            fwhm = cube.detector_beams(ds, [det])[int(det)]
            single = ds.obs.sel(split="test", sim=sim, detector=det, field="I").values[nest]
            maps[f"single_{int(det)}"] = to_common(single, fwhm)
        truth = no_dipole(truth)
        for name, m in maps.items():
            m = no_dipole(m)
            acc.setdefault(name, []).append((rms(m - truth), rms(m - truth, high)))
    for name, vals in acc.items():
        out[name] = tuple(float(np.mean(v)) for v in zip(*vals))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="nside 64, few sims (< 3 min)")
    parser.add_argument("--nside", type=int, help="override the nside (e.g. 512, once, if memory allows)")
    parser.add_argument("--sims", type=int, help="number of test sims")
    parser.add_argument("--child-peak", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_peak:
        from cmbcube.stages import ilc as ilc_mod
        cfg = ilc_mod.resolve_config(args.child_peak, ilc_mod.ILCConfig(method="nilc", fields=("I",)))

        class _Q:
            def put(self, value):
                print(value[0], value[1])
        _one_sim_peak(args.child_peak, cfg, _Q())
        return
    from cmbcube.stages import ilc
    nside = args.nside or (64 if args.quick else 128)
    nsims = args.sims or (4 if args.quick else 8)
    work = Path(tempfile.mkdtemp(prefix="cmbcube-ilc-bench-"))
    try:
        store = str(work / "store.zarr")
        t0 = time.perf_counter()
        simulate_store(store, nside, nsims)
        print(f"simulated {nsims} test sims at nside {nside} in {time.perf_counter() - t0:.1f} s")
        config = ilc.resolve_config(store, ilc.ILCConfig(method="nilc", fields=("I",)))
        hconfig = ilc.resolve_config(store, ilc.ILCConfig(method="hilc", fields=("I",)))
        print(f"NILC: detectors {list(config.detectors)}, peaks {list(config.peaks)}, common beam 20.6'")

        nilc_s = per_sim_seconds(store, config, min(nsims, 4))
        hilc_s = per_sim_seconds(store, hconfig, min(nsims, 4))
        # peak memory of a fresh interpreter cleaning one sim (started with subprocess, not fork: a forked
        # child's ru_maxrss starts at the parent's high-water mark)
        import subprocess
        import sys
        out = subprocess.run([sys.executable, __file__, "--child-peak", store], capture_output=True, text=True,
                             check=True).stdout.split()
        peak_mb, cold_s = float(out[-2]), float(out[-1])

        # Dask stage with 1 and 2 workers (startup included: the sims/s a user sees)
        rates = {}
        for workers in (1, 2):
            copy = str(work / f"w{workers}.zarr")
            shutil.copytree(store, copy)
            t0 = time.perf_counter()
            report = ilc.run(copy, ilc.ILCConfig(method="nilc", fields=("I",)), splits=("test",), workers=workers,
                             progress=False)
            assert report.ok, report.failed
            rates[workers] = nsims / (time.perf_counter() - t0)
        ilc.run(store, ilc.ILCConfig(method="nilc", fields=("I",)), splits=("test",), scheduler="synchronous")
        ilc.run(store, ilc.ILCConfig(method="hilc", fields=("I",)), splits=("test",), scheduler="synchronous")
        res = residuals(store, nside)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    singles = {k: v for k, v in res.items() if k.startswith("single_")}
    best = min(singles, key=lambda k: singles[k][1])
    print()
    print(f"{'':28s}{'measured':>12s}{'target':>12s}")
    print(f"{'NILC s/sim (1 process)':28s}{nilc_s:12.2f}{'<= 5':>12s}   (PyILC ~29 s at nside 128)")
    print(f"{'HILC s/sim (1 process)':28s}{hilc_s:12.2f}{'':>12s}   (PyILC HILC ~4.6 s)")
    print(f"{'NILC peak RSS MB (1 sim)':28s}{peak_mb:12.0f}{'<= 700':>12s}   (PyILC ~680 MB; cold {cold_s:.1f} s)")
    print(f"{'stage sims/s, 1 worker':28s}{rates[1]:12.2f}")
    print(f"{'stage sims/s, 2 workers':28s}{rates[2]:12.2f}")
    print(f"{'scaling 2 vs 1 workers':28s}{rates[2] / rates[1]:12.2f}{'~2':>12s}   (startup included)")
    print()
    print("residual RMS vs truth at 20.6' (uK), monopole and dipole removed, full sky / |b| > 20 deg, "
          "mean over sims:")
    for name in ["nilc", "hilc"] + sorted(singles, key=lambda k: int(k.split("_")[1])):
        print(f"  {name:12s} {res[name][0]:10.2f} {res[name][1]:10.2f}")
    summary = {
        "nside": nside, "sims": nsims,
        "nilc_s_per_sim": round(nilc_s, 3), "hilc_s_per_sim": round(hilc_s, 3),
        "peak_rss_mb": round(peak_mb, 1),
        "scaling_2_workers": round(rates[2] / rates[1], 3),
        "nilc_residual_rms": round(res["nilc"][0], 3), "hilc_residual_rms": round(res["hilc"][0], 3),
        "best_single_channel_residual_rms": round(singles[best][0], 3),
        "best_single_channel": int(best.split("_")[1]),
        "nilc_residual_rms_highlat": round(res["nilc"][1], 3),
        "best_single_channel_residual_rms_highlat": round(singles[best][1], 3),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
