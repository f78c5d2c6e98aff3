"""Paper scale: what each stage costs per sim at the CMB-ML dataset's shape, and how long the whole
dataset takes on this machine, on one node and on several nodes through SLURM (issue 25).

Run from the repository root::

    python benchmarks/paper_scale.py                  # nside 512, 2 sims per measurement (~6 GB per worker)
    python benchmarks/paper_scale.py --quick          # nside 128, 1 sim per measurement (a few minutes)
    python benchmarks/paper_scale.py --nside 256 --sims 3 --work /scratch/ps     # keep the stores

Workload: recipes/cmb-ml-512.yaml at the asked nside (cmb-ml-128.yaml differs only in its nside): the 9
Planck detectors, I/Q/U, sky model at 2 x nside, every synthetic foreground drawn anew per sim, top-hat
bands, lensed spectra corrected to CAMB's accurate lensing, white noise with scan hits.

What is measured, in one run on this machine
--------------------------------------------
* simulate with 2 and with 1 local Dask worker processes of 1 thread: one cluster of two workers, one
  of them closed after the 2-worker run.  Before the runs every worker simulates one untimed warm-up sim
  at nside 32 (imports, numba's compile).  The W-worker run simulates W x N sims (2 workers: N train and
  N test sims, the store every later stage reads; 1 worker: the same N train sims): each worker does N
  sims in both.  Seconds per sim per worker: W x (t_last - t_W) / (n - W) from the sims' completion
  times (mtime of each sim's sim_done chunk, written last), or W x the run's wall seconds / n if n = W.
* preprocess (statistics over the N train sims), NILC and HILC (cmbcube.stages.ilc, CMB-ML's settings),
  predict (cmbnncs-unet8 at nside >= 256, else cmbnncs-unet5, untrained: recorded as a run the way
  ``cmbcube train`` records one and handed to cmbcube.stages.predict.run as its module, so no
  checkpoint is read; weights do not change the cost) and analyze (every run: NILC, HILC, the network;
  its unit is one (run, sim) pair), each in a fresh Python process that imports the stage's modules
  before the clock starts.  Dask stages run with the synchronous scheduler and every thread pool pinned
  to 1 thread (one worker's cost); predict, not a Dask stage, with torch's default CPU threads.  Seconds
  per unit: (t_last - t_first) / (n - 1) from the units' done-flag mtimes (steady state; one-time work
  such as NaMaster's windows shows as setup), or the stage's wall seconds / n when n = 1; preprocess:
  its wall seconds / train sims.
* peak memory per worker: VmHWM of the process doing the work (/proc/self/status; not ru_maxrss, which
  after fork + exec starts at the parent's high-water mark): every Dask worker, each stage's process.
* bytes per unit: growth of the store's data files (every file but zarr metadata) over the stage / units,
  a stage's one-time writes included (statistics, masks, NaMaster windows); simulate's store is created
  first (its coordinates, once per dataset, are not counted).

Extrapolation: see ASSUMPTIONS (printed with the figures).  The last line of stdout is one JSON object
with every number; unless --quick, the report also goes to benchmarks/results/paper_scale_n{nside}_{date}.txt.
Hidden options for tests/test_paper_scale.py: --in-process (the stages after simulate run in this
process: no fresh interpreters, so their peaks are this process's high-water mark) and --results-dir.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (str(ROOT), str(HERE)):        # common, simulate (benchmarks/) and cmbcube; Dask workers inherit it
    if _path not in sys.path:
        sys.path.insert(0, _path)

import simulate as simbench  # noqa: E402  (benchmarks/simulate.py: CORES, mem_total_gb, maxrss_gb, busy CPU)
from common import load_average, log  # noqa: E402

RECIPE = ROOT / "recipes" / "cmb-ml-512.yaml"
WARMUP_NSIDE = 32
METADATA = {"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"}
SPLITS = {"train": 1000, "valid": 250, "test": 200}        # CMB-ML's 1450 skies
ILC_RUNS = ("nilc", "hilc")
STORES = {1: "simulate-1-worker.zarr", 2: "paper.zarr"}      # the 2-worker store is read by every later stage
ASSUMPTIONS = (
    "per-unit costs are this machine's: simulate's from its 1-worker run, every other Dask stage's from one "
    "process with its thread pools pinned to 1 thread (one worker)",
    "parallel efficiency e = (1 -> 2 worker throughput of simulate) / 2, capped at 1, held constant for any "
    "number of workers >= 2 and applied to every Dask stage (simulate, preprocess, NILC, HILC, analyze)",
    "workers = nodes x min(cores per node, floor(memory per node / largest peak per worker of the Dask "
    "stages)): one cluster for every stage, 1 thread per worker, as `cmbcube run` does",
    "stage wall = dataset units x seconds per unit / (workers x e); total = the sum over the stages",
    "predict is one process (not a Dask stage): dataset units x its seconds per sim, on every machine "
    "(torch's CPU threads as measured here; a node's many cores not assumed to help)",
    "not included: training the networks (out of scope), starting the cluster or the SLURM jobs, the "
    "one-time setups measured here (lensing correction cache, masks and NaMaster windows, reading a "
    "checkpoint)",
    "SLURM: the same per-worker figures on every node, and every stage at least as long as writing its "
    "bytes to the shared store at --store-mb-s (assumed, not measured)",
)


STARTED = time.perf_counter()


def progress(msg: str) -> None:
    """What is being measured, on stderr: stdout carries only the report."""
    print(f"[{time.perf_counter() - STARTED:7.1f} s] {msg} (load {load_average()})", file=sys.stderr, flush=True)


def network_for(nside: int) -> str:
    return "cmbnncs-unet8" if nside >= 256 else "cmbnncs-unet5"


def dataset_units() -> dict:
    """Units of work of the whole CMB-ML dataset per stage."""
    return {"simulate": sum(SPLITS.values()), "preprocess": SPLITS["train"], "nilc": SPLITS["test"],
            "hilc": SPLITS["test"], "predict": SPLITS["test"], "analyze": SPLITS["test"] * (len(ILC_RUNS) + 1)}


def paper_recipe(nside: int, train: int, test: int, workers: int = 1):
    from cmbcube import recipe
    return recipe.load(RECIPE, [f"nside={nside}", f"name=paper-scale-n{nside}",
                                f"splits={{train: {train}, valid: 0, test: {test}}}",
                                f"cluster={{kind: local, workers: {workers}, threads_per_worker: 1}}"])


def peak_rss_gb() -> float:
    """This process's peak resident memory (GB): VmHWM, else ru_maxrss."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return simbench.maxrss_gb(resource.RUSAGE_SELF)


