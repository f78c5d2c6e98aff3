"""The ``cmbcube`` command: one entry point, one subcommand per stage."""
from __future__ import annotations

import argparse
import logging
import sys

from cmbcube import __version__
from cmbcube.errors import EXIT_BAD_INPUT, EXIT_FAILURE, CmbcubeError, InputError



def _add_cluster_args(p):
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="Dask scheduler address (tcp://host:port), or 'synchronous' to run in this process; "
                        "default: a local cluster")
    p.add_argument("--scheduler-file", metavar="FILE", help="Dask scheduler file (dask scheduler --scheduler-file)")
    p.add_argument("--workers", type=int, metavar="N", help="worker processes of the local cluster")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would be computed and which cluster would be started or connected to "
                        "(the sbatch job script for kind slurm), then stop: nothing is started or written")


def _add_force_size(p, what: str) -> None:
    p.add_argument("--force-size", action="store_true",
                   help=f"run even if the estimates say {what} (README: Size limits and --force-size)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cmbcube", description=(
        "Simulate Planck-like multi-frequency skies into one Zarr cube, clean the CMB out of them "
        "and score the results."))
    parser.add_argument("--version", action="version", version=f"cmbcube {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("simulate", help="simulate a recipe into a store (resumes where it stopped)")
    p.add_argument("recipe", help="recipe YAML file, e.g. recipes/quickstart.yaml")
    p.add_argument("--store", required=True, help="path of the Zarr store to create or resume")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set nside=64 --set splits.train=100 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_force_size(p, "the store's size, a task's memory or the number of sims exceed the free disk, the "
                       "workers' memory limit or the caps")
    _add_cluster_args(p)

    p = sub.add_parser("preprocess", help="normalisation statistics of the train split, stored in the cube")
    p.add_argument("store")
    p.add_argument("--split", default="train", help="split the statistics describe (default train)")
    p.add_argument("--force", action="store_true", help="recompute even if up to date")
    p.add_argument("--no-progress", action="store_true")
    _add_cluster_args(p)

    p = sub.add_parser("ilc", help="NILC or HILC of a split, written as a run of the pred product")
    p.add_argument("store")
    p.add_argument("--method", choices=("nilc", "hilc"), default="nilc")
    p.add_argument("--run", help="run name (default: the method's name)")
    p.add_argument("--split", default="test", help="split(s), comma-separated (default test)")
    p.add_argument("--detectors", help="comma-separated GHz (default CMB-ML's 44-857)")
    p.add_argument("--fields", help="comma-separated subset of I,Q,U (default: the cube's)")
    p.add_argument("--peaks", help="cosine needlet peaks, comma-separated (default: CMB-ML's, scaled to the nside)")
    p.add_argument("--gaussian-fwhms", help="Gaussian needlets instead: decreasing FWHMs in arcmin")
    p.add_argument("--common-beam", type=float, default=20.6, help="output beam FWHM, arcmin (default 20.6)")
    p.add_argument("--bias-tolerance", type=float, default=1e-3)
    p.add_argument("--deproject", help="SEDs to null, comma-separated: dust, cib, tsz, synchrotron")
    p.add_argument("--bin-width", type=int, default=50, help="HILC multipole bin width (default 50)")
    p.add_argument("--no-progress", action="store_true")
    _add_force_size(p, "the predictions' size or a task's memory exceed the free disk or the workers' memory limit")
    _add_cluster_args(p)

    p = sub.add_parser("train", help="train a network from the cube (checkpoints next to the store)")
    p.add_argument("store")
    p.add_argument("--model", default="cmbnncs-unet5", help="cmbnncs-unet5 (nside >= 32), cmbnncs-unet8 (nside >= 256), "
                                                            "patch-unet, petroff (Bayesian spherical network with "
                                                            "per-pixel sigma)")
    p.add_argument("--run", help="run name (default: the model's name)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--repeats", type=int, help="optimiser steps per batch (cmbNNCS: 3)")
    p.add_argument("--lr-start", type=float)
    p.add_argument("--lr-end", type=float)
    p.add_argument("--loss", choices=("l1", "mse", "heteroscedastic"), help="heteroscedastic: petroff (its default)")
    p.add_argument("--detectors", help="input detectors, comma-separated (default 100,143,217,353)")
    p.add_argument("--fields", help="fields of inputs and target, comma-separated (default I)")
    p.add_argument("--transform", help="input transform: none, minmax, standardize, robust, maxabs, "
                                       "noiseless-maxabs (petroff), scale:S[,S...]")
    p.add_argument("--target-transform", help="target transform (cmbNNCS: scale:5; petroff: unit-maxabs)")
    p.add_argument("--patch-side", type=int, help="patch UNet: patch side in pixels (power of two)")
    p.add_argument("--train-sims", type=int, help="use only the first N train sims")
    p.add_argument("--grad-clip", type=float, metavar="NORM", help="clip the gradient norm (petroff default: 10)")
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--early-stopping", type=int, metavar="PATIENCE", help="stop after PATIENCE epochs without "
                                                                          "validation improvement")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--deterministic", action="store_true", help="torch deterministic algorithms")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--no-progress", action="store_true")
    _add_force_size(p, "the run's checkpoints exceed the free disk next to the store")

    p = sub.add_parser("predict", help="write a trained run's predictions into the cube")
    p.add_argument("store")
    p.add_argument("--run", required=True)
    p.add_argument("--split", default="test", help="split(s), comma-separated (default test)")
    p.add_argument("--epoch", type=int, help="checkpoint epoch (default: the last)")
    p.add_argument("--mc-samples", type=int, metavar="N", help="petroff: Monte Carlo passes with dropout on "
                                                               "(default 100); mean -> pred, spread -> pred_sigma")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    _add_force_size(p, "the predictions' size exceeds the free disk")

    p = sub.add_parser("analyze", help="metrics and power spectra of every run, stored in the cube")
    p.add_argument("store")
    p.add_argument("--runs", default="all", help="comma-separated run names, or all (default)")
    p.add_argument("--split", default="test", help="split(s), comma-separated (default test)")
    p.add_argument("--f-sky", type=float, default=0.8, help="sky fraction kept by the foreground mask (default 0.8)")
    p.add_argument("--mask", help="HEALPix FITS mask file instead (1 = keep)")
    p.add_argument("--estimator", default="namaster", help="power spectra: namaster (default: mode-coupling "
                   "inversion, purified B; needs pymaster) or pseudo-fast (naive pseudo-C_l, BB leaks)")
    p.add_argument("--no-progress", action="store_true")
    _add_force_size(p, "the analysis' size or a task's memory exceed the free disk or the workers' memory limit")
    _add_cluster_args(p)

    p = sub.add_parser("report", help="tables and figures from the analysis")
    p.add_argument("store")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--split", default="test")
    p.add_argument("--sims", default="0", help="sims to map, comma-separated (default 0)")

    p = sub.add_parser("run", help="the whole pipeline: simulate, preprocess, ilc, train, predict, analyze, report")
    p.add_argument("recipe")
    p.add_argument("--store", required=True)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--report", help="report directory (default: STORE with .report)")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    _add_force_size(p, "a stage's store growth, a task's memory or the number of sims exceed the free disk, "
                       "the workers' memory limit or the caps")
    _add_cluster_args(p)

    p = sub.add_parser("view", help="PNG of any map in the cube")
    p.add_argument("store")
    p.add_argument("--split", default="test")
    p.add_argument("--sim", type=int, default=0)
    p.add_argument("--detector", type=int, help="GHz (obs and components)")
    p.add_argument("--field", default="I")
    p.add_argument("--product", default="obs", help="obs, cmb, pred (with --run), noise, or a component name")
    p.add_argument("--run", help="run name for --product pred")
    p.add_argument("--rot", help="LON,LAT in degrees: centre of a gnomonic zoom")
    p.add_argument("--zoom", action="store_true", help="gnomonic zoom (at --rot, default 0,0)")
    p.add_argument("--out", help="PNG path (default: a name made of the selection)")

    p = sub.add_parser("ingest-cmbml", help="read a CMB-ML dataset tree (Simulation/Train/sim0000/...) into a store")
    p.add_argument("dir", help="the CMB-ML dataset folder (holding Simulation/) or its Simulation folder")
    p.add_argument("--store", required=True, help="path of the Zarr store to create or resume")
    p.add_argument("--name", help="dataset name recorded in the store (default: cmbml-<folder name>)")
    p.add_argument("--units", choices=("uK_CMB", "K_CMB", "native"),
                   help="units of the store (default: those of the files; uK_CMB when they mix)")
    p.add_argument("--no-progress", action="store_true")
    _add_force_size(p, "the store's size or the number of sims exceed the free disk or the caps")
    _add_cluster_args(p)

    p = sub.add_parser("export-cmbml", help="write a store's finished sims as a CMB-ML tree (DIR/Simulation/...)")
    p.add_argument("store")
    p.add_argument("dir", help="destination folder")
    p.add_argument("--split", default="train,valid,test", help="split(s), comma-separated (default: all)")
    p.add_argument("--units", choices=("uK_CMB", "K_CMB", "store"), default="uK_CMB",
                   help="units of the FITS maps (default uK_CMB, as CMB-ML's datasets; store: the store's own)")
    p.add_argument("--overwrite", action="store_true", help="rewrite sims already complete in DIR")
    p.add_argument("--no-progress", action="store_true")
    _add_cluster_args(p)

    p = sub.add_parser("info", help="summarise a store")
    p.add_argument("store")

    p = sub.add_parser("verify", help="check every finished sim's and run's chunks exist and decode (crc32c)")
    p.add_argument("store")
    p.add_argument("--clear", action="store_true",
                   help="clear the done-flags of damaged units (and delete their damaged files) so rerunning "
                        "the stage rebuilds exactly them")
    p.add_argument("--products", action="append", metavar="NAMES",
                   help="comma-separated products to check (default: all present), e.g. obs,cmb or pred")
    p.add_argument("--threads", type=int, metavar="N", help="reader threads (default: 2 per core, at most 8)")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("drop", help="remove a product (e.g. one run) from a store to reclaim disk space")
    p.add_argument("store")
    p.add_argument("product", help="obs, cmb, components, noise, stats, pred, analysis or run")
    p.add_argument("--run", help="one run (with pred, analysis, run)")
    p.add_argument("--force", action="store_true", help="drop obs or cmb even though products made from them remain")

    p = sub.add_parser("assets", help="external files a recipe can use (pysm3 templates, Planck maps...), "
                                      "present or not; --fetch downloads the missing ones")
    p.add_argument("recipe")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--fetch", action="store_true", help="download the missing needed files")
    p.add_argument("--optional", action="store_true", help="with --fetch: the optional ones too (mask)")
    p.add_argument("--destination", metavar="DIR",
                   help="folder for files the recipe does not place itself (pysm3 templates without "
                        "foregrounds.data_dir, masks); default ./cmbcube-assets")
    p.add_argument("--base-url", metavar="URL", help="a mirror holding <kind>/<path> files and manifest.json")
    p.add_argument("--connect-timeout", type=float, default=5.0, metavar="S",
                   help="seconds to wait for a connection before reporting offline (default 5)")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("check-recipe", help="validate a recipe and show what it plans, without running")
    p.add_argument("recipe")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--store", help="where the store would go: its file system's free space is checked "
                                   "(default: the current directory)")
    p.add_argument("--workers", type=int, metavar="N", help="local workers (memory per worker is checked against "
                                                            "the machine's memory / N)")
    _add_force_size(p, "the store's size, a task's memory or the number of sims exceed the free disk, the "
                       "workers' memory limit or the caps")
    return parser


