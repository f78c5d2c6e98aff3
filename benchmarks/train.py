"""Training benchmark: throughput of the networks, and a small end-to-end experiment.

Run from the repository root::

    python benchmarks/train.py --quick          # nside 32 only, few sims, 1 epoch (< 3 min on 2 cores)
    python benchmarks/train.py                  # nside 32 and 64 on CPU (+ 128/512 on a GPU, if any)
    python benchmarks/train.py --experiment     # the above, then the end-to-end experiment (~45 min with petroff)
    python benchmarks/train.py --experiment-only   # the experiment alone (no throughput part)

Every figure comes from one run of this script, on one machine; the load
average is printed at the start and at the end of each part (the machine may be
shared, and throughput on 2 cores follows the load).

Data
----
CPU stores are real simulations: ``cmbcube.stages.simulate.run`` of a recipe built
with ``cmbcube.recipe.validate`` (all 9 Planck-like detectors, field I, keep
[cmb], every synthetic foreground), 2 Dask workers, then
``cmbcube.stages.preprocess.run`` (the statistics patch-unet's ``standardize``
transforms need).  Simulation wall seconds per sim and worker seconds per sim
(the sum of the per-sim timings the stage reports / sims) are printed.
GPU stores (nside 128 and 512, only when ``torch.cuda.is_available()``) are
filled with random maps of the right shapes through ``cmbcube.cube.write_sim``
instead (as benchmarks/loader.py does): simulating at nside 512 takes minutes
per sim and the values do not change the arithmetic of a training step.

Throughput
----------
``samples_per_s`` is ``TrainReport.samples_per_s`` of ``cmbcube.stages.train.run``
on a fresh run: training samples seen / wall seconds of the whole epoch loop,
so it includes what a user waits for each epoch besides the optimiser steps:
the validation pass over the valid split, the checkpoint and the loss PNG.
Every batch is stepped ``repeats`` times (cmbNNCS: 3; patch-unet: 1), with the
published defaults of each model (``cmbcube.stages.train.defaults``).  A sample is
one sim for cmbnncs-unet5 (a 4 x (4 nside x 3 nside) face plane of 100, 143,
217, 353 GHz) and for petroff (four whole NESTED maps, batch 1, one
optimiser step per sample; its input scaling reads the train sims once before
the epoch loop, outside the timed figure), one patch for patch-unet (nside/4
square, 192 per sim);
``sims_per_s`` divides by the patches per sim so the two can be compared.
Configurations use ``train_sims`` to keep the epochs short; each runs 2
epochs (1 with --quick), so the first epoch's warm-up is in the figure.
Threads: torch's default (one per core) unless --threads; without --quick the
quickstart configuration is also run on 1 thread (``.../cpu-1thread``):
on 2 cores shared with other busy processes, torch's 2 OpenMP threads were
measured ~10x slower per step than 1 thread (3.5 s vs 0.34 s per
cmbnncs-unet5 step at nside 32, batch 12), while on an idle machine 2
threads take ~0.11 s.

``epoch_s_quickstart``: seconds per epoch (wall, same loop) of the quickstart
configuration: nside 32, 16 train and 4 valid sims, cmbnncs-unet5, batch 12,
repeats 3, on CPU.

Experiment (--experiment, never with --quick)
---------------------------------------------
At nside 32: simulate train/valid/test sims (default 200/20/20), train
cmbnncs-unet5 with its defaults for a number of epochs chosen to fit
``--exp-train-budget-s`` (from one calibration epoch on the same store, run
just before, so at the current load; or fixed with --exp-epochs), predict the test split, run NILC on the test split
(``ilc.run(store, ILCConfig(method="nilc"), splits=("test",))``: CMB-ML's
detectors 44-857 GHz, common beam 20.6'), then ``analyze.run(store)``
(f_sky 0.8 foreground mask, monopole and dipole removed, common beams).
Reported: the mean over test sims of the test MAE (uK, field I) at beams 0
(no beam) and 20.6' for the UNet and for NILC, read from the cube's
``metrics``, and for the best single channel, computed here the same way per
test sim: each detector's observed I map brought from its beam to the common
beam with ``metrics.to_beam``, minus the truth at the same beam, monopole and
dipole of each removed on the analysis mask, MAE on the unmasked pixels; the
best channel is the one with the lowest mean MAE at that beam.  The same
recipe is applied to the NILC maps as a cross-check against the cube's values.

Petroff's network is trained on the same store after the UNet (its defaults:
inputs over max |obs - noise| of the train sims, so the experiment store keeps
the noise maps; target to [0, 1]; heteroscedastic loss; batch 1; Adam amsgrad;
gradient norm clipped at 10),
for epochs chosen the same way from ``--exp-petroff-budget-s`` (or fixed with
--exp-petroff-epochs), then predicted with ``--exp-mc-samples`` Monte Carlo
passes (default 100, as published).  Reported beside the UNet and NILC: its
test MAE, and its calibration from the cube's ``cover_ksigma`` metrics (fraction
of unmasked pixels with |pred - truth| <= k sigma; Petroff et al. reported
75/96/99% for k = 1/2/3, a Gaussian gives 68/95/99.7%), the median predicted
sigma, and Petroff et al.'s own MAE variant over pixels with sigma <= 50 uK.

The last line of stdout is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
import types
from pathlib import Path

import numpy as np
from common import load_average, log

ALL_DETECTORS = [30, 44, 70, 100, 143, 217, 353, 545, 857]
MODELS = ("cmbnncs-unet5", "patch-unet", "petroff")
REPORT_BEAMS = (0.0, 20.6)


# ----------------------------------------------------------------------------- stores
def simulate_store(path: str, nside: int, splits: dict, seed: int, name: str, keep=("cmb",)) -> dict:
    """A real simulated store (all 9 detectors, field I, keep cmb by default) and its statistics."""
    from cmbcube import recipe
    from cmbcube.stages import preprocess, simulate
    r = recipe.validate({"name": name, "nside": nside, "splits": splits, "detectors": ALL_DETECTORS,
                         "fields": ["I"], "keep": list(keep), "seed": seed})
    t0 = time.perf_counter()
    report = simulate.run(r, path, workers=2, progress=False)
    wall = time.perf_counter() - t0
    if not report.ok:
        raise RuntimeError(f"simulation failed: {report.failed[:3]}")
    n = len(report.written)
    t0 = time.perf_counter()
    preprocess.run(path, scheduler="synchronous")
    pre = time.perf_counter() - t0
    info = {"nside": nside, "sims": n, "wall_s": round(wall, 1), "wall_s_per_sim": round(wall / n, 2),
            "worker_s_per_sim": round(sum(report.timings.values()) / n, 2), "preprocess_s": round(pre, 1)}
    log(f"  simulated {n} sims at nside {nside} in {wall:.1f} s ({wall / n:.2f} s/sim wall with 2 workers, "
        f"{info['worker_s_per_sim']:.2f} worker-s/sim; first sim per worker includes numba compilation); "
        f"statistics {pre:.1f} s; load {load_average()}")
    return info


def synthetic_store(path: str, nside: int, splits: dict) -> dict:
    """A store of random maps with the shapes of a real one (GPU sizes, where simulating is too slow)."""
    from cmbcube import cube, recipe
    from cmbcube.recipe import SPLITS
    from cmbcube.science import cosmology
    from cmbcube.stages import preprocess
    r = recipe.validate({"name": f"train-bench-synthetic-{nside}", "nside": nside, "splits": splits,
                         "detectors": ALL_DETECTORS, "fields": ["I"], "keep": ["cmb"]})
    cube.create_or_check(path, r)
    npix, nell = 12 * nside * nside, 3 * r["sky_nside"]
    t0 = time.perf_counter()
    for split, count in r.splits.items():
        for sim in range(count):
            rng = np.random.default_rng([nside, SPLITS.index(split), sim])
            obs = rng.standard_normal((len(ALL_DETECTORS), 1, npix), dtype=np.float32)
            obs *= rng.uniform(5.0, 200.0, size=(len(ALL_DETECTORS), 1, 1)).astype(np.float32)
            result = types.SimpleNamespace(
                obs=obs, cmb=rng.standard_normal((1, npix), dtype=np.float32) * 70.0,
                params=np.array([67.0, 0.0224, 0.12, 0.965, 2.1e-9, 0.054])[: len(cosmology.PARAMS)],
                cls=np.abs(rng.standard_normal((4, nell))), components=None, noise=None, timings={})
            cube.write_sim(path, split, sim, result)
    cube.consolidate(path)
    preprocess.run(path, scheduler="synchronous")
    log(f"  synthetic store at nside {nside}: {sum(r.splits.values())} sims in {time.perf_counter() - t0:.1f} s")
    return {"nside": nside, "sims": sum(r.splits.values()), "synthetic": True}


# ----------------------------------------------------------------------------- throughput
def patches_per_sim(model: str, nside: int) -> int:
    from cmbcube import networks
    if model != "patch-unet":
        return 1
    side = networks.default_patch_side(nside)
    return 12 * nside * nside // side ** 2


def measure(store: str, model: str, epochs: int, train_sims: int | None, device: str, run: str) -> dict:
    """One fresh training run through cmbcube.stages.train.run; its TrainReport figures."""
    from cmbcube import cube
    from cmbcube.stages import train
    config = train.TrainConfig(**{**train.defaults(model, published=True), "model": model, "epochs": epochs,
                                  "train_sims": train_sims})
    t0 = time.perf_counter()
    report = train.run(store, config, run_name=run, device=device, progress=False)
    total = time.perf_counter() - t0
    nside = int(cube.read_attrs(store)["nside"])
    per_sim = patches_per_sim(model, nside)
    out = {
        "model": model, "nside": nside, "device": device, "epochs": report.epochs_done,
        "train_sims": train_sims, "batch_size": config.batch_size, "repeats": config.repeats,
        "samples_per_s": report.samples_per_s, "sims_per_s": report.samples_per_s / per_sim,
        "patches_per_sim": per_sim, "epoch_s": report.seconds / max(report.epochs_done, 1),
        "loop_s": report.seconds, "call_s": total, "train_loss": report.train_loss,
        "valid_loss": report.valid_loss, "load": load_average(),
    }
    log(f"  {model:14s} nside {nside:4d} {device:4s}: {out['samples_per_s']:9.2f} samples/s "
        f"({out['sims_per_s']:7.3f} sims/s), {out['epoch_s']:7.1f} s/epoch over {report.epochs_done} epoch(s) "
        f"of {train_sims or 'all'} train sims; load {out['load']}")
    return out


def cuda_available() -> bool:
    import torch
    return bool(torch.cuda.is_available())


def gpu_throughput(work: Path, epochs: int, include_512: bool) -> dict:
    """nside 128 (and 512) on the GPU, synthetic stores; OOM is recorded, not raised."""
    import torch
    results = {}
    sizes = [(128, {"train": 16, "valid": 2, "test": 0}, {"cmbnncs-unet5": 16, "patch-unet": 8, "petroff": 16})]
    if include_512:
        sizes.append((512, {"train": 4, "valid": 1, "test": 0}, {"cmbnncs-unet5": 4, "patch-unet": 2, "petroff": 4}))
    log(f"GPU: {torch.cuda.get_device_name(0)}")
    for nside, splits, train_sims in sizes:
        store = str(work / f"gpu{nside}.zarr")
        try:
            synthetic_store(store, nside, splits)
        except MemoryError as err:
            log(f"  nside {nside}: store does not fit in host memory ({err})")
            continue
        for model in MODELS:
            key = f"{model}/nside{nside}/cuda"
            try:
                results[key] = measure(store, model, epochs, train_sims[model], "cuda", f"gpu-{model}")
            except torch.cuda.OutOfMemoryError as err:
                results[key] = {"model": model, "nside": nside, "device": "cuda", "error": f"out of memory: {err}"}
                log(f"  {model} nside {nside}: out of GPU memory")
            finally:
                torch.cuda.empty_cache()
        shutil.rmtree(store, ignore_errors=True)
        shutil.rmtree(store + ".runs", ignore_errors=True)
    return results


# ----------------------------------------------------------------------------- experiment
def single_channel_mae(store: str) -> dict:
    """{beam: {detector: [MAE per test sim]}} of each observed I map against the truth (see the docstring)."""
    import zarr

    import cmbcube
    from cmbcube import cube
    from cmbcube.science import metrics as sm
    group = zarr.open_group(store, mode="r")
    nside = int(group.attrs["nside"])
    fields = [str(f) for f in group["field"][...]]
    fi = fields.index("I")
    dets = [int(d) for d in group["detector"][...]]
    units = [str(u) for u in group["unit"][...]]
    beams = list(cube.detector_beams(group).values())
    truth_scale = 1e6 if str(group.attrs["cmb_unit"]) == "K_CMB" else 1.0
    beam_truth = cube.truth_beam(group)
    mask = np.asarray(cmbcube.open(store).mask.values) > 0
    isplit = 2
    sims = np.nonzero(np.asarray(group["sim_done"][isplit]) == 1)[0]
    usable = [k for k, u in enumerate(units) if u in ("uK_CMB", "K_CMB")]
    out = {b: {dets[k]: [] for k in usable} for b in REPORT_BEAMS}
    for sim in sims:
        truth = np.asarray(group["cmb"][isplit, sim, fi], dtype=np.float64)[None] * truth_scale
        obs = np.asarray(group["obs"][isplit, sim, :, fi], dtype=np.float64)
        for beam in REPORT_BEAMS:
            t = sm.remove_monopole_dipole(sm.to_beam(truth, ["I"], beam_truth, beam, nside)[0], mask)
            for k in usable:
                scale = 1e6 if units[k] == "K_CMB" else 1.0
                o = sm.to_beam(obs[k][None] * scale, ["I"], beams[k], beam, nside)[0]
                o = sm.remove_monopole_dipole(o, mask)
                out[beam][dets[k]].append(sm.pixel_metrics(t[mask], o[mask])["mae"])
    return out


def recomputed_pred_mae(store: str, run: str) -> dict:
    """The single-channel recipe applied to a run's prediction (cross-check with the cube's metrics)."""
    import zarr

    import cmbcube
    from cmbcube import cube
    from cmbcube.science import metrics as sm
    group = zarr.open_group(store, mode="r")
    nside = int(group.attrs["nside"])
    fi = [str(f) for f in group["field"][...]].index("I")
    irun = [str(r) for r in group["run"][...]].index(run)
    beam_pred = cube.run_beam(group, irun)
    beam_truth = cube.truth_beam(group)
    mask = np.asarray(cmbcube.open(store).mask.values) > 0
    sims = np.nonzero(np.asarray(group["pred_done"][irun, 2]) == 1)[0]
    out = {b: [] for b in REPORT_BEAMS}
    for sim in sims:
        truth = np.asarray(group["cmb"][2, sim, fi], dtype=np.float64)[None]
        pred = np.asarray(group["pred"][irun, 2, sim, fi], dtype=np.float64)[None]
        for beam in REPORT_BEAMS:
            t = sm.remove_monopole_dipole(sm.to_beam(truth, ["I"], beam_truth, beam, nside)[0], mask)
            p = sm.remove_monopole_dipole(sm.to_beam(pred, ["I"], beam_pred, beam, nside)[0], mask)
            out[beam].append(sm.pixel_metrics(t[mask], p[mask])["mae"])
    return {b: float(np.mean(v)) for b, v in out.items()}


def cube_mae(store: str, run: str) -> dict:
    """{beam: (mean, standard error, n)} of the cube's test MAE (field I) for a run."""
    import zarr

    from cmbcube.science import metrics as sm
    group = zarr.open_group(store, mode="r")
    irun = [str(r) for r in group["run"][...]].index(run)
    fi = [str(f) for f in group["field"][...]].index("I")
    mi = sm.METRICS.index("mae")
    done = np.asarray(group["analysis_done"][irun, 2]) == 1
    values = np.asarray(group["metrics"][irun, 2])[done]          # (sim, beam, field, metric)
    out = {}
    for beam in REPORT_BEAMS:
        v = values[:, list(sm.BEAMS).index(beam), fi, mi]
        out[beam] = (float(np.mean(v)), float(np.std(v, ddof=1) / np.sqrt(v.size)) if v.size > 1 else float("nan"),
                     int(v.size))
    return out