def data_bytes(store) -> int:
    """Bytes of a store's data files (chunks and shards: every file but the zarr metadata)."""
    return sum(p.stat().st_size for p in Path(store).rglob("*") if p.is_file() and p.name not in METADATA)


def flag_times(store, flag: str) -> dict:
    """{chunk file: mtime} of a done-flag array's chunks (one per unit, written after the unit's data)."""
    root = Path(store, flag, "c")
    return {str(p): p.stat().st_mtime_ns / 1e9 for p in root.rglob("*") if p.is_file()} if root.is_dir() else {}


def per_unit(times, wall: float, n: int, workers: int = 1) -> tuple[float, str]:
    """Seconds per unit per worker: steady from the completion times when n > workers, else from the wall."""
    times = sorted(times)
    if n > workers and len(times) == n:
        return workers * (times[-1] - times[workers - 1]) / (n - workers), "steady"
    return workers * wall / n, "wall"


def warm_up(recipe) -> float:
    """Run on every worker: one sim of ``recipe`` (not written), so that compiling is not timed; once per
    worker process (marked in its environment: this function may reach the worker pickled by value)."""
    from cmbcube.stages.simspec import simulator
    t0 = time.perf_counter()
    if not os.environ.get("CMBCUBE_PAPER_SCALE_WARM"):
        simulator(recipe).run("train", 0)
        os.environ["CMBCUBE_PAPER_SCALE_WARM"] = "1"
    return time.perf_counter() - t0


