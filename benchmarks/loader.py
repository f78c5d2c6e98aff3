"""Benchmark streaming training samples from the cube through a torch DataLoader.

Run from the repository root::

    python benchmarks/loader.py --quick     # 16 sims, fewer timed epochs (< 3 min on 2 cores)
    python benchmarks/loader.py             # 48 sims, plus storage.compression none vs zstd

Every figure comes from one run of this script, measured side by side on the
same machine and the same data.

Workload
--------
One sample = every (detector, field) map of one sim at nside 128 (npix =
196608), i.e. ``CubeDataset(store, "train", fields=["I", "Q", "U"],
view="sky", target=None)``.  The dataset skips the pairs that do not exist
(545 and 857 GHz carry I only), so a sample is a (23, npix) float32 NESTED
array.  Every source goes through ``cmbcube.cube.datasets.make_loader`` (batch 4,
shuffle=True with seed 0, so every source sees the same random order), with
num_workers 0 and 2.

Data
----
The physics simulation at nside 128 takes far too long for a benchmark setup,
so the cube is made from its recipe with ``cmbcube.cube.create_or_check`` and
filled with ``cmbcube.cube.write_sim`` from synthetic float32 maps (random
normal values, like noise-dominated maps; NaN for Q/U at 545/857 GHz, as
``simulate`` leaves them).  The same arrays are written in the two baseline
layouts:

* ``fits-per-map``: the CMB-ML layout, one healpy FITS file per detector per
  sim (``sim0000/obs_143_map.fits``), float64, RING ordering, holding I, Q, U
  columns (I only at 545/857).  Its Dataset reads each file with
  ``healpy.read_map(field=...)``, reorders to NESTED with
  ``healpy.reorder(..., r2n=True)`` and stacks the same (23, npix) float32
  array: 9 files per sample.
* ``npy-per-sim``: one float32 ``.npy`` file per sim holding the (23, npix)
  NESTED array, read with ``np.load``: the practical ceiling on this disk.

Before timing, the first sample of each source is compared with the others
(they must be equal) so all three read the same maps.

Timing
------
All loaders are built with ``persistent_workers=True`` when num_workers > 0,
so the timed figures are steady-state epochs, not worker start-up.  Every
loader first runs one untimed epoch: it warms the page cache fairly (every
file of every format has been read once before any timing; all of it fits in
RAM here) and starts the workers.  Then ``--rounds`` rounds follow; each round
times one full epoch (every sim once) of every (source, num_workers)
configuration, in an order rotated from round to round, so a slow spell of a
concurrent process hits all configurations alike.  Reported: samples/s of the
median epoch (and the best one).  Ratios are cube / baseline of the medians.

Memory
------
A fresh Python process reads the cube through the DataLoader
(num_workers=0) over N sims, another one over 2N sims; each records its RSS
(psutil) after every batch and its peak RSS (``ru_maxrss``).  Flat memory means
the 2N peak is about the N peak.

Guarded reads
-------------
Every cmbcube reader goes through ``cmbcube.cube.guard.GuardedStore`` (a finished unit whose chunk is
missing or corrupted raises instead of reading as NaN).  Its cost is measured side by side on the
cube, warm cache, guarded and plain reads interleaved read by read: one map through
``cmbcube.open(...).obs.sel(...).values`` (xarray + Dask, a partial shard read: index + one
chunk), a whole shard through the zarr array (``obs[split, sim]``: every chunk's crc32c checked
by the guard and again by zarr), and ``CubeDataset``'s own shard reader with its strict checks
(missing shard or map) on and off.  ``--guard-only`` runs just this part.

Targets are printed next to the measured values; nothing is asserted.
The last line of stdout is one JSON object.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path

import numpy as np
from common import load_average

NSIDE = 128
BATCH = 4
WORKERS = (0, 2)
FIELDS = ["I", "Q", "U"]
FREQS = (30, 44, 70, 100, 143, 217, 353, 545, 857)
POLARISED = {f: f not in (545, 857) for f in FREQS}
TARGETS = {"vs_fits_per_map": 2.5, "vs_npy_per_sim": 0.9}
SETTINGS = {
    "quick": dict(nsims=16, rounds=3, zstd=False),
    "default": dict(nsims=48, rounds=3, zstd=True),
}


# ----------------------------------------------------------------------------- synthetic data

def synthetic_sim(sim: int, npix: int, nell: int) -> types.SimpleNamespace:
    """One sim's products with the shapes and dtypes ``cube.write_sim`` expects."""
    rng = np.random.default_rng([20261126, sim])
    obs = rng.standard_normal((len(FREQS), len(FIELDS), npix), dtype=np.float32)
    # Noise-like maps with a per-(detector, field) level, as real maps have.
    obs *= rng.uniform(5.0, 200.0, size=(len(FREQS), len(FIELDS), 1)).astype(np.float32)
    for k, freq in enumerate(FREQS):
        if not POLARISED[freq]:
            obs[k, 1:] = np.nan                     # absent pairs read as NaN in the cube
    return types.SimpleNamespace(
        obs=obs,
        cmb=(rng.standard_normal((len(FIELDS), npix), dtype=np.float32) * 70.0),
        params=np.array([67.0, 0.0224, 0.12, 0.965, 2.1e-9, 0.054]),
        cls=np.abs(rng.standard_normal((4, nell))),
        components=None,
        noise=None,
        timings={},
    )


