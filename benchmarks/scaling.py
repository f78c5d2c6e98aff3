"""Scaling of the Dask stages: simulate sims per minute in one process, on a local cluster of
1 and of 2 workers, and through an external scheduler (``dask scheduler`` + 2 ``dask worker``
processes started from the command line, as on a cluster); CMB-ML ingest throughput.

Run from the repository root::

    python benchmarks/scaling.py --quick      # nside 32, 8 sims per mode (a few minutes on 2 cores)
    python benchmarks/scaling.py              # nside 64, 12 sims per mode

Workload: the quickstart dataset's shape (9 detectors, I/Q/U, every synthetic foreground varying
per sim, CAMB spectra per sim, white noise, sky model at 2 x nside), keep [cmb], a fresh store per
mode.  Every mode runs the real ``cmbcube.stages.simulate.run``.

What is measured
----------------
* cold sims/min: N / wall seconds of the whole call (creating the store, starting or connecting
  to the cluster, every worker's first sim).
* steady s/sim: each sim's completion time is the mtime of its ``sim_done`` chunk (written
  last); with W workers, steady = (t_last - t_W) / (N - W), the interval after each worker
  finished about one sim.  steady sims/min = 60 / steady s/sim.
* every process runs one thread (thread pools pinned, this one included), so the in-process
  steady s/sim is the cost of a sim on one core.
* ratios (steady): local 2 workers / local 1 worker; external 2 workers / local 2 workers (the
  cost of a scheduler in another process, reached over TCP, with workers started by hand);
  local 2 workers / in-process.
* external cluster start: seconds from launching ``dask scheduler`` until 2 workers registered.
* ingest (if ``cmbcube.stages.ingest`` is present): a CMB-ML tree of the same nside written by
  ``cmbcube.testing.make_example_tree`` (9 detectors, IQU FITS, RING), ingested in one process and with a
  local cluster of 2 workers: sims/min and MB of FITS read per second, steady and cold.

The last line is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# One thread per process everywhere, this one included (before numpy/numba load): the in-process
# figure is then the cost of one sim on one core, the unit of the extrapolations in the docs (Running at scale).
for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS",
              "CMBCUBE_SHT_THREADS"):
    os.environ.setdefault(_name, "1")

from cmbcube.compute import cluster  # noqa: E402
from cmbcube.recipe import validate  # noqa: E402
from cmbcube.stages import simulate  # noqa: E402

PINNED = {**cluster.worker_environment(1)}


def recipe_for(nside: int, n: int, seed: int):
    return validate({
        "name": "scaling", "seed": seed, "nside": nside, "splits": {"train": n, "valid": 0, "test": 0},
        "detectors": [30, 44, 70, 100, 143, 217, 353, 545, 857], "fields": ["I", "Q", "U"],
        "foregrounds": {"model": "synthetic", "vary": "per_sim"}, "noise": {"model": "white"},
        "keep": ["cmb"], "cluster": {"kind": "local", "workers": 2},
    })


def completion_times(store: str, n: int) -> list[float]:
    """mtime of each train sim's done-flag chunk (written after all of its data), sorted."""
    return sorted(os.stat(os.path.join(store, "sim_done", "c", "0", str(k))).st_mtime for k in range(n))


def figures(store: str, n: int, workers: int, wall: float) -> dict:
    times = completion_times(store, n)
    w = min(workers, n - 1)
    steady = (times[-1] - times[w - 1]) / (n - w)
    return {"wall_s": round(wall, 2), "cold_sims_per_min": round(60 * n / wall, 2),
            "steady_s_per_sim": round(steady, 3), "steady_sims_per_min": round(60 / steady, 2)}


class External:
    """``dask scheduler`` and ``dask worker`` processes on 127.0.0.1, each in its own session."""

    def __init__(self, workdir: Path, nworkers: int):
        self.file = str(workdir / "scheduler.json")
        env = {**os.environ, **PINNED, "CMBCUBE_SHT_THREADS": "1"}
        dask = str(Path(sys.executable).parent / "dask")
        self.procs = []
        self.logs = []
        t0 = time.perf_counter()
        try:
            self._spawn(workdir, "scheduler", [dask, "scheduler", "--host", "127.0.0.1", "--port", "0",
                                               "--scheduler-file", self.file, "--dashboard-address", "127.0.0.1:0"],
                        env)
            while not os.path.exists(self.file):
                time.sleep(0.05)
            for k in range(nworkers):
                self._spawn(workdir, f"w{k}", [dask, "worker", "--scheduler-file", self.file, "--nthreads", "1",
                                               "--host", "127.0.0.1", "--no-dashboard", "--name", f"w{k}",
                                               "--local-directory", str(workdir / f"w{k}")], env)
            from distributed import Client
            with Client(scheduler_file=self.file) as client:
                client.wait_for_workers(nworkers, timeout=180)
        except BaseException:
            self.close()
            raise
        self.startup_s = time.perf_counter() - t0

    def _spawn(self, workdir, name, argv, env):
        log = open(workdir / f"{name}.log", "w")
        self.logs.append(log)
        self.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           env=env, start_new_session=True))

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for log in self.logs:
            log.close()