def measure_simulate(work: Path, nside: int, sims: int) -> dict:
    """simulate with 2 workers (the store every later stage reads), then with 1: the same cluster, one of
    its two workers closed in between."""
    from cmbcube import cube
    from cmbcube.compute import cluster
    from cmbcube.stages import simspec, simulate
    warm = paper_recipe(WARMUP_NSIDE, 1, 0)
    runs, once = {}, {}
    t0 = time.perf_counter()
    for r in (warm, paper_recipe(nside, sims, sims)):
        simspec.lensing_correction(r)            # once per machine (then cached): not in any per-sim figure
    once["lensing_correction_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr), \
            cluster.client_for({"kind": "local", "workers": 2, "threads_per_worker": 1}) as client:
        once["cluster_start_s"] = time.perf_counter() - t0
        for workers in (2, 1):
            recipe = paper_recipe(nside, sims, sims * (workers - 1), workers)
            if workers < 2:
                client.cluster.scale(workers)
                deadline = time.monotonic() + 120
                while len(client.scheduler_info()["workers"]) > workers and time.monotonic() < deadline:
                    time.sleep(0.1)
            progress(f"simulate, {workers} worker(s): warm-up")
            warm_s = client.run(warm_up, warm)
            store = str(work / STORES[workers])
            cube.create_or_check(store, recipe)      # once per dataset: its bytes and seconds are not a sim's
            created = data_bytes(store)
            progress(f"simulate, {workers} worker(s): {workers * sims} sims at nside {nside}")
            t0 = time.perf_counter()
            rep = simulate.run(recipe, store, scheduler=client.scheduler.address, progress=False)
            wall = time.perf_counter() - t0
            if not rep.ok or len(rep.written) != workers * sims:
                raise RuntimeError(f"simulate with {workers} worker(s) wrote {len(rep.written)} sims: {rep.failed}")
            n = len(rep.written)
            seconds, how = per_unit(flag_times(store, "sim_done").values(), wall, n, workers)
            grown = data_bytes(store) - created
            runs[workers] = {"workers": len(warm_s), "units": n, "wall_s": wall, "s_per_unit": seconds,
                             "method": how, "sims_per_hour": 3600.0 * workers / seconds,
                             "setup_s": max(0.0, wall - n * seconds / workers),
                             "peak_rss_gb": max(client.run(peak_rss_gb).values()),
                             "warmup_s": max(warm_s.values()), "store_creation_bytes": created,
                             "bytes_written": grown, "bytes_per_unit": grown / n,
                             "breakdown": {k: v / n for k, v in rep.timings.items()}}
    runs["one_time"] = once
    return runs


# Imported before a stage is timed: a worker pays them once per process, not per sim
STAGE_IMPORTS = {"preprocess": ("cmbcube.stages.preprocess",),
                 "nilc": ("healpy", "cmbcube.science.foregrounds", "cmbcube.stages.ilc"),
                 "predict": ("torch", "healpy", "cmbcube.stages.predict"),
                 "analyze": ("healpy", "pymaster", "cmbcube.stages.analyze")}
STAGE_IMPORTS["hilc"] = STAGE_IMPORTS["nilc"]


def untrained_run(store: str, model: str):
    """The network's run in the store, as ``cmbcube train`` records it, and the network with its initial
    (untrained) weights: what predict costs does not depend on the weights."""
    from cmbcube import cube
    from cmbcube.stages import train
    config = train.TrainConfig(model=model, **train.defaults(model))
    cube.ensure_run(store, model, model, {**config.as_dict(), "checkpoint_dir": str(cube.run_dir(store, model))},
                    cube.truth_beam(store))
    return train.build_network(config, train.datasets_for(store, config, "test"))


def stage_job(spec: dict) -> dict:
    """One stage in this process: wall seconds, units done, peak memory (imports and setup not timed)."""
    import importlib
    stage, store = spec["stage"], spec["store"]
    t0 = time.perf_counter()
    for name in STAGE_IMPORTS[stage]:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    extra = {"imports_s": time.perf_counter() - t0}
    t0 = time.perf_counter()
    if stage == "preprocess":
        from cmbcube.stages import preprocess
        units = preprocess.run(store, scheduler="synchronous", progress=False).sims
    elif stage in ILC_RUNS:
        from cmbcube.stages import ilc
        rep = ilc.run(store, ilc.ILCConfig(method=stage), splits=("test",), scheduler="synchronous", progress=False)
        if not rep.ok:
            raise RuntimeError(f"{stage} failed: {rep.failed[:2]}")
        units = len(rep.written)
    elif stage == "predict":
        import torch

        from cmbcube.stages import predict
        net = untrained_run(store, spec["model"])
        extra.update(network_s=time.perf_counter() - t0, torch_threads=torch.get_num_threads(),
                     parameters=sum(p.numel() for p in net.parameters()))
        t0 = time.perf_counter()
        units = len(predict.run(store, spec["model"], splits=("test",), device="cpu", progress=False,
                                    model=net).written)
    else:
        from cmbcube.stages import analyze
        rep = analyze.run(store, splits=("test",), scheduler="synchronous", progress=False)
        if not rep.ok:
            raise RuntimeError(f"analyze failed: {rep.failed[:2]}")
        units = len(rep.written)
    return {"wall_s": time.perf_counter() - t0, "units": units, "peak_rss_gb": peak_rss_gb(), **extra}


USER_ENV = dict(os.environ)      # before Dask's nanny writes its workers' thread settings into os.environ


def run_job(spec: dict, in_process: bool) -> dict:
    """``stage_job`` in a fresh Python process (its own peak memory), or here with ``in_process``."""
    if in_process:
        return stage_job(spec)
    from cmbcube.compute import cluster
    env = dict(USER_ENV)
    if spec["stage"] != "predict":
        env.update(cluster.worker_environment(1), CMBCUBE_SHT_THREADS="1")       # one Dask worker's pools
    with tempfile.TemporaryDirectory(prefix="cmbcube-paper-scale-") as tmp:
        spec_path, out_path = Path(tmp, "spec.json"), Path(tmp, "out.json")
        spec_path.write_text(json.dumps(spec))
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--job", str(spec_path), str(out_path)],
                              stdout=sys.stderr, stderr=sys.stderr, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"{spec['stage']}: the measuring process failed (exit {proc.returncode}); see stderr")
        return json.loads(out_path.read_text())