def petroff_calibration(store: str, run: str) -> dict:
    """Coverage (mean, s.e. over test sims) from the cube's metrics, and sigma figures from pred_sigma."""
    import zarr

    from cmbcube.science import metrics as sm
    group = zarr.open_group(store, mode="r")
    irun = [str(r) for r in group["run"][...]].index(run)
    fi = [str(f) for f in group["field"][...]].index("I")
    done = np.asarray(group["analysis_done"][irun, 2]) == 1
    values = np.asarray(group["metrics"][irun, 2])[done][:, 0, fi]                 # (sim, metric), beam 0
    out = {}
    for name in sm.COVERAGE:
        v = values[:, sm.METRICS.index(name)]
        out[name] = (float(np.mean(v)), float(np.std(v, ddof=1) / np.sqrt(v.size)) if v.size > 1 else float("nan"))
    sims = np.nonzero(done)[0]
    sig = np.stack([np.asarray(group["pred_sigma"][irun, 2, s, fi], dtype=np.float64) for s in sims])
    pred = np.stack([np.asarray(group["pred"][irun, 2, s, fi], dtype=np.float64) for s in sims])
    truth = np.stack([np.asarray(group["cmb"][2, s, fi], dtype=np.float64) for s in sims])
    keep = sig <= 50.0
    out["median_sigma"] = float(np.median(sig))
    out["mae_sigma50"] = float(np.mean(np.abs(pred - truth)[keep])) if keep.any() else float("nan")
    out["frac_sigma50"] = float(keep.mean())
    return out