def _failures(failed) -> int:
    """List failed tasks (the last element of each is the message); exit status 1 if any."""
    if not failed:
        return 0
    damaged = sum("DamagedUnitError" in str(f[-1]) for f in failed)
    if damaged:          # a rerun reads the same damaged input: the message says how to repair it
        print(f"{len(failed)} task(s) failed, {damaged} on damaged input (see each message: cmbcube verify "
              "--clear, then rebuild it); rerun the same command to retry the others:", file=sys.stderr)
    else:
        print(f"{len(failed)} task(s) failed; rerun the same command to retry them:", file=sys.stderr)
    for *key, message in failed[:20]:
        print(f"  {'/'.join(map(str, key))}: {message}", file=sys.stderr)
    return 1


def _simulate(args) -> int:
    from cmbcube.stages.simulate import run
    report = run(args.recipe, args.store, scheduler=args.scheduler, scheduler_file=args.scheduler_file,
                 workers=args.workers, overrides=args.overrides, progress=False if args.no_progress else None,
                 force_size=args.force_size)
    if not report.written and not report.failed:
        print(f"nothing to do: all {report.planned} planned sims in {report.store} are already done")
        return 0
    print(f"simulated {len(report.written)} sim(s) into {report.store} in {report.seconds:.1f} s "
          f"({report.already_done} were already done)")
    if report.timings:
        total = sum(report.timings.values()) or 1.0
        print("  time per stage (summed over sims): " + ", ".join(
            f"{k} {v:.1f}s ({100 * v / total:.0f}%)" for k, v in sorted(report.timings.items(), key=lambda kv: -kv[1])))
    return _failures(report.failed)