def run_simulate(recipe, store: str, n: int, nworkers: int, **kwargs) -> dict:
    t0 = time.perf_counter()
    report = simulate.run(recipe, store, progress=False, **kwargs)
    wall = time.perf_counter() - t0
    if not report.ok or len(report.written) != n:
        raise SystemExit(f"simulate failed: {report.failed[:3]}")
    return figures(store, n, nworkers, wall)


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*.fits"))


def run_ingest(tmp: Path, nside: int, n: int) -> dict | None:
    try:
        from cmbcube.stages import ingest
        from cmbcube.testing import make_example_tree
    except ImportError:
        return None
    tree = make_example_tree(tmp / "cmbml", nside=nside, splits={"train": n}, seed=1)
    nbytes = tree_bytes(Path(tree))
    out = {"sims": n, "fits_mb": round(nbytes / 1e6, 1)}
    for label, kwargs, workers in (("in_process", {"scheduler": "synchronous"}, 1), ("local_2", {"workers": 2}, 2)):
        store = str(tmp / f"ingest-{label}.zarr")
        t0 = time.perf_counter()
        report = ingest.run(tree, store, progress=False, **kwargs)
        wall = time.perf_counter() - t0
        if not report.ok or len(report.written) != n:
            raise SystemExit(f"ingest failed: {report.failed[:3]}")
        fig = figures(store, n, workers, wall)
        fig["steady_mb_per_s"] = round(nbytes / n / fig["steady_s_per_sim"] / 1e6, 1)
        fig["cold_mb_per_s"] = round(nbytes / wall / 1e6, 1)
        out[label] = fig
    out["ratio_2_workers_vs_in_process"] = round(out["in_process"]["steady_s_per_sim"]
                                                 / out["local_2"]["steady_s_per_sim"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="nside 32, 8 sims per mode")
    parser.add_argument("--nside", type=int, help="output nside (default 64; 32 with --quick)")
    parser.add_argument("--sims", type=int, help="sims per mode (default 12; 8 with --quick)")
    parser.add_argument("--ingest-sims", type=int, help="sims in the CMB-ML tree (default: 4 x --sims; a sim "
                        "ingests ~20x faster than it simulates)")
    parser.add_argument("--dir", help="working directory (default: a temporary one, removed)")
    args = parser.parse_args()
    nside = args.nside or (32 if args.quick else 64)
    n = args.sims or (8 if args.quick else 12)
    tmp = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="cmbcube-scaling-"))
    tmp.mkdir(parents=True, exist_ok=True)
    results = {"benchmark": "scaling", "nside": nside, "sims_per_mode": n, "cores": os.cpu_count(),
               "load_before": round(os.getloadavg()[0], 2)}
    try:
        modes = {}
        # the same sims everywhere (same recipe), a fresh store per mode
        recipe = recipe_for(nside, n, seed=11)
        print(f"simulate: nside {nside}, {n} sims per mode, 9 detectors, IQU", flush=True)
        modes["in_process"] = run_simulate(recipe, str(tmp / "sync.zarr"), n, 1, scheduler="synchronous")
        print(f"  in process        {modes['in_process']}", flush=True)
        for w in (1, 2):
            modes[f"local_{w}"] = run_simulate(recipe, str(tmp / f"local{w}.zarr"), n, w, workers=w)
            print(f"  local, {w} worker(s) {modes[f'local_{w}']}", flush=True)
        (tmp / "ext").mkdir(exist_ok=True)
        ext = External(tmp / "ext", 2)
        try:
            modes["external_2"] = run_simulate(recipe, str(tmp / "ext.zarr"), n, 2, scheduler_file=ext.file)
            modes["external_2"]["cluster_start_s"] = round(ext.startup_s, 2)
        finally:
            ext.close()
        print(f"  external, 2 workers {modes['external_2']}", flush=True)
        results["simulate"] = modes
        steady = {k: v["steady_s_per_sim"] for k, v in modes.items()}
        results["ratios"] = {
            "local_2_vs_local_1": round(steady["local_1"] / steady["local_2"], 2),
            "external_2_vs_local_2": round(steady["local_2"] / steady["external_2"], 2),
            "local_2_vs_in_process": round(steady["in_process"] / steady["local_2"], 2),
            "local_1_vs_in_process": round(steady["in_process"] / steady["local_1"], 2),
        }
        print("ratios (steady s/sim, higher = faster): " + ", ".join(f"{k} {v}x" for k, v in results["ratios"].items()))
        ingest = run_ingest(tmp, nside, args.ingest_sims or 4 * n)
        if ingest is None:
            print("ingest: skipped (cmbcube.stages.ingest is not available)")
            results["ingest"] = "skipped: cmbcube.stages.ingest not available"
        else:
            print(f"ingest: {ingest}")
            results["ingest"] = ingest
        results["load_after"] = round(os.getloadavg()[0], 2)
    finally:
        if not args.dir:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