def channels_of(obs: np.ndarray) -> np.ndarray:
    """(9, 3, npix) -> (23, npix): the existing pairs, detector-major (CubeDataset's order)."""
    rows = [obs[k, j] for k, freq in enumerate(FREQS) for j in range(len(FIELDS))
            if j == 0 or POLARISED[freq]]
    return np.stack(rows)


def make_recipe(nsims: int, compression: str = "none"):
    from cmbcube.recipe import validate
    return validate({"name": "loader-bench", "nside": NSIDE, "splits": {"train": nsims, "valid": 0, "test": 0},
                     "keep": ["cmb"], "fields": FIELDS, "storage": {"compression": compression}})


def fits_path(root: Path, sim: int, freq: int) -> Path:
    return root / "Train" / f"sim{sim:04d}" / f"obs_{freq}_map.fits"


def npy_path(root: Path, sim: int) -> Path:
    return root / f"sim{sim:04d}.npy"


def build_data(tmp: Path, nsims: int, nsims_cube: int, zstd: bool) -> dict:
    """Write the cube (nsims_cube sims), the zstd cube, FITS and npy baselines (nsims sims)."""
    import healpy as hp

    from cmbcube import cube
    npix = 12 * NSIDE ** 2
    paths = {"cube": tmp / "cube.zarr", "fits": tmp / "fits", "npy": tmp / "npy"}
    recipe = make_recipe(nsims_cube)
    cube.create_or_check(str(paths["cube"]), recipe)
    if zstd:
        paths["cube_zstd"] = tmp / "cube_zstd.zarr"
        cube.create_or_check(str(paths["cube_zstd"]), make_recipe(nsims, "zstd"))
    paths["npy"].mkdir()
    nell = 3 * recipe["sky_nside"]
    n2r = hp.nest2ring(NSIDE, np.arange(npix))      # ring[n2r[p]] = nested[p]
    t = dict.fromkeys(("generate", "cube", "cube_zstd", "fits", "npy"), 0.0)
    for sim in range(nsims_cube):
        t0 = time.perf_counter()
        result = synthetic_sim(sim, npix, nell)
        t1 = time.perf_counter()
        cube.write_sim(str(paths["cube"]), "train", sim, result)
        t2 = time.perf_counter()
        t["generate"] += t1 - t0
        t["cube"] += t2 - t1
        if sim >= nsims:
            continue
        if zstd:
            cube.write_sim(str(paths["cube_zstd"]), "train", sim, result)
        t3 = time.perf_counter()
        np.save(npy_path(paths["npy"], sim), channels_of(result.obs))
        t4 = time.perf_counter()
        for k, freq in enumerate(FREQS):
            nf = 3 if POLARISED[freq] else 1
            ring = np.empty((nf, npix), dtype=np.float64)
            ring[:, n2r] = result.obs[k, :nf]
            out = fits_path(paths["fits"], sim, freq)
            out.parent.mkdir(parents=True, exist_ok=True)
            hp.write_map(str(out), list(ring) if nf == 3 else ring[0], nest=False, dtype=np.float64,
                         coord="G", column_units="uK_CMB", overwrite=True)
        t5 = time.perf_counter()
        t["cube_zstd"] += t3 - t2
        t["npy"] += t4 - t3
        t["fits"] += t5 - t4
    for key in ("cube", "cube_zstd"):
        if key in paths:
            cube.consolidate(str(paths[key]))
    return {"paths": paths, "write_s": t}