def _csv(text, cast=str):
    return tuple(cast(x.strip()) for x in text.split(",") if x.strip()) if text else None


def _ilc(args) -> int:
    from cmbcube.stages.ilc import ILCConfig, run
    config = ILCConfig(method=args.method, common_beam_arcmin=args.common_beam, bias_tolerance=args.bias_tolerance,
                       bin_width=args.bin_width)
    try:
        if args.detectors:
            config.detectors = _csv(args.detectors, int)
        if args.fields:
            config.fields = _csv(args.fields)
        if args.peaks:
            config.peaks = _csv(args.peaks, int)
        if args.gaussian_fwhms:
            config.gaussian_fwhms = _csv(args.gaussian_fwhms, float)
    except ValueError as err:
        raise InputError(f"could not parse a comma-separated list of numbers: {err}") from None
    if args.deproject:
        config.deproject = _csv(args.deproject)
    report = run(args.store, config, args.run, _csv(args.split), args.scheduler, args.scheduler_file, args.workers,
                 progress=False if args.no_progress else None, force_size=args.force_size)
    if not report.written and not report.failed:
        print(f"nothing to do: run {report.run!r} already holds all {report.already_done} requested sims")
        return 0
    print(f"{report.run}: cleaned {len(report.written)} sim(s) in {report.seconds:.1f} s; "
          f"cmbcube.open(store).pred.sel(run={report.run!r}) holds them")
    return _failures(report.failed)


