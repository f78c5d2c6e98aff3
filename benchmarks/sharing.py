"""Benchmark: one simulate run and one CubeDataset epoch on a plain local Zarr store, a local Icechunk
repository and an Icechunk repository on an S3 API server (moto's server mode on 127.0.0.1, in this
process), side by side on the same machine and the same recipe.

Run from the repository root::

    python benchmarks/sharing.py                    # nside 64, 4 train sims (about 2 minutes on 2 cores)
    python benchmarks/sharing.py --nside 128 --sims 8 --out benchmarks/results/sharing_<date>.txt

Figures: simulate wall time (the whole stage: create, sims, commits) and the summed time the tasks spent
writing (``write``), then a DataLoader epoch over the train split (obs of every detector, field I, and
the CMB target; batch 4, num_workers 0), and each backend's ratio to plain Zarr.  moto is a Python
server sharing this process's cores: its figures are a lower bound on what a real object store gives.
"""
from __future__ import annotations

import argparse
import datetime
import logging
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common


def recipe(nside: int, sims: int):
    from cmbcube import recipe as recipe_mod
    return recipe_mod.validate({"name": "sharing-bench", "seed": 3, "nside": nside,
                                "splits": {"train": sims, "valid": 0, "test": 0}, "keep": ["cmb"],
                                "cmb": {"prior": "fixed"}, "cluster": {"kind": "synchronous"}})


def moto():
    from moto.server import ThreadedMotoServer
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench-secret",
                      AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_REGION="us-east-1")
    import boto3
    boto3.client("s3").create_bucket(Bucket="bench-cubes")
    return server


def epoch(store: str) -> tuple[float, int]:
    from cmbcube.cube.datasets import CubeDataset, make_loader
    ds = CubeDataset(store, "train", fields=["I"], view="sky")
    t0 = time.perf_counter()
    n = 0
    for batch in make_loader(ds, batch_size=4, shuffle=False, num_workers=0):
        first = next(iter(batch.values())) if isinstance(batch, dict) else batch[0]
        n += int(first.shape[0])
    return time.perf_counter() - t0, n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nside", type=int, default=64)
    parser.add_argument("--sims", type=int, default=4)
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args()
    from cmbcube.stages import simspec, simulate
    rec = recipe(args.nside, args.sims)
    simspec.lensing_correction(rec)                  # computed (or cached) once, outside the timings
    server = moto()
    tmp = tempfile.mkdtemp(prefix="cmbcube-sharing-")
    backends = [("local Zarr", os.path.join(tmp, "cube.zarr")),
                ("local Icechunk", f"icechunk+file://{tmp}/cube.icechunk"),
                ("Icechunk on moto S3", "icechunk+s3://bench-cubes/cube")]
    warm = os.path.join(tmp, "warm-up.zarr")         # imports, the simulator's set-up, torch: not timed
    simulate.run(recipe(args.nside, 1), warm, progress=False)
    epoch(warm)
    rows = []
    for name, store in backends:
        t0 = time.perf_counter()
        rep = simulate.run(rec, store, progress=False)
        wall = time.perf_counter() - t0
        assert rep.ok and len(rep.written) == args.sims, rep.failed
        seconds, n = epoch(store)
        rows.append((name, wall, rep.timings.get("write", 0.0), seconds, n))
        common.log(f"{name}: simulate {wall:.2f} s (write {rows[-1][2]:.2f} s), epoch {seconds:.2f} s ({n} samples)")
    server.stop()
    base = rows[0]
    lines = [f"# benchmarks/sharing.py, {datetime.date.today()}: nside {args.nside}, {args.sims} train sims "
             "(keep cmb, fixed cosmology, synchronous; after a warm-up run), epoch = CubeDataset train, field I, "
             f"batch 4, num_workers 0; load average {common.load_average()}; {os.cpu_count()} CPUs",
             f"{'backend':22s} {'simulate s':>10s} {'x Zarr':>7s} {'write s':>8s} {'x Zarr':>7s} "
             f"{'epoch s':>8s} {'x Zarr':>7s} {'MB/s read':>9s}"]
    npix = 12 * args.nside ** 2
    for name, wall, write, seconds, n in rows:
        mb = n * (9 + 1) * npix * 4 / 1e6            # 9 obs maps (I) + 1 CMB map per sample, float32
        lines.append(f"{name:22s} {wall:10.2f} {wall / base[1]:7.2f} {write:8.2f} {write / max(base[2], 1e-9):7.2f} "
                     f"{seconds:8.2f} {seconds / base[3]:7.2f} {mb / seconds:9.1f}")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
