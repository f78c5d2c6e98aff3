"""Training throughput of the networks on whatever device torch sees (CUDA when present), and whether
the store's loader can feed it.

Synthetic part (always; no store needed, so it runs on a bare GPU machine with only torch):
tensors of the real shapes, cmbNNCS UNet5 at nside 128 (planes 512 x 384), UNet8 at nside 512
(2048 x 1536), the patch UNet on 128 x 128 patches; 4 input channels (100/143/217/353 GHz), batch 12
(cmbNNCS) / 16 (patches), Adam, L1, fp32 (on a CPU: UNet5 at nside 32 and the patch UNet on 8 x 8).
Prints samples/s and seconds per CMB-ML epoch (1000 training skies).

Store part (with ``--store PATH``, or ``--make-store DIR``, which first simulates DIR: ``--sims``
train skies at ``--store-nside``, the 4 cmbNNCS detectors, field I, CMB truth kept, then
``preprocess``; a DIR that already holds that store is reused as is).  The cmbNNCS training set of the
store, exactly as ``cmbcube train`` builds it (``stages.train.datasets_for``: CubeDataset, faces view,
inputs 100/143/217/353 GHz field I, target the CMB I, the model's default transforms), is timed three
ways on the same sample sequence (random permutations of the finished train sims, repeated or cut so
that a pass gives every loader worker 2 batches of ``--batch``; every pass reads that sequence, so the
timed ones read from the page cache the first pass filled, as training does when the set fits in RAM):

* loader: a torch DataLoader over it with ``--num-workers`` persistent workers; bytes/s counts the
  float32 inputs and targets that arrive in the main process;
* raw read: the same obs and cmb maps read straight from the store's zarr arrays
  (``cmbcube.cube.read_group``, guarded, basic slicing), no torch, in as many processes as loader
  workers (in this process for 0), each read's bytes counted and discarded;
* device: ``measure()`` below at the store's nside (cmbNNCS UNet5 below nside 256, UNet8 from 256),
  batch ``--batch`` (reused from the synthetic part when that measured the same model, nside and batch);
  on CUDA also the host-to-device copy of a batch, which the trainer does before each step.

Each of loader and raw read runs one untimed pass first (worker start, page cache), then timed
passes, at least ``--passes`` and for at least ``--min-seconds``: steady-state figures (``cmbcube
train`` starts its loader workers anew every epoch; that start is in the untimed pass's figure).
The verdict line says which of loader and device limits training and by how much (loader samples/s /
device samples/s; on CUDA the device's time per step includes the copy): the loader's workers
prepare batches while the device trains, so the slower of the two sets the pace.  If the loader's
workers fail (e.g. a /dev/shm too small for the batches), it is timed with 0 workers and the error is
kept in the JSON.  ``--make-store`` simulates with a local Dask cluster of ``--sim-workers`` workers.

    python benchmarks/gpu_models.py [--steps 20] [--device cpu]               # synthetic only
    python benchmarks/gpu_models.py --store PATH [--num-workers 8] [--batch 12] [--no-synthetic]
    python benchmarks/gpu_models.py --make-store /tmp/g512 --store-nside 512 --sims 8   # GPU box, < 10 min
    python benchmarks/gpu_models.py --make-store /tmp/g32 --store-nside 32 --sims 4 --steps 3   # CPU, < 1 min

Bad options (a path that is not a store, an nside the UNets cannot take) print one line and exit 2.
The last line of stdout is one JSON object (``store`` holds the store part).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DETECTORS = (100, 143, 217, 353)          # cmbNNCS's inputs (TrainConfig's default detectors)


def measure(name, nside, batch, shape, steps, device):
    import torch

    from cmbcube import networks
    torch.manual_seed(0)
    net = networks.build(name, 4, 1, nside).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(batch, 4, *shape, device=device)
    y = torch.randn(batch, 1, *shape, device=device)
    for _ in range(3):                                      # warm-up (cuDNN autotune, allocator)
        opt.zero_grad()
        torch.nn.functional.l1_loss(net(x), y).backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.l1_loss(net(x), y).backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda" else float("nan")
    return {"model": name, "nside": nside, "batch": batch, "samples_per_s": steps * batch / seconds,
            "peak_gpu_gb": round(peak, 2)}


# ----------------------------------------------------------------------------- the store part

def model_for(nside: int, where: str) -> str:
    """cmbNNCS UNet5 below nside 256, UNet8 from 256 (InputError naming ``where`` for an nside neither takes)."""
    from cmbcube import networks
    from cmbcube.errors import InputError
    name = "cmbnncs-unet5" if nside < 256 else "cmbnncs-unet8"
    if nside < 32 or nside & (nside - 1) or nside % networks.min_nside(name):
        raise InputError(f"{where}: nside {nside}; the cmbNNCS UNets need a power of two >= 32 "
                         f"(allowed: 32, 64, 128, 256, 512, ...)")
    return name


def check_store(path: str) -> int:
    """The nside of the cmbcube store at ``path``; InputError naming --store otherwise."""
    from cmbcube import cube
    from cmbcube.errors import InputError
    if not cube.is_remote(path) and os.path.exists(path) and not os.path.isdir(path):
        raise InputError(f"--store {path}: a file, not a cmbcube store (a store is the directory `cmbcube "
                         "simulate` made; or use --make-store DIR to simulate one)")
    if not cube.is_remote(path) and not os.path.isdir(path):
        raise InputError(f"--store {path}: no such store (give a directory that `cmbcube simulate` made, "
                         "or use --make-store DIR to simulate one)")
    try:
        attrs = cube.read_attrs(path)
    except InputError as err:
        raise InputError(f"--store {path}: not a cmbcube store ({err})") from None
    if "recipe_hash" not in attrs or "nside" not in attrs:
        raise InputError(f"--store {path}: a Zarr store but not a cmbcube store (no recipe_hash/nside attributes)")
    return int(attrs["nside"])


def make_store(path: str, nside: int, sims: int, workers: int) -> float:
    """Simulate (or reuse) ``sims`` train skies at ``nside`` in ``path``, then preprocess; seconds taken."""
    from cmbcube import recipe
    from cmbcube.errors import InputError
    from cmbcube.stages import preprocess, simulate
    model_for(nside, f"--store-nside {nside}")                  # refuse an unusable nside before simulating
    r = recipe.validate({"name": f"gpu-models-{nside}", "nside": nside, "seed": 0, "fields": ["I"],
                         "detectors": list(DETECTORS), "keep": ["cmb"],
                         "splits": {"train": sims, "valid": 0, "test": 0}})
    scheduler = "synchronous" if workers <= 1 else None         # 1: in this process, no Dask cluster
    t0 = time.perf_counter()
    try:
        report = simulate.run(r, path, scheduler=scheduler, workers=None if workers <= 1 else workers,
                              progress=False)
    except InputError as err:                                   # e.g. DIR holds another store
        raise InputError(f"--make-store {path}: {err}") from None
    if not report.ok:
        raise RuntimeError(f"simulation failed: {report.failed[:3]}")
    preprocess.run(path, scheduler="synchronous")
    return time.perf_counter() - t0


def training_dataset(store: str, model: str):
    """The training set ``cmbcube train --model MODEL`` reads (its defaults: 100-353 GHz, I, faces, target cmb)."""
    from cmbcube.stages import train
    config = train.TrainConfig(**{**train.defaults(model), "model": model})
    if tuple(config.detectors) != DETECTORS or tuple(config.fields) != ("I",):
        raise RuntimeError(f"{model}'s default inputs changed ({config.detectors}, {config.fields}); update DETECTORS")
    return train.datasets_for(store, config, "train")


def sample_order(n_sims: int, per_pass: int, seed: int = 0) -> list:
    """Dataset indices of one pass: random permutations of the sims, concatenated, cut at ``per_pass``."""
    import numpy as np
    rng = np.random.default_rng(seed)
    order = []
    while len(order) < per_pass:
        order.extend(int(i) for i in rng.permutation(n_sims))
    return order[:per_pass]


def timed(run_pass, passes: int, min_seconds: float) -> dict:
    """One untimed pass, then timed ones until ``passes`` of them and ``min_seconds`` are done;
    run_pass() -> (samples, bytes)."""
    t0 = time.perf_counter()
    n0, _ = run_pass()
    first = time.perf_counter() - t0
    samples = nbytes = done = 0
    t0 = time.perf_counter()
    while done < passes or time.perf_counter() - t0 < min_seconds:
        n, b = run_pass()
        samples, nbytes, done = samples + n, nbytes + b, done + 1
    seconds = time.perf_counter() - t0
    return {"passes": done, "samples": samples, "bytes": nbytes, "seconds": seconds,
            "samples_per_s": samples / seconds, "bytes_per_s": nbytes / seconds, "first_pass_samples_per_s": n0 / first}


def time_loader(ds, order: list, batch: int, workers: int, passes: int, min_seconds: float) -> dict:
    import torch

    from cmbcube.cube.datasets import worker_init_fn
    extra = {"persistent_workers": True} if workers > 0 else {}
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, sampler=order, num_workers=workers,
                                         worker_init_fn=worker_init_fn, **extra)

    def run_pass():
        n = nbytes = 0
        for item in loader:
            x, y = item["inputs"], item["target"]
            n += x.shape[0]
            nbytes += x.numel() * x.element_size() + y.numel() * y.element_size()
        return n, nbytes
    return {**timed(run_pass, passes, min_seconds), "num_workers": workers}   # workers end with the loader


def time_loader_or_fallback(ds, order: list, batch: int, workers: int, passes: int, min_seconds: float) -> dict:
    """time_loader; if worker processes fail (e.g. a /dev/shm too small for the batches), say why on stderr
    and time it with num_workers 0 instead (``error_with_workers`` in the result)."""
    try:
        return time_loader(ds, order, batch, workers, passes, min_seconds)
    except RuntimeError as err:
        if workers == 0:
            raise
        print(f"gpu_models.py: the loader with {workers} workers failed ({err}); timing it with 0 workers",
              file=sys.stderr)
        return {**time_loader(ds, order, batch, 0, passes, min_seconds), "error_with_workers": str(err)}


def time_copy(ds, order: list, batch: int, device, repeats: int) -> float:
    """Samples/s of the host-to-device copy the trainer does before every step (pageable memory)."""
    import torch
    items = [ds[i] for i in order[:batch]]
    x = torch.stack([it["inputs"] for it in items])
    y = torch.stack([it["target"] for it in items])
    x.to(device), y.to(device)                              # warm-up
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        x.to(device), y.to(device)
    torch.cuda.synchronize()
    return repeats * len(items) / (time.perf_counter() - t0)


class RawReader:
    """Reads the dataset's maps of one sim straight from the store's zarr arrays (no torch); picklable."""

    def __init__(self, ds):
        import numpy as np
        self.store, self.isplit = ds.store, ds.isplit
        self.det, self.fld = np.array(ds.det_index), np.array(ds.field_index)
        self.tfld = np.array(ds.target_field_index)
        self.group = None

    def __getstate__(self):
        return {**self.__dict__, "group": None}

    def __call__(self, sim: int) -> int:
        if self.group is None:
            from cmbcube import cube
            self.group = cube.read_group(self.store)
        d0, d1, f0, f1 = self.det.min(), self.det.max() + 1, self.fld.min(), self.fld.max() + 1
        x = self.group["obs"][self.isplit, sim, d0:d1, f0:f1][self.det - d0, self.fld - f0]
        t0, t1 = self.tfld.min(), self.tfld.max() + 1
        y = self.group["cmb"][self.isplit, sim, t0:t1][self.tfld - t0]
        return x.nbytes + y.nbytes


def time_raw_read(ds, order: list, workers: int, passes: int, min_seconds: float) -> dict:
    import concurrent.futures
    import multiprocessing
    reader = RawReader(ds)
    sims = [ds.sims[i] for i in order]
    if workers == 0:
        return timed(lambda: (len(sims), sum(reader(s) for s in sims)), passes, min_seconds)
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        chunk = max(1, len(sims) // (4 * workers))
        return timed(lambda: (len(sims), sum(pool.map(reader, sims, chunksize=chunk))), passes, min_seconds)


def verdict(loader_sps: float, device_sps: float, copy_sps: float | None = None) -> dict:
    """Which side limits training.  The device side is its training rate, with the host-to-device copy
    added to each step's time when measured (the trainer copies before the step, not beside it)."""
    side = 1 / (1 / device_sps + 1 / copy_sps) if copy_sps else device_sps
    what = "the device (training + copy to it)" if copy_sps else "the device"
    ratio = loader_sps / side
    if ratio < 1:
        text = (f"the loader limits training: it delivers {loader_sps:.1f} samples/s, {what} takes {side:.1f} "
                f"(loader / device = {ratio:.2f}; the device idles {1 - ratio:.0%} of the time)")
    else:
        text = (f"the device limits training: {what} takes {side:.1f} samples/s, the loader delivers "
                f"{loader_sps:.1f} (loader / device = {ratio:.2f})")
    return {"limit": "loader" if ratio < 1 else "device", "ratio_loader_to_device": ratio,
            "device_side_samples_per_s": side, "copy_included": bool(copy_sps), "text": text}