def measure_stage(stage: str, store: str, model: str, in_process: bool) -> dict:
    flag = {"preprocess": None, "analyze": "analysis_done"}.get(stage, "pred_done")
    before, flags = data_bytes(store), set(flag_times(store, flag)) if flag else set()
    progress(stage)
    res = run_job({"stage": stage, "store": store, "model": model}, in_process)
    n = res["units"]
    if n < 1:
        raise RuntimeError(f"{stage}: no unit was done")
    if flag:
        seconds, how = per_unit([t for f, t in flag_times(store, flag).items() if f not in flags], res["wall_s"], n)
    else:
        seconds, how = res["wall_s"] / n, "wall"
    grown = data_bytes(store) - before
    return {**res, "workers": 1, "s_per_unit": seconds, "method": how, "setup_s": max(0.0, res["wall_s"] - n * seconds),
            "bytes_written": grown, "bytes_per_unit": grown / n}


def extrapolate(stages: dict, units: dict, efficiency: float, cores: int, memory_gb: float, nodes: int = 1,
                store_mb_s: float | None = None) -> dict:
    """Wall time of the whole dataset on ``nodes`` machines of ``cores`` cores and ``memory_gb`` GB each."""
    peak = max(s["peak_rss_gb"] for name, s in stages.items() if name != "predict")
    per_node = min(cores, int(memory_gb // peak))
    workers = nodes * per_node
    out = {"nodes": nodes, "cores": cores, "memory_gb": memory_gb, "peak_rss_gb": peak, "workers": workers,
           "efficiency": 1.0 if workers == 1 else efficiency, "store_mb_s": store_mb_s, "stages": {}, "total_s": None}
    if workers < 1:
        return out          # one worker does not fit in a node's memory
    for name, s in stages.items():
        n = units[name]
        compute = n * s["s_per_unit"] if name == "predict" else n * s["s_per_unit"] / (workers * out["efficiency"])
        write = n * s["bytes_per_unit"] / (store_mb_s * 1e6) if store_mb_s else 0.0
        out["stages"][name] = {"units": n, "compute_s": compute, "write_s": write, "wall_s": max(compute, write)}
    out["total_s"] = sum(r["wall_s"] for r in out["stages"].values())
    out["bytes"] = sum(n * stages[name]["bytes_per_unit"] for name, n in units.items())
    return out


def span(seconds) -> str:
    if seconds is None:
        return "does not fit"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def report(res: dict, out) -> None:
    st, units = res["stages"], res["dataset_units"]
    out(f"\n== per-unit cost at nside {res['nside']} ({res['sims']} sim(s) per measurement) ==")
    out(f"{'stage':<12}{'unit':<12}{'units':>6}{'workers':>8}{'s/unit/worker':>14}{'how':>7}{'setup s':>9}"
        f"{'peak GB':>9}{'MB/unit':>9}{'dataset':>9}")
    rows = [("simulate", st["simulate"]), ("simulate", res["simulate_2_workers"])] + \
        [(k, st[k]) for k in ("preprocess", "nilc", "hilc", "predict", "analyze")]
    kinds = {"simulate": "sim", "preprocess": "train sim", "analyze": "(run, sim)"}
    for name, s in rows:
        workers = "1 proc" if name == "predict" else str(s["workers"])
        out(f"{name:<12}{kinds.get(name, 'test sim'):<12}{s['units']:>6}{workers:>8}{s['s_per_unit']:>14.2f}"
            f"{s['method']:>7}{s['setup_s']:>9.1f}{s['peak_rss_gb']:>9.2f}{s['bytes_per_unit'] / 1e6:>9.2f}"
            f"{units.get(name, 0):>9}")
    w1, w2 = st["simulate"], res["simulate_2_workers"]
    out(f"  simulate: {w1['sims_per_hour']:.0f} sims/h with 1 worker, {w2['sims_per_hour']:.0f} with 2: scaling "
        f"{res['scaling_2_workers']:.2f}x, parallel efficiency e = {res['efficiency_measured']:.3f} (used: "
        f"{res['efficiency']:.3f}); per sim (1 worker): " + ", ".join(f"{k} {v:.2f} s" for k, v in
                                                                     w1["breakdown"].items()))
    once = res["one_time"]
    out(f"  one-time, not in the figures: lensing correction {once['lensing_correction_s']:.1f} s (cached per "
        f"machine), Dask cluster start {once['cluster_start_s']:.1f} s, warm-up sim at nside {WARMUP_NSIDE} "
        f"{w2['warmup_s']:.1f} s, stage imports " + ", ".join(f"{k} {st[k]['imports_s']:.1f} s" for k in
                                                           ("preprocess", "nilc", "hilc", "predict", "analyze")))
    p = st["predict"]
    out(f"  predict: {res['model']} ({p['parameters']:,} parameters, untrained: registered as a run and built "
        f"in {p['network_s']:.1f} s, not timed) on the CPU, torch {p['torch_threads']} thread(s)")
    out("  how: steady = from the units' completion times after the first; wall = stage wall / units (setup "
        "included); setup s = stage wall - units x s/unit")
    out(f"\n== the CMB-ML dataset at nside {res['nside']}: 1450 skies (1000 train, 250 valid, 200 test) ==")
    out(f"  units: simulate {units['simulate']} sims, preprocess {units['preprocess']} train sims, NILC, HILC and "
        f"predict {units['nilc']} test sims, analyze {units['analyze']} (run, sim) pairs (NILC, HILC, "
        f"{res['model']}); training the networks is out of scope and not included")
    for k, text in enumerate(ASSUMPTIONS, 1):
        out(f"  assumption {k}: {text}")
    names = list(units)
    out(f"{'machine':<40}{'workers':>8}" + "".join(f"{n:>11}" for n in names) + f"{'total':>11}")
    for label, e in res["extrapolations"].items():
        head = {"this_machine": f"this machine ({e['cores']} cores, {e['memory_gb']:.0f} GB)",
                "node": f"one node ({e['cores']} cores, {e['memory_gb']:.0f} GB)",
                "slurm": f"{e['nodes']} such nodes via SLURM"}[label]
        if e["total_s"] is None:
            out(f"{head:<40}{0:>8}  a worker needs {e['peak_rss_gb']:.1f} GB: does not fit")
            continue
        out(f"{head:<40}{e['workers']:>8}" + "".join(f"{span(e['stages'][n]['wall_s']):>11}" for n in names)
            + f"{span(e['total_s']):>11}")
    slurm = res["extrapolations"]["slurm"]
    if slurm["total_s"] is not None:
        bound = [n for n, r in slurm["stages"].items() if r["write_s"] > r["compute_s"]]
        out(f"  SLURM: {slurm['bytes'] / 1e12:.2f} TB written to the shared store at {slurm['store_mb_s']:g} MB/s "
            f"takes {span(slurm['bytes'] / (slurm['store_mb_s'] * 1e6))}; limited by the store: "
            f"{', '.join(bound) or 'no stage'}")


def own_cpu() -> float:
    """CPU seconds of this process and its finished children (measuring processes, Dask workers)."""
    ours = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return sum(r.ru_utime + r.ru_stime for r in ours)


def commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nside", type=int, help="output nside, a power of two >= 32 (default 512; 128 with --quick)")
    parser.add_argument("--sims", type=int, help="sims per measured stage and worker (default 2; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="nside 128, 1 sim per measurement, no results file")
    parser.add_argument("--work", help="folder for the stores, kept (default: a temporary one, removed)")
    parser.add_argument("--node-cores", type=int, default=64, help="cores of one node (default 64)")
    parser.add_argument("--node-memory-gb", type=float, default=256.0, help="memory of one node in GB (default 256)")
    parser.add_argument("--nodes", type=int, default=4, help="nodes of the SLURM estimate (default 4)")
    parser.add_argument("--store-mb-s", type=float, default=1000.0,
                        help="write bandwidth of the shared store in the SLURM estimate, MB/s (default 1000, assumed)")
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)     # tests: no child processes
    parser.add_argument("--results-dir", default=str(HERE / "results"), help=argparse.SUPPRESS)
    parser.add_argument("--job", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.job:
        return args
    args.nside = args.nside if args.nside is not None else (128 if args.quick else 512)
    args.sims = args.sims if args.sims is not None else (1 if args.quick else 2)
    if args.nside < 32 or args.nside & (args.nside - 1):
        parser.error(f"--nside {args.nside}: allowed: a power of two >= 32 (32, 64, 128, 256, 512, ...)")
    for name, value in (("--sims", args.sims), ("--node-cores", args.node_cores), ("--nodes", args.nodes)):
        if value < 1:
            parser.error(f"{name} {value}: allowed: an integer >= 1")
    for name, value in (("--node-memory-gb", args.node_memory_gb), ("--store-mb-s", args.store_mb_s)):
        if not value > 0:
            parser.error(f"{name} {value:g}: allowed: a number > 0")
    if args.work and any(Path(args.work, s).exists() for s in STORES.values()):
        parser.error(f"--work {args.work}: already holds {' or '.join(STORES.values())}; allowed: a new or empty "
                     "folder (a store left there would skip the work it already holds)")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    if args.job:
        Path(args.job[1]).write_text(json.dumps(stage_job(json.loads(Path(args.job[0]).read_text()))))
        return 0
    lines = []

    def out(text):
        lines.append(text)
        log(text)

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="cmbcube-paper-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    model, t0, busy0, own0 = network_for(args.nside), time.perf_counter(), simbench.busy_cpu_seconds(), own_cpu()
    load_before = load_average()
    try:
        sim = measure_simulate(work, args.nside, args.sims)
        store = str(work / STORES[2])
        stages = {"simulate": sim[1]}
        for stage in ("preprocess", "nilc", "hilc", "predict", "analyze"):
            stages[stage] = measure_stage(stage, store, model, args.in_process)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    wall = time.perf_counter() - t0
    units = dataset_units()
    measured_e = sim[1]["s_per_unit"] / sim[2]["s_per_unit"]
    e = min(1.0, measured_e)
    cores, memory = simbench.CORES, simbench.mem_total_gb()
    res = {"benchmark": "paper_scale", "date": datetime.date.today().isoformat(), "commit": commit(),
           "nside": args.nside, "sky_nside": 2 * args.nside, "sims": args.sims, "quick": args.quick,
           "in_process": args.in_process, "recipe": str(RECIPE.relative_to(ROOT)), "model": model,
           "cores": cores, "memory_gb": memory, "load_before": load_before, "load_after": load_average(),
           "benchmark_seconds": wall, "stages": stages, "simulate_2_workers": sim[2], "one_time": sim["one_time"],
           "scaling_2_workers": 2 * measured_e, "efficiency_measured": measured_e, "efficiency": e,
           "dataset_units": units, "assumptions": list(ASSUMPTIONS),
           "work": str(work) if args.work else None}
    busy1 = simbench.busy_cpu_seconds()
    if busy0 is not None and busy1 is not None:
        res["other_cpu_share"] = max(0.0, busy1 - busy0 - (own_cpu() - own0)) / (wall * cores)
    res["extrapolations"] = {
        "this_machine": extrapolate(stages, units, e, cores, memory),
        "node": extrapolate(stages, units, e, args.node_cores, args.node_memory_gb),
        "slurm": extrapolate(stages, units, e, args.node_cores, args.node_memory_gb, args.nodes, args.store_mb_s)}
    out(f"cmbcube paper scale: {res['recipe']} at nside {args.nside} (sky {2 * args.nside}), commit {res['commit']}, "
        f"{res['date']}, {cores} cores, {memory:.1f} GB, load {load_before} -> {res['load_after']}")
    report(res, out)
    share = res.get("other_cpu_share")
    if share is not None:
        out(f"  other processes used {100 * share:.0f}% of the cores during the run"
            + (": figures pessimistic, rerun on an idle machine" if share > 0.05 else ""))
    out(f"  benchmark wall time {wall:.0f} s")
    out(json.dumps(res, separators=(",", ":")))
    if not args.quick:
        path = Path(args.results_dir) / f"paper_scale_n{args.nside}_{res['date']}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        print(f"report written to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    # on SIGTERM (e.g. `timeout`) unwind normally: the cluster is closed, the temporary folder removed
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    sys.exit(main())