def _train(args) -> int:
    from cmbcube.stages.train import TrainConfig, defaults, train
    values = {"model": args.model, **defaults(args.model)}
    for key in ("epochs", "batch_size", "repeats", "lr_start", "lr_end", "loss", "transform", "target_transform",
                "patch_side", "train_sims", "checkpoint_every", "early_stopping", "seed", "grad_clip"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    if args.detectors:
        values["detectors"] = _csv(args.detectors, int)
    if args.fields:
        values["fields"] = _csv(args.fields)
    config = TrainConfig(**values)
    report = train(args.store, config, args.run, args.device, args.resume, args.deterministic,
                   progress=False if args.no_progress else None, num_workers=args.num_workers,
                   force_size=args.force_size)
    print(f"{report.run}: {report.epochs_done} epoch(s), last train loss {report.train_loss[-1]:.4g}, "
          f"valid loss {report.valid_loss[-1]:.4g}{' (stopped early)' if report.stopped_early else ''}; "
          f"{report.samples_per_s:.1f} samples/s; checkpoint {report.checkpoint}")
    return 0


def _check_recipe(args) -> int:
    from cmbcube.recipe import load
    from cmbcube.science.sky import component_names
    recipe = load(args.recipe, args.overrides)
    from cmbcube.stages.limits import check_simulate
    r = recipe.data
    nsims = sum(recipe.splits.values())
    plan, forced = check_simulate(recipe, args.store or ".", None, None, args.workers, args.force_size,
                                  what=f"recipe {recipe.name}")
    print(f"recipe {recipe.name} is valid (hash {recipe.hash[:12]})")
    print("  sims: " + ", ".join(f"{k} {v}" for k, v in recipe.splits.items()) + f" = {nsims}")
    print(f"  nside {r['nside']} (sky model {r['sky_nside']}), detectors {r['detectors']}, fields {r['fields']}")
    print(f"  foregrounds: {r['foregrounds']['model']} {component_names(recipe)} ({r['foregrounds']['vary']})")
    print("\n".join(plan.lines()))
    for problem in forced:
        print(f"  warning (--force-size): {problem}")
    if r["foregrounds"]["model"] == "pysm3":
        from cmbcube.interop.templates import missing_pysm_files
        missing = missing_pysm_files(r["foregrounds"]["presets"], r["sky_nside"], r["foregrounds"]["data_dir"])
        print("  pysm3 templates: " + ("all present" if not missing else f"{len(missing)} missing:\n    " + "\n    ".join(missing)))
    return 0


def _dry_run(args) -> int:
    """``--dry-run`` on any Dask stage: the plan and the compute side; starts and writes nothing."""
    import os

    from cmbcube.stages import cluster
    from cmbcube import cube
    if args.command in ("simulate", "run"):
        from cmbcube.recipe import load
        recipe = load(args.recipe, args.overrides)
        nsims = sum(recipe.splits.values())
        if os.path.exists(args.store):
            done = int((cube.done_flags(args.store) & cube.planned(args.store)).sum()) \
                if cube.read_attrs(args.store).get("recipe_hash") == recipe.hash else None
            state = (f"existing store, {done} of {nsims} sims done" if done is not None
                     else "exists with another recipe: the run would be refused")
        else:
            state = "would be created"
        print(f"dry run: {args.command} recipe {recipe.name} ({nsims} sims, nside {recipe['nside']}) into "
              f"{args.store} ({state})")
    else:
        recipe = cube.store_recipe(args.store)
        print(f"dry run: {args.command} on {args.store} (recipe {recipe.name}, nside {recipe['nside']})")
    print(cluster.describe(recipe["cluster"], args.scheduler, args.scheduler_file, args.workers))
    print("dry run: nothing was started or written")
    return 0


def _ingest_cmbml(args) -> int:
    from cmbcube.interop.cmbml import beam_sources, ingest, recipe_for, scan
    if getattr(args, "dry_run", False):
        plan = scan(args.dir)
        recipe = recipe_for(plan, args.name, args.units)
        print(f"dry run: {plan.root}: " + ", ".join(f"{k} {v}" for k, v in plan.counts.items())
              + f" sims, nside {plan.nside}, detectors {plan.detectors}, fields {''.join(plan.fields)}, "
              f"units {recipe['units']} in the store; {plan.n_files} files checked")
        print("dry run: beams the store will record (ilc and analysis use these):")
        for freq, fwhm, source in beam_sources(plan):
            print(f"  {freq} GHz: {fwhm:g}' ({source})")
        print(f"  CMB truth: {plan.cmb_beam_arcmin:g}'" + (" (no beam)" if not plan.cmb_beam_arcmin else ""))
        print("dry run: nothing was started or written")
        return 0
    report = ingest(args.dir, args.store, args.scheduler, args.scheduler_file, args.workers,
                    progress=False if args.no_progress else None, name=args.name, units=args.units,
                    force_size=args.force_size)
    if not report.written and not report.failed:
        print(f"nothing to do: all {report.planned} sims of {report.source} are already in {report.store}")
        return 0
    print(f"ingested {len(report.written)} sim(s) from {report.source} into {report.store} in "
          f"{report.seconds:.1f} s ({report.already_done} were already there)")
    return _failures(report.failed)


def _export_cmbml(args) -> int:
    from cmbcube.interop.cmbml import export
    report = export(args.store, args.dir, _csv(args.split), args.units, args.overwrite, args.scheduler,
                    args.scheduler_file, args.workers, progress=False if args.no_progress else None)
    print(f"exported {len(report.written)} sim(s) to {report.destination}/Simulation in {report.seconds:.1f} s"
          + (f" ({len(report.skipped)} already there; --overwrite rewrites them)" if report.skipped else ""))
    return _failures(report.failed)


def _verify(args) -> int:
    from cmbcube.cube.verify import format_report, verify
    products = [p for chunk in args.products or [] for p in _csv(chunk) or ()] or None
    report = verify(args.store, products, args.clear, args.threads, progress=False if args.no_progress else None)
    print(format_report(report))
    return 0 if report.ok else 1


def _drop(args) -> int:
    from cmbcube.cube.drop import drop, format_report
    print(format_report(drop(args.store, args.product, args.run, args.force)))
    return 0


def _assets(args) -> int:
    from cmbcube.interop import assets
    from cmbcube.recipe import load
    recipe = load(args.recipe, args.overrides)
    if not args.fetch:
        listed = assets.list_assets(recipe, args.destination)
        note = assets.add_mirror_sizes(listed, args.base_url, args.connect_timeout) if args.base_url else None
        print(assets.format_listing(recipe, listed, args.destination) + (f"\nnote: {note}" if note else ""))
        return 0 if all(a.present for a in listed if a.needed) else 1
    try:
        report = assets.fetch(recipe, args.destination, args.base_url, args.optional, args.connect_timeout,
                              progress=False if args.no_progress else None)
    except assets.AssetError as err:
        print(f"cmbcube: {err}", file=sys.stderr)
        return 1
    still = [a for a in assets.list_assets(recipe, args.destination) if a.needed and not a.present]
    print(assets.format_fetch(report, still))
    return 1 if still or report.failed else 0


def _os_error(err: OSError) -> int:
    """Disk full, permission denied, read-only file system outside a store transaction: exit 2."""
    where = err.filename or ""
    print(f"cmbcube: {where + ': ' if where else ''}{err.strerror or err}", file=sys.stderr)
    return EXIT_BAD_INPUT


def main(argv=None) -> int:
    from cmbcube.recipe import RecipeError
    parser = build_parser()
    args = parser.parse_args(argv)
    from cmbcube.progress import LogHandler
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s", handlers=[LogHandler(sys.stderr)])
    if args.verbose < 2:
        for noisy in ("distributed", "numba", "pysm3", "healpy"):
            logging.getLogger(noisy).setLevel(logging.ERROR if args.verbose == 0 else logging.WARNING)
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        if getattr(args, "dry_run", False) and args.command != "ingest-cmbml":   # ingest-cmbml: its own dry run
            return _dry_run(args)
        if args.command == "simulate":
            return _simulate(args)
        if args.command == "preprocess":
            from cmbcube.stages.preprocess import run as preprocess
            out = preprocess(args.store, split=args.split, scheduler=args.scheduler,
                             scheduler_file=args.scheduler_file, workers=args.workers, force=args.force,
                             progress=False if args.no_progress else None)
            if out["status"] == "up to date":
                print(f"nothing to do: statistics of {out['sims']} {args.split} sims are up to date")
            else:
                print(f"stored normalisation statistics of {out['sims']} {args.split} sims in {args.store} "
                      "(stats_obs, stats_cmb)")
            return 0
        if args.command == "ilc":
            return _ilc(args)
        if args.command == "train":
            return _train(args)
        if args.command == "predict":
            from cmbcube.stages.train import predict
            report = predict(args.store, args.run, _csv(args.split), args.epoch, args.device,
                             progress=False if args.no_progress else None, mc_samples=args.mc_samples,
                             force_size=args.force_size)
            if not report.written:
                print(f"nothing to do: run {args.run!r} already holds predictions for the requested sims")
            else:
                print(f"{args.run}: predicted {len(report.written)} sim(s) with the epoch-{report.epoch} checkpoint "
                      f"in {report.seconds:.1f} s" + (f" ({report.mc_samples} Monte Carlo passes each; per-pixel "
                                                      "sigma in pred_sigma)" if report.mc_samples else ""))
            return 0
        if args.command == "analyze":
            from cmbcube.stages.analysis import run as analyze
            runs = "all" if args.runs == "all" else _csv(args.runs)
            rep = analyze(args.store, runs, _csv(args.split), args.f_sky, args.mask, args.scheduler,
                          args.scheduler_file, args.workers, progress=False if args.no_progress else None,
                          force_size=args.force_size, estimator=args.estimator)
            if not rep.written and not rep.failed:
                print(f"nothing to do: {rep.already_done} (run, sim) pairs already analysed")
                return 0
            print(f"analysed {len(rep.written)} (run, sim) pair(s) in {rep.seconds:.1f} s: metrics and spectra in the cube")
            return _failures(rep.failed)
        if args.command == "report":
            from cmbcube.stages.report import build
            page = build(args.store, args.out, args.split, _csv(args.sims, int))
            print(f"report: {page}")
            return 0
        if args.command == "run":
            from cmbcube.stages.pipeline import run as pipeline
            page = pipeline(args.recipe, args.store, args.scheduler, args.scheduler_file, args.workers,
                            args.overrides, args.report, args.device, progress=False if args.no_progress else None,
                            force_size=args.force_size)
            print(f"report: {page}")
            return 0
        if args.command == "view":
            from cmbcube.stages.view import view
            print(view(args))
            return 0
        if args.command == "ingest-cmbml":
            return _ingest_cmbml(args)
        if args.command == "export-cmbml":
            return _export_cmbml(args)
        if args.command == "info":
            from cmbcube.cube import summary
            print(summary(args.store))
            return 0
        if args.command == "check-recipe":
            return _check_recipe(args)
        if args.command == "verify":
            return _verify(args)
        if args.command == "drop":
            return _drop(args)
        if args.command == "assets":
            return _assets(args)
    except RecipeError as err:
        print(f"cmbcube: recipe error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except InputError as err:           # bad input: the message names the field and the allowed values
        print(f"cmbcube: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except CmbcubeError as err:         # a failure cmbcube detected and explains; anything else is a bug
        print(f"cmbcube: {err}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as err:
        import errno
        if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS):
            return _os_error(err)
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