def store_part(args, store: str, made_s: float | None, device, synthetic: list) -> dict:
    from cmbcube.errors import InputError
    nside = check_store(store)
    model = model_for(nside, f"--store {store}")
    try:
        ds = training_dataset(store, model)
    except InputError as err:
        raise InputError(f"--store {store}: {err}") from None
    npix = 12 * nside ** 2
    workers = args.num_workers
    per_pass = 2 * args.batch * max(1, workers)            # every worker makes 2 batches a pass
    order = sample_order(len(ds), per_pass)
    loader = time_loader_or_fallback(ds, order, args.batch, workers, args.passes, args.min_seconds)
    raw = time_raw_read(ds, order, workers, args.passes, args.min_seconds)
    same = [r for r in synthetic if (r["model"], r["nside"], r["batch"]) == (model, nside, args.batch)]
    dev = same[0] if same else measure(model, nside, args.batch, (4 * nside, 3 * nside), args.steps, device)
    copy = time_copy(ds, order, args.batch, device, args.steps) if device.type == "cuda" else None
    return {"path": store, "made_in_s": made_s, "nside": nside, "npix": npix, "train_sims": len(ds.sims),
            "model": model, "batch": args.batch, "num_workers": workers,
            "samples_per_pass": per_pass, "input_channels": len(ds.channels),
            "target_channels": len(ds.target_fields), "dtype": "float32",
            "sample_bytes": (len(ds.channels) + len(ds.target_fields)) * npix * 4,
            "loader": loader, "raw_read": raw, "device": dev, "copy_to_device_samples_per_s": copy,
            "verdict": verdict(loader["samples_per_s"], dev["samples_per_s"], copy)}