def tree_bytes(path: Path) -> tuple[int, int]:
    files = [p for p in Path(path).rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


# ----------------------------------------------------------------------------- baseline datasets

class FitsPerMapDataset:
    """CMB-ML layout: per sample, 9 healpy FITS files (float64, RING), read, reordered, stacked."""

    def __init__(self, root, sims):
        self.root, self.sims = Path(root), list(sims)

    def __len__(self):
        return len(self.sims)

    def __getitem__(self, index):
        import healpy as hp
        import torch
        sim = self.sims[int(index)]
        out = np.empty((23, 12 * NSIDE ** 2), dtype=np.float32)
        row = 0
        for freq in FREQS:
            field = (0, 1, 2) if POLARISED[freq] else 0
            maps = hp.read_map(str(fits_path(self.root, sim, freq)), field=field)
            maps = np.atleast_2d(hp.reorder(maps, r2n=True))
            out[row: row + maps.shape[0]] = maps
            row += maps.shape[0]
        return {"inputs": torch.from_numpy(out), "sim": sim, "patch": -1}


class NpyPerSimDataset:
    """One float32 (23, npix) NESTED .npy per sim: the practical ceiling."""

    def __init__(self, root, sims):
        self.root, self.sims = Path(root), list(sims)

    def __len__(self):
        return len(self.sims)

    def __getitem__(self, index):
        import torch
        sim = self.sims[int(index)]
        return {"inputs": torch.from_numpy(np.load(npy_path(self.root, sim))), "sim": sim, "patch": -1}


def cube_dataset(store, sims):
    from cmbcube.cube.datasets import CubeDataset
    return CubeDataset(str(store), "train", fields=FIELDS, view="sky", target=None, sims=list(sims))


# ----------------------------------------------------------------------------- timing

def run_epoch(loader) -> tuple[float, int]:
    """Seconds and samples of one full pass; touches every batch so nothing stays lazy."""
    n = 0
    t0 = time.perf_counter()
    for batch in loader:
        x = batch["inputs"]
        n += x.shape[0]
        _ = float(x[:, :, 0].sum())
    return time.perf_counter() - t0, n


def time_loaders(datasets: dict, rounds: int, log) -> dict:
    """{(source, workers): [samples/s per timed epoch]} after one untimed epoch per loader."""
    from cmbcube.cube.datasets import make_loader
    loaders = {}
    for (name, workers), ds in datasets.items():
        extra = {"persistent_workers": True} if workers > 0 else {}
        loaders[(name, workers)] = make_loader(ds, batch_size=BATCH, shuffle=True, num_workers=workers,
                                               seed=0, **extra)
    # Warm-up: one untimed epoch per loader (page cache, worker start, store open).
    for key, loader in loaders.items():
        seconds, n = run_epoch(loader)
        log(f"  warm-up {key[0]:>14s} w={key[1]}: {n / seconds:7.1f} samples/s (untimed)")
    keys = list(loaders)
    rates = {key: [] for key in keys}
    for r in range(rounds):
        shift = r % len(keys)
        for key in keys[shift:] + keys[:shift]:
            seconds, n = run_epoch(loaders[key])
            rates[key].append(n / seconds)
        log(f"  round {r + 1}/{rounds}: " + ", ".join(f"{k[0]} w{k[1]} {rates[k][-1]:.1f}" for k in keys))
    loaders.clear()
    gc.collect()            # shuts the persistent workers down
    return rates


def breakdown(sources: dict, nsims: int, repeats: int = 3) -> dict:
    """Milliseconds per sample in one process, no DataLoader (warm cache): where the time goes."""
    import torch  # noqa: F401
    cube_ds = sources["cube"]
    sims = list(range(min(nsims, 8)))

    def per_sample(fn):
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            for sim in sims:
                fn(sim)
            best = min(best, (time.perf_counter() - t0) / len(sims))
        return best * 1e3
    block = cube_ds.read_inputs(0)
    return {
        "cube_getitem": per_sample(lambda sim: cube_ds[sim]),
        "cube_read_inputs": per_sample(lambda sim: cube_ds.read_inputs(sim)),
        "cube_transform_none": per_sample(lambda sim: cube_ds.transform.forward(block)),
        "zarr_obs_whole_shard": per_sample(lambda sim: cube_ds._arrays()["obs"][cube_ds.isplit, sim]),
        "npy_getitem": per_sample(lambda sim: sources["npy-per-sim"][sim]),
        "fits_getitem": per_sample(lambda sim: sources["fits-per-map"][sim]),
    }


# ----------------------------------------------------------------------------- memory probe (child process)

def memory_probe(store: str, nsims: int) -> dict:
    import psutil
    import torch  # noqa: F401

    from cmbcube.cube.datasets import make_loader
    proc = psutil.Process()
    ds = cube_dataset(store, range(nsims))
    loader = make_loader(ds, batch_size=BATCH, shuffle=True, num_workers=0, seed=0)
    rss0 = proc.memory_info().rss
    samples = []
    t0 = time.perf_counter()
    for batch in loader:
        _ = float(batch["inputs"][:, :, 0].sum())
        del batch
        samples.append(proc.memory_info().rss)
    wall = time.perf_counter() - t0
    mb = 1 / 2 ** 20
    return {"nsims": nsims, "batches": len(samples), "seconds": wall,
            "rss_before_mb": rss0 * mb, "rss_after_first_batch_mb": samples[0] * mb,
            "rss_last_mb": samples[-1] * mb, "rss_max_sampled_mb": max(samples) * mb,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_probe(store: Path, nsims: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--memory-probe", str(store), "--probe-sims", str(nsims)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- guarded reads

def guard_overhead(store: str, nsims: int, rounds: int, log) -> dict:
    """Seconds per read, guarded / plain, for three readers (medians of ``rounds`` alternating rounds)."""
    import zarr

    from cmbcube import cube
    from cmbcube.cube.shardread import ShardReader
    store = str(store)
    sims = list(range(nsims))
    views = {True: cube.open_dataset(store, guard=True), False: cube.open_dataset(store, guard=False)}
    groups = {True: cube.read_group(store), False: zarr.open_group(store, mode="r")}
    fast = ShardReader(store, "obs", groups[False]["obs"])
    maps = [(d, f) for d in range(len(FREQS)) for f in range(len(FIELDS)) if f == 0 or POLARISED[FREQS[d]]]

    def one_map(guard, sim):
        _ = views[guard].obs.isel(split=0, sim=sim, detector=4, field=1).values

    def whole_shard(guard, sim):
        groups[guard]["obs"][0, sim]

    def shard_reader(strict, sim):
        fast.read((0, sim), maps, strict=strict)

    cases = {"open_view_one_map": one_map, "zarr_whole_shard": whole_shard, "cubedataset_shard_reader": shard_reader}
    for fn in cases.values():                           # warm-up
        for sim in sims:
            fn(True, sim), fn(False, sim)
    a = views[True].obs.isel(split=0, sim=0).values     # the two must read the same bytes
    if not np.array_equal(a, views[False].obs.isel(split=0, sim=0).values, equal_nan=True):
        raise RuntimeError("guarded and plain reads differ")
    # guarded and plain reads interleaved read by read (order alternating), so a busy spell of another
    # process hits both alike; per round the mean over sims, then the median over rounds
    times = {(name, g): [] for name in cases for g in (True, False)}
    for r in range(rounds):
        for name, fn in cases.items():
            total = {True: 0.0, False: 0.0}
            for k, sim in enumerate(sims):
                for g in ((True, False) if (r + k) % 2 == 0 else (False, True)):
                    t0 = time.perf_counter()
                    fn(g, sim)
                    total[g] += time.perf_counter() - t0
            for g in (True, False):
                times[(name, g)].append(total[g] / len(sims))
    out = {}
    for name in cases:
        guarded, plain = statistics.median(times[(name, True)]), statistics.median(times[(name, False)])
        out[name] = {"guarded_ms": guarded * 1e3, "plain_ms": plain * 1e3, "ratio": guarded / plain}
        log(f"  {name:<26s} guarded {guarded * 1e3:8.3f} ms  plain {plain * 1e3:8.3f} ms  ratio {guarded / plain:.3f}")
    return out


def print_guard(result: dict, nsims: int, rounds: int) -> None:
    print()
    print("guarded reads (cmbcube.cube.guard) vs plain zarr, ms per read, "
          f"median of {rounds} rounds over {nsims} sims, reads interleaved, warm cache:")
    notes = {"open_view_one_map": "cmbcube.open(...).obs one map (index + 1 chunk through xarray/Dask)",
             "zarr_whole_shard": "zarr obs[split, sim]: whole shard, 23 maps (crc32c by guard + zarr)",
             "cubedataset_shard_reader": "CubeDataset's shard reader, strict checks on / off"}
    print(f"  {'guarded':>9s}{'plain':>9s}{'ratio':>8s}")
    for name, v in result.items():
        print(f"  {v['guarded_ms']:9.3f}{v['plain_ms']:9.3f}{v['ratio']:8.3f}  {notes[name]}")


def guard_only(args, log) -> int:
    from cmbcube import cube
    nsims = args.sims or 16
    rounds = args.rounds or 7
    tmp = Path(tempfile.mkdtemp(prefix="cmbcube-guard-", dir=args.tmpdir))
    try:
        store = tmp / "cube.zarr"
        cube.create_or_check(str(store), make_recipe(nsims))
        npix = 12 * NSIDE ** 2
        for sim in range(nsims):
            cube.write_sim(str(store), "train", sim, synthetic_sim(sim, npix, 3 * 2 * NSIDE))
        cube.consolidate(str(store))
        log(f"guarded reads: nside {NSIDE}, {nsims} sims; load average {load_average()}")
        result = guard_overhead(str(store), nsims, rounds, log)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_guard(result, nsims, rounds)
    print(json.dumps({"benchmark": "loader-guard", "nside": NSIDE, "n_sims": nsims, "rounds": rounds,
                      "guard": result, "load_average": load_average()}))
    return 0


# ----------------------------------------------------------------------------- main

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="16 sims, 3 timed rounds, no zstd comparison")
    parser.add_argument("--sims", type=int, default=None, help="sims in the timed datasets (default 48, quick 16)")
    parser.add_argument("--rounds", type=int, default=None, help="timed epochs per configuration")
    parser.add_argument("--no-zstd", action="store_true", help="skip the storage.compression zstd cube")
    parser.add_argument("--tmpdir", default=None, help="where to write the temporary data (default: system temp)")
    parser.add_argument("--guard-only", action="store_true", help="only the guarded-read overhead (cube only)")
    parser.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--probe-sims", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")

    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_probe, args.probe_sims)))
        return 0

    mode = SETTINGS["quick" if args.quick else "default"]
    nsims = args.sims or mode["nsims"]
    rounds = args.rounds or mode["rounds"]
    zstd = mode["zstd"] and not args.no_zstd
    t_start = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t_start:6.1f}s] {msg}", flush=True)

    if args.guard_only:
        return guard_only(args, log)
    import healpy
    import torch
    import zarr
    log(f"loader benchmark: nside {NSIDE}, {nsims} sims, batch {BATCH}, workers {WORKERS}, {rounds} timed "
        f"epochs per configuration; {os.cpu_count()} CPUs; torch {torch.__version__}, zarr {zarr.__version__}, "
        f"healpy {healpy.__version__}, python {platform.python_version()}; load average {load_average()}")

    tmp = Path(tempfile.mkdtemp(prefix="cmbcube-loader-", dir=args.tmpdir))
    try:
        log(f"writing data into {tmp} (cube: {2 * nsims} sims for the memory check; baselines: {nsims})")
        built = build_data(tmp, nsims, 2 * nsims, zstd)
        paths = built["paths"]
        log("  write seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in built["write_s"].items()))
        # Bytes and files per sim of what a sample reads (for the cubes: the obs variable only).
        counts = {"cube": 2 * nsims, "cube_zstd": nsims, "fits": nsims, "npy": nsims}
        sizes = {}
        for name, p in paths.items():
            nbytes, nfiles = tree_bytes(p / "obs" if name.startswith("cube") else p)
            sizes[name] = (nbytes / counts[name], nfiles / counts[name])
            log(f"  {name:>9s}: {sizes[name][0] / 2 ** 20:6.1f} MiB and {sizes[name][1]:.0f} files per sim")

        sims = range(nsims)
        sources = {"cube": cube_dataset(paths["cube"], sims),
                   "fits-per-map": FitsPerMapDataset(paths["fits"], sims),
                   "npy-per-sim": NpyPerSimDataset(paths["npy"], sims)}
        if zstd:
            sources["cube-zstd"] = cube_dataset(paths["cube_zstd"], sims)
        first = {name: ds[0]["inputs"].numpy() for name, ds in sources.items()}
        shape = first["cube"].shape
        same = all(np.array_equal(v, first["cube"], equal_nan=True) for v in first.values())
        log(f"  sample shape {tuple(shape)} float32; same maps in every source: {same}")
        if not same:
            raise RuntimeError("the sources do not hold the same maps; the comparison would be unfair")

        parts = breakdown(sources, nsims)
        log("  ms per sample, one process, no DataLoader: " + ", ".join(f"{k} {v:.1f}" for k, v in parts.items()))
        log(f"timing ({rounds} rounds after one warm-up epoch per loader; load average {load_average()})")
        datasets = {(name, w): ds for name, ds in sources.items() for w in WORKERS}
        rates = time_loaders(datasets, rounds, log)
        del datasets, sources
        gc.collect()

        log(f"memory: fresh processes reading the cube with num_workers=0 over {nsims} and {2 * nsims} sims")
        probes = [run_probe(paths["cube"], n) for n in (nsims, 2 * nsims)]
        log(f"guarded reads vs plain zarr on the cube ({nsims} sims)")
        guard = guard_overhead(str(paths["cube"]), nsims, max(rounds, 5), log)
        log(f"done timing; load average {load_average()}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in rates.items()}
    best = {k: max(v) for k, v in rates.items()}
    names = sorted({k[0] for k in rates}, key=["cube", "cube-zstd", "fits-per-map", "npy-per-sim"].index)

    print()
    print(f"DataLoader throughput, samples/s (sample = {shape[0]} maps x {shape[1]} pixels float32, "
          f"batch {BATCH}, random order, warm page cache; median [best] of {rounds} epochs of {nsims} samples)")
    print(f"{'source':<14s}" + "".join(f"{'workers=' + str(w):>20s}" for w in WORKERS)
          + f"{'MiB/sim':>10s}{'files/sim':>11s}")
    for name in names:
        nbytes, nfiles = sizes[{"cube": "cube", "cube-zstd": "cube_zstd", "fits-per-map": "fits",
                                "npy-per-sim": "npy"}[name]]
        print(f"{name:<14s}" + "".join(f"{med[(name, w)]:>11.1f} [{best[(name, w)]:6.1f}]" for w in WORKERS)
              + f"{nbytes / 2 ** 20:>10.1f}{nfiles:>11.0f}")

    ratios = {}
    print()
    print("ratios (cube / baseline, medians)      target   " + "".join(f"{'workers=' + str(w):>12s}" for w in WORKERS))
    for label, base in (("vs_fits_per_map", "fits-per-map"), ("vs_npy_per_sim", "npy-per-sim")):
        for w in WORKERS:
            ratios[(label, w)] = med[("cube", w)] / med[(base, w)]
        print(f"  cube {label:<32s} >= {TARGETS[label]:<5.2f}" + "".join(
            f"{ratios[(label, w)]:>11.2f}{'*' if ratios[(label, w)] < TARGETS[label] else ' '}" for w in WORKERS))
    print("  (* below target)")
    zstd_ratio = {}
    if zstd:
        for w in WORKERS:
            zstd_ratio[w] = med[("cube-zstd", w)] / med[("cube", w)]
        print("  storage.compression zstd / none               " + "".join(f"{zstd_ratio[w]:>12.2f}" for w in WORKERS)
              + f"   (size zstd / none: {sizes['cube_zstd'][0] / sizes['cube'][0]:.3f})")

    print()
    print("where a sample's time goes (ms, one process, no DataLoader, warm cache, best of 3):")
    notes = {"cube_getitem": "CubeDataset[i] (what the loader calls)",
             "cube_read_inputs": "  its read_inputs: bounding-box slice of the shard + numpy selection",
             "cube_transform_none": "  its transform 'none' (identity: returned as is)",
             "zarr_obs_whole_shard": "obs[isplit, sim]: the same shard read with basic indexing",
             "npy_getitem": "npy-per-sim item (np.load)",
             "fits_getitem": "fits-per-map item (9 x healpy.read_map + reorder)"}
    for key, value in parts.items():
        print(f"  {value:8.1f}  {notes[key]}")

    print()
    print("memory: cube DataLoader, num_workers=0, fresh process per run")
    print(f"{'sims':>6s}{'batches':>9s}{'RSS before':>12s}{'1st batch':>11s}{'last':>9s}{'max':>9s}"
          f"{'peak (maxrss)':>15s}  MiB")
    for p in probes:
        print(f"{p['nsims']:>6d}{p['batches']:>9d}{p['rss_before_mb']:>12.1f}{p['rss_after_first_batch_mb']:>11.1f}"
              f"{p['rss_last_mb']:>9.1f}{p['rss_max_sampled_mb']:>9.1f}{p['peak_rss_mb']:>15.1f}")
    growth = probes[1]["peak_rss_mb"] - probes[0]["peak_rss_mb"]
    end_growth = probes[1]["rss_last_mb"] - probes[0]["rss_last_mb"]
    print(f"{2 * nsims} sims vs {nsims} sims: peak RSS {growth:+.1f} MiB, RSS after the last batch "
          f"{end_growth:+.1f} MiB (target: flat, ~0; one batch is "
          f"{BATCH * shape[0] * shape[1] * 4 / 2 ** 20:.0f} MiB)")
    print(f"note: {os.cpu_count()} CPUs shared with anything else running; load average at the end {load_average()}")

    print_guard(guard, nsims, max(rounds, 5))

    summary = {
        "benchmark": "loader", "nside": NSIDE, "n_sims": nsims, "batch_size": BATCH, "rounds": rounds,
        "sample_shape": list(shape),
        "samples_per_s": max(med[("cube", w)] for w in WORKERS),
        "samples_per_s_workers0": med[("cube", 0)], "samples_per_s_workers2": med[("cube", 2)],
        "fits_per_map_samples_per_s_workers0": med[("fits-per-map", 0)],
        "fits_per_map_samples_per_s_workers2": med[("fits-per-map", 2)],
        "npy_per_sim_samples_per_s_workers0": med[("npy-per-sim", 0)],
        "npy_per_sim_samples_per_s_workers2": med[("npy-per-sim", 2)],
        "vs_fits_per_map": ratios[("vs_fits_per_map", 2)], "vs_npy_per_sim": ratios[("vs_npy_per_sim", 2)],
        "vs_fits_per_map_workers0": ratios[("vs_fits_per_map", 0)],
        "vs_npy_per_sim_workers0": ratios[("vs_npy_per_sim", 0)],
        "targets": TARGETS,
        "peak_rss_mb": probes[1]["peak_rss_mb"],
        "peak_rss_mb_n_sims": probes[0]["peak_rss_mb"],
        "peak_rss_growth_mb_2x_sims": growth,
        "end_rss_growth_mb_2x_sims": end_growth,
        "breakdown_ms_per_sample": parts,
        "guard": guard,
    }
    if zstd:
        summary["cube_zstd_samples_per_s_workers0"] = med[("cube-zstd", 0)]
        summary["cube_zstd_samples_per_s_workers2"] = med[("cube-zstd", 2)]
        summary["zstd_vs_none_workers0"] = zstd_ratio[0]
        summary["zstd_vs_none_workers2"] = zstd_ratio[2]
    summary["seconds"] = time.perf_counter() - t_start
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