def experiment(work: Path, args, epoch_s_quickstart: float) -> dict:
    import torch

    from cmbcube.stages import analyze, ilc, predict, train
    if args.exp_threads:
        torch.set_num_threads(args.exp_threads)
    store = str(work / "experiment.zarr")
    splits = {"train": args.exp_train, "valid": args.exp_valid, "test": args.exp_test}
    log(f"\nexperiment: nside 32, splits {splits}, {torch.get_num_threads()} torch thread(s); load {load_average()}")
    t_all = time.perf_counter()
    sim_info = simulate_store(store, 32, splits, seed=31415, name="train-bench-experiment", keep=("cmb", "noise"))

    if args.exp_epochs:
        epochs, how = args.exp_epochs, "fixed by --exp-epochs"
    else:
        # one calibration epoch on this very store, at the current load (first-epoch warm-up included,
        # so the estimate errs long); the quickstart epoch is the fallback
        calib = train.run(store, train.TrainConfig(model="cmbnncs-unet5", epochs=1), run_name="calibration",
                            device="cpu", progress=False)
        est = calib.seconds * 1.05
        epochs = int(min(max(args.exp_train_budget_s // max(est, 1e-3), 3), 200))
        how = (f"{args.exp_train_budget_s:.0f} s budget / {est:.1f} s per epoch (a calibration epoch on this store; "
               f"quickstart epoch {epoch_s_quickstart:.1f} s)")
    log(f"  training cmbnncs-unet5 for {epochs} epochs ({how}); load {load_average()}")
    config = train.TrainConfig(model="cmbnncs-unet5", epochs=epochs)
    t0 = time.perf_counter()
    rep = train.run(store, config, run_name="unet5", device="cpu", progress=False)
    train_s = time.perf_counter() - t0
    log(f"  trained in {train_s:.0f} s ({rep.samples_per_s:.2f} samples/s); train loss {rep.train_loss[0]:.4g} -> "
        f"{rep.train_loss[-1]:.4g}, valid loss {rep.valid_loss[0]:.4g} -> {rep.valid_loss[-1]:.4g}; "
        f"load {load_average()}")

    t0 = time.perf_counter()
    predict.run(store, "unet5", splits=("test",), device="cpu", progress=False)
    predict_s = time.perf_counter() - t0

    # Petroff's Bayesian spherical network on the same store, epochs from its own budget
    pdefaults = {**train.defaults("petroff", published=True), "model": "petroff"}
    if args.exp_petroff_epochs:
        p_epochs, p_how = args.exp_petroff_epochs, "fixed by --exp-petroff-epochs"
    else:
        calib = train.run(store, train.TrainConfig(**pdefaults, epochs=1), run_name="calibration-petroff",
                            device="cpu", progress=False)
        est = calib.seconds * 1.05
        p_epochs = int(min(max(args.exp_petroff_budget_s // max(est, 1e-3), 3), 400))
        p_how = f"{args.exp_petroff_budget_s:.0f} s budget / {est:.1f} s per epoch (a calibration epoch on this store)"
    log(f"  training petroff for {p_epochs} epochs ({p_how}); load {load_average()}")
    t0 = time.perf_counter()
    prep = train.run(store, train.TrainConfig(**pdefaults, epochs=p_epochs), run_name="petroff", device="cpu",
                       progress=False)
    p_train_s = time.perf_counter() - t0
    log(f"  trained in {p_train_s:.0f} s ({prep.samples_per_s:.2f} samples/s); loss {prep.train_loss[0]:.4g} -> "
        f"{prep.train_loss[-1]:.4g}, valid {prep.valid_loss[0]:.4g} -> {prep.valid_loss[-1]:.4g}; "
        f"input scaling {prep.config['transform']}, target {prep.config['target_transform']}; load {load_average()}")
    t0 = time.perf_counter()
    predict.run(store, "petroff", splits=("test",), device="cpu", progress=False, mc_samples=args.exp_mc_samples)
    p_predict_s = time.perf_counter() - t0
    log(f"  petroff predict ({args.exp_mc_samples} Monte Carlo passes per sky) {p_predict_s:.1f} s")
    t0 = time.perf_counter()
    ilc_rep = ilc.run(store, ilc.ILCConfig(method="nilc"), splits=("test",), progress=False)
    if not ilc_rep.ok:
        raise RuntimeError(f"NILC failed: {ilc_rep.failed[:3]}")
    nilc_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    an_rep = analyze.run(store, progress=False)
    if an_rep.failed:
        raise RuntimeError(f"analysis failed: {an_rep.failed[:3]}")
    analysis_s = time.perf_counter() - t0
    log(f"  predict {predict_s:.1f} s, NILC {nilc_s:.1f} s, analysis {analysis_s:.1f} s; load {load_average()}")

    t0 = time.perf_counter()
    unet = cube_mae(store, "unet5")
    nilc = cube_mae(store, "nilc")
    pet = cube_mae(store, "petroff")
    cover = petroff_calibration(store, "petroff")
    singles = single_channel_mae(store)
    nilc_check = recomputed_pred_mae(store, "nilc")
    unet_check = recomputed_pred_mae(store, "unet5")
    single_s = time.perf_counter() - t0
    best = {}
    for beam in REPORT_BEAMS:
        means = {d: float(np.mean(v)) for d, v in singles[beam].items()}
        det = min(means, key=means.get)
        v = np.asarray(singles[beam][det])
        best[beam] = (det, float(v.mean()), float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else float("nan"))

    n_test = unet[REPORT_BEAMS[0]][2]
    log(f"\ntest MAE (uK, field I, f_sky 0.8 mask, monopole+dipole removed), mean +- s.e. over {n_test} test sims:")
    log(f"  {'':34s}" + "".join(f"{'beam ' + format(b, 'g') + chr(39):>20s}" for b in REPORT_BEAMS))
    log(f"  {'cmbnncs-unet5 (' + str(epochs) + ' epochs)':34s}" +
        "".join(f"{unet[b][0]:12.3f} +- {unet[b][1]:5.3f}" for b in REPORT_BEAMS))
    log(f"  {'petroff (' + str(p_epochs) + ' epochs, ' + str(args.exp_mc_samples) + ' MC)':34s}" +
        "".join(f"{pet[b][0]:12.3f} +- {pet[b][1]:5.3f}" for b in REPORT_BEAMS))
    log(f"  {'NILC (44-857 GHz)':34s}" + "".join(f"{nilc[b][0]:12.3f} +- {nilc[b][1]:5.3f}" for b in REPORT_BEAMS))
    log(f"  {'best single channel':34s}" + "".join(f"{best[b][1]:12.3f} +- {best[b][2]:5.3f}" for b in REPORT_BEAMS)
        + "   (" + ", ".join(f"{best[b][0]} GHz at {b:g}'" for b in REPORT_BEAMS) + ")")
    log("  every channel (mean MAE): " + "; ".join(
        f"{d}: " + "/".join(f"{np.mean(singles[b][d]):.2f}" for b in REPORT_BEAMS) for d in singles[REPORT_BEAMS[0]]))
    log("  cross-check, this script's recipe on the predictions vs the cube's metrics: " + "; ".join(
        f"{name} beam {b:g}: {chk[b]:.4f} vs {ref[b][0]:.4f}"
        for name, chk, ref in (("nilc", nilc_check, nilc), ("unet5", unet_check, unet)) for b in REPORT_BEAMS))
    log("\npetroff calibration on the test split (f_sky 0.8 mask, its own beam): within 1/2/3 sigma "
        + "/".join(f"{100 * cover[k][0]:.1f}" for k in ("cover_1sigma", "cover_2sigma", "cover_3sigma"))
        + "% (Gaussian 68.3/95.4/99.7; Petroff et al. 75/96/99)")
    log(f"  median predicted sigma {cover['median_sigma']:.2f} uK; MAE over pixels with sigma <= 50 uK (whole sky, "
        f"as Petroff et al.) {cover['mae_sigma50']:.3f} uK on {100 * cover['frac_sigma50']:.1f}% of the sky")
    total = time.perf_counter() - t_all
    log(f"  experiment total {total / 60:.1f} min; load {load_average()}")
    key = {b: f"beam{b:g}" for b in REPORT_BEAMS}
    return {
        "experiment_splits": splits, "experiment_torch_threads": torch.get_num_threads(),
        "experiment_epochs": epochs, "experiment_epochs_choice": how,
        "experiment_simulation": sim_info, "experiment_train_s": round(train_s, 1),
        "experiment_train_samples_per_s": round(rep.samples_per_s, 3),
        "experiment_train_loss": [round(v, 5) for v in rep.train_loss],
        "experiment_valid_loss": [round(v, 5) for v in rep.valid_loss],
        "experiment_predict_s": round(predict_s, 1), "experiment_nilc_s": round(nilc_s, 1),
        "experiment_petroff_epochs": p_epochs, "experiment_petroff_epochs_choice": p_how,
        "experiment_petroff_train_s": round(p_train_s, 1),
        "experiment_petroff_samples_per_s": round(prep.samples_per_s, 3),
        "experiment_petroff_train_loss": [round(v, 5) for v in prep.train_loss],
        "experiment_petroff_valid_loss": [round(v, 5) for v in prep.valid_loss],
        "experiment_petroff_predict_s": round(p_predict_s, 1), "experiment_mc_samples": args.exp_mc_samples,
        "petroff_test_mae": {key[b]: round(pet[b][0], 4) for b in REPORT_BEAMS},
        "petroff_test_mae_se": {key[b]: round(pet[b][1], 4) for b in REPORT_BEAMS},
        "petroff_coverage": {k: round(cover[k][0], 4) for k in ("cover_1sigma", "cover_2sigma", "cover_3sigma")},
        "petroff_coverage_se": {k: round(cover[k][1], 4) for k in ("cover_1sigma", "cover_2sigma", "cover_3sigma")},
        "petroff_median_sigma": round(cover["median_sigma"], 3),
        "petroff_mae_sigma_le_50": round(cover["mae_sigma50"], 4),
        "petroff_sky_fraction_sigma_le_50": round(cover["frac_sigma50"], 4),
        "experiment_analysis_s": round(analysis_s, 1), "experiment_single_channel_s": round(single_s, 1),
        "experiment_total_s": round(total, 1), "experiment_test_sims": n_test,
        "unet_test_mae": {key[b]: round(unet[b][0], 4) for b in REPORT_BEAMS},
        "unet_test_mae_se": {key[b]: round(unet[b][1], 4) for b in REPORT_BEAMS},
        "nilc_test_mae": {key[b]: round(nilc[b][0], 4) for b in REPORT_BEAMS},
        "nilc_test_mae_se": {key[b]: round(nilc[b][1], 4) for b in REPORT_BEAMS},
        "best_single_channel_test_mae": {key[b]: round(best[b][1], 4) for b in REPORT_BEAMS},
        "best_single_channel_test_mae_se": {key[b]: round(best[b][2], 4) for b in REPORT_BEAMS},
        "best_single_channel": {key[b]: best[b][0] for b in REPORT_BEAMS},
        "single_channel_test_mae": {key[b]: {str(d): round(float(np.mean(v)), 4) for d, v in singles[b].items()}
                                    for b in REPORT_BEAMS},
        "crosscheck_nilc_test_mae": {key[b]: round(nilc_check[b], 4) for b in REPORT_BEAMS},
        "crosscheck_unet_test_mae": {key[b]: round(unet_check[b], 4) for b in REPORT_BEAMS},
    }


# ----------------------------------------------------------------------------- main
class _Done(Exception):
    """--experiment-only: skip the throughput part."""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="nside 32 only, few sims, 1 epoch (< 3 min)")
    parser.add_argument("--experiment", action="store_true",
                        help="also run the end-to-end experiment (not with --quick)")
    parser.add_argument("--experiment-only", action="store_true", help="the experiment without the throughput part")
    parser.add_argument("--epochs", type=int, help="epochs per throughput run (default 2; 1 with --quick)")
    parser.add_argument("--exp-train", type=int, default=200, help="experiment train sims (default 200)")
    parser.add_argument("--exp-valid", type=int, default=20, help="experiment valid sims (default 20)")
    parser.add_argument("--exp-test", type=int, default=20, help="experiment test sims (default 20)")
    parser.add_argument("--exp-epochs", type=int, help="experiment epochs (default: from --exp-train-budget-s)")
    parser.add_argument("--exp-train-budget-s", type=float, default=600.0,
                        help="experiment training time to aim for when choosing epochs (default 600 s)")
    parser.add_argument("--exp-petroff-epochs", type=int,
                        help="experiment epochs of petroff (default: from --exp-petroff-budget-s)")
    parser.add_argument("--exp-petroff-budget-s", type=float, default=600.0,
                        help="experiment petroff training time to aim for (default 600 s)")
    parser.add_argument("--exp-mc-samples", type=int, default=100,
                        help="petroff Monte Carlo passes per test sky (default 100, as published)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--exp-threads", type=int, help="torch CPU threads for the experiment (default: as --threads)")
    parser.add_argument("--no-gpu-512", action="store_true", help="on a GPU, skip nside 512")
    args = parser.parse_args(argv)
    if args.quick and (args.experiment or args.experiment_only):
        parser.error("--experiment is not run with --quick")

    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    epochs = args.epochs or (1 if args.quick else 2)
    log(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {os.cpu_count()} cores, "
        f"cuda: {torch.cuda.is_available()}; load average {load_average()}")
    loads = {"start": load_average()}
    work = Path(tempfile.mkdtemp(prefix="cmbcube-train-bench-"))
    results, stores = {}, {}
    summary: dict = {}
    try:
        if args.experiment_only:
            summary = {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
            summary.update(experiment(work, args, float("nan")))
            raise _Done
        # nside 32: the quickstart shape (16 train, 4 valid), I only
        log("\nnside 32 store (quickstart shape):")
        s32 = str(work / "nside32.zarr")
        stores["nside32"] = simulate_store(s32, 32, {"train": 16, "valid": 4, "test": 0}, seed=20261126,
                                           name="train-bench-32")
        log("throughput (CPU):")
        quick_run = measure(s32, "cmbnncs-unet5", epochs, None, "cpu", "qs-unet5")
        results["cmbnncs-unet5/nside32/cpu"] = quick_run
        if not args.quick and torch.get_num_threads() > 1:
            # the same run on one thread: torch's OpenMP threads suffer badly when other processes share the cores
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            results["cmbnncs-unet5/nside32/cpu-1thread"] = measure(s32, "cmbnncs-unet5", epochs, None, "cpu",
                                                                   "qs-unet5-1thread")
            torch.set_num_threads(threads)
        results["patch-unet/nside32/cpu"] = measure(s32, "patch-unet", epochs, 2 if args.quick else 4, "cpu",
                                                    "patch")
        results["petroff/nside32/cpu"] = measure(s32, "petroff", epochs, 4 if args.quick else None, "cpu", "petroff")
        if not args.quick and torch.get_num_threads() > 1:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            results["petroff/nside32/cpu-1thread"] = measure(s32, "petroff", epochs, None, "cpu", "petroff-1thread")
            torch.set_num_threads(threads)
        if not args.quick:
            log("\nnside 64 store:")
            s64 = str(work / "nside64.zarr")
            stores["nside64"] = simulate_store(s64, 64, {"train": 8, "valid": 2, "test": 0}, seed=20261127,
                                               name="train-bench-64")
            log("throughput (CPU):")
            results["cmbnncs-unet5/nside64/cpu"] = measure(s64, "cmbnncs-unet5", epochs, 8, "cpu", "unet5")
            results["patch-unet/nside64/cpu"] = measure(s64, "patch-unet", epochs, 2, "cpu", "patch")
            results["petroff/nside64/cpu"] = measure(s64, "petroff", epochs, 8, "cpu", "petroff")
            shutil.rmtree(s64, ignore_errors=True)
            shutil.rmtree(s64 + ".runs", ignore_errors=True)
        if torch.cuda.is_available() and not args.quick:
            log("\nthroughput (GPU):")
            results.update(gpu_throughput(work, epochs, include_512=not args.no_gpu_512))
        loads["after_throughput"] = load_average()
        epoch_s_quickstart = quick_run["epoch_s"]

        log(f"\n{'configuration':36s}{'samples/s':>12s}{'sims/s':>10s}{'s/epoch':>10s}{'epochs':>8s}"
            f"{'train sims':>12s}")
        for key, r in results.items():
            if "error" in r:
                log(f"{key:36s}  {r['error'][:60]}")
                continue
            log(f"{key:36s}{r['samples_per_s']:12.2f}{r['sims_per_s']:10.3f}{r['epoch_s']:10.1f}{r['epochs']:8d}"
                f"{str(r['train_sims'] or 'all'):>12s}")
        log(f"quickstart configuration (nside 32, 16 train + 4 valid sims, cmbnncs-unet5, batch 12, repeats 3, CPU): "
            f"{epoch_s_quickstart:.1f} s per epoch")
        summary = {
            "quick": args.quick, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "samples_per_s": {k: round(r["samples_per_s"], 3) for k, r in results.items() if "error" not in r},
            "sims_per_s": {k: round(r["sims_per_s"], 4) for k, r in results.items() if "error" not in r},
            "epoch_s": {k: round(r["epoch_s"], 2) for k, r in results.items() if "error" not in r},
            "errors": {k: r["error"] for k, r in results.items() if "error" in r},
            "epoch_s_quickstart": round(epoch_s_quickstart, 2),
            "throughput_epochs": epochs, "stores": stores,
        }
        if args.experiment:
            summary.update(experiment(work, args, epoch_s_quickstart))
    except _Done:
        pass
    finally:
        shutil.rmtree(work, ignore_errors=True)
    loads["end"] = load_average()
    summary["load_average"] = loads
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