def print_store(s: dict, label: str) -> None:
    gb = 1e9
    print(f"store {s['path']}: nside {s['nside']}, {s['train_sims']} train sims"
          + (f" (simulated and preprocessed in {s['made_in_s']:.0f} s)" if s["made_in_s"] is not None else "")
          + f"; {s['model']}, batch {s['batch']}; a sample = {s['input_channels']} input + {s['target_channels']} "
          f"target maps x {s['npix']} px float32 = {s['sample_bytes'] / 2 ** 20:.1f} MiB; "
          f"passes of {s['samples_per_pass']} samples, one untimed, then timed")
    w = s["loader"]["num_workers"]
    for key, what in (("loader", f"DataLoader(CubeDataset faces), {w} workers"),
                      ("raw_read", f"zarr read, no torch, {max(w, 1)} process(es)")):
        r = s[key]
        print(f"  {key:8s} {r['samples_per_s']:9.1f} samples/s {r['bytes_per_s'] / gb:8.3f} GB/s   "
              f"({r['passes']} passes in {r['seconds']:.1f} s; untimed first {r['first_pass_samples_per_s']:.1f} "
              f"samples/s)  {what}")
    print(f"  device   {s['device']['samples_per_s']:9.1f} samples/s                {s['model']} training on {label}")
    if s["copy_to_device_samples_per_s"]:
        print(f"  copy     {s['copy_to_device_samples_per_s']:9.1f} samples/s                batch host -> {label} "
              "(pageable, as the trainer's .to(device))")
    print(f"verdict: {s['verdict']['text']}")


def main(argv=None) -> int:
    from cmbcube.errors import InputError
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per network (default 20)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--store", help="an existing cmbcube store: time its loader against the device")
    where.add_argument("--make-store", metavar="DIR", help="simulate a store in DIR first (reused if already there)")
    parser.add_argument("--store-nside", type=int, default=None, help="--make-store: nside (default 512)")
    parser.add_argument("--sims", type=int, default=None, help="--make-store: train skies (default 8)")
    parser.add_argument("--sim-workers", type=int, default=None,
                        help="--make-store: Dask workers (default min(sims, CPUs); 1: in this process)")
    parser.add_argument("--num-workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="DataLoader workers (default min(8, CPUs))")
    parser.add_argument("--batch", type=int, default=12, help="batch of the store part (default 12, cmbNNCS's)")
    parser.add_argument("--passes", type=int, default=2, help="timed passes of loader and raw read (default 2)")
    parser.add_argument("--min-seconds", type=float, default=2.0,
                        help="time loader and raw read for at least this long (more passes; default 2)")
    parser.add_argument("--no-synthetic", action="store_true", help="skip the synthetic part")
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None,
                        help="where the networks train (default: cuda when torch sees one, else cpu)")
    args = parser.parse_args(argv)
    try:
        given = [f"--{name.replace('_', '-')}" for name in ("store_nside", "sims", "sim_workers")
                 if getattr(args, name) is not None]
        if given and not args.make_store:
            raise InputError(f"{', '.join(given)}: only with --make-store DIR (they say what to simulate)")
        args.store_nside = 512 if args.store_nside is None else args.store_nside
        args.sims = 8 if args.sims is None else args.sims
        for name in ("steps", "sims", "batch", "passes"):
            if getattr(args, name) < 1:
                raise InputError(f"--{name} {getattr(args, name)}: allowed: an integer >= 1")
        if not args.min_seconds >= 0:
            raise InputError(f"--min-seconds {args.min_seconds}: allowed: a number >= 0")
        if args.num_workers < 0:
            raise InputError(f"--num-workers {args.num_workers}: allowed: an integer >= 0")
        if args.sim_workers is not None and args.sim_workers < 1:
            raise InputError(f"--sim-workers {args.sim_workers}: allowed: an integer >= 1")
        if args.sim_workers is None:
            args.sim_workers = min(args.sims, os.cpu_count() or 1)
        if args.make_store:
            model_for(args.store_nside, f"--store-nside {args.store_nside}")
        elif args.store:
            model_for(check_store(args.store), f"--store {args.store}")
        return run(args)
    except InputError as err:
        print(f"gpu_models.py: error: {err}", file=sys.stderr)
        return 2


def run(args) -> int:
    import torch

    from cmbcube.errors import InputError
    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device cuda: torch {torch.__version__} sees no CUDA device here; allowed: cpu")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.backends.cudnn.benchmark = True
    label = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    made_s = None                         # the store first: a simulation that fails costs no device time
    if args.make_store:
        made_s = make_store(args.make_store, args.store_nside, args.sims, args.sim_workers)
    configs = [("cmbnncs-unet5", 128, 12, (512, 384)), ("cmbnncs-unet8", 512, 12, (2048, 1536)),
               ("patch-unet", 512, 16, (128, 128))]
    if device.type == "cpu":
        configs = [("cmbnncs-unet5", 32, 12, (128, 96)), ("patch-unet", 32, 16, (8, 8))]
    rows = [] if args.no_synthetic else [measure(*c, steps=args.steps, device=device) for c in configs]
    path = args.make_store or args.store
    store = store_part(args, path, made_s, device, rows) if path else None
    print(f"device: {label}, torch {torch.__version__}, {os.cpu_count()} CPUs")
    for r in rows:
        per_sky = 192 if r["model"] == "patch-unet" and r["nside"] == 512 else 1
        epoch = 1000 * per_sky / r["samples_per_s"]
        r["cmbml_epoch_s"] = round(epoch, 1)
        print(f"  {r['model']:15s} nside {r['nside']:4d} batch {r['batch']:3d}: {r['samples_per_s']:8.1f} samples/s, "
              f"CMB-ML epoch (1000 skies) {epoch:8.1f} s, peak GPU memory {r['peak_gpu_gb']} GB")
    out = {"device": label, "results": rows}
    if store is not None:
        print_store(store, label)
        out["store"] = store
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
