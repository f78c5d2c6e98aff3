"""What each ``cmbcube`` command does once its arguments are parsed: one function per command.

``cmbcube.cli.COMMANDS`` pairs each with its options (``cmbcube.cli_args``) and, for a stage, the
stage module whose ``run(...) -> StageReport`` does the work. A stage's handler is called as
``handler(args, run)`` with that function (imported when the command runs, so ``cmbcube --help``
stays quick), the others as ``handler(args)``; each prints what was done and returns the exit
status. Bad input raises ``cmbcube.errors.InputError``; ``cmbcube.cli.main`` turns it into exit
status 2.
"""
from __future__ import annotations

import sys

from cmbcube.errors import InputError


def csv(text, cast=str):
    """``"a,b,c"`` -> a tuple of ``cast`` values (None for no text); an unparsable item is bad input."""
    try:
        return tuple(cast(x.strip()) for x in text.split(",") if x.strip()) if text else None
    except ValueError as err:
        raise InputError(f"could not parse a comma-separated list of numbers: {err}") from None


def failures(failed) -> int:
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


def dask_options(args) -> dict:
    """The cluster options (``cmbcube.cli_args.cluster``) as the stages' keyword arguments."""
    return dict(scheduler=args.scheduler, scheduler_file=args.scheduler_file, workers=args.workers)


def progress_option(args):
    """``--no-progress`` as the stages' ``progress`` argument: False, or None (a bar on a terminal only)."""
    return False if args.no_progress else None


def dry_run(args) -> int:
    """``--dry-run`` on any Dask stage: the plan and the compute side; starts and writes nothing."""
    import os

    from cmbcube import cube
    from cmbcube.compute import cluster
    if args.command in ("simulate", "run"):
        from cmbcube.recipe import load
        recipe = load(args.recipe, args.overrides)
        from cmbcube.compute import limits
        from cmbcube.stages.simulate import preflight
        nsims = sum(recipe.splits.values())
        pending = None
        if os.path.exists(args.store):
            if not cube.holds_recipe(args.store, recipe):
                raise cube.StoreError(f"dry run: {args.store} exists with another recipe: the {args.command} "
                                      "would be refused; use a new --store path")
            done = cube.finished(args.store)
            pending = len(cube.pending(args.store))
            state = f"existing store, {done} of {nsims} sims done"
        else:
            state = "would be created"
        print(f"dry run: {args.command} recipe {recipe.name} ({nsims} sims, nside {recipe['nside']}) into "
              f"{args.store} ({state})")
        # every check the real run makes before it starts anything: sizes, memory, input files
        limits.check_simulate(recipe, args.store, force=getattr(args, "force_size", False), pending=pending,
                              **dask_options(args))
        preflight(recipe)
    else:
        recipe = cube.store_recipe(args.store)
        print(f"dry run: {args.command} on {args.store} (recipe {recipe.name}, nside {recipe['nside']})")
    print(cluster.describe(recipe["cluster"], **dask_options(args)))
    print("dry run: nothing was started or written")
    return 0


def simulate(args, run) -> int:
    report = run(args.recipe, args.store, overrides=args.overrides, progress=progress_option(args),
                 force_size=args.force_size, **dask_options(args))
    if not report.written and not report.failed:
        print(f"nothing to do: all {report.planned} planned sims in {report.store} are already done")
        return 0
    print(f"simulated {len(report.written)} sim(s) into {report.store} in {report.seconds:.1f} s "
          f"({report.already_done} were already done)")
    if report.timings:
        total = sum(report.timings.values()) or 1.0
        print("  time per stage (summed over sims): " + ", ".join(
            f"{k} {v:.1f}s ({100 * v / total:.0f}%)" for k, v in sorted(report.timings.items(), key=lambda kv: -kv[1])))
    return failures(report.failed)


def preprocess(args, run) -> int:
    out = run(args.store, split=args.split, force=args.force, progress=progress_option(args), **dask_options(args))
    if out.status == "up to date":
        print(f"nothing to do: statistics of {out.sims} {args.split} sims are up to date")
    else:
        print(f"stored normalisation statistics of {out.sims} {args.split} sims in {args.store} "
              "(stats_obs, stats_cmb)")
    return 0


def ilc(args, run) -> int:
    from cmbcube.stages.ilc import ILCConfig
    config = ILCConfig(method=args.method, common_beam_arcmin=args.common_beam, bias_tolerance=args.bias_tolerance,
                       bin_width=args.bin_width)
    if args.detectors:
        config.detectors = csv(args.detectors, int)
    if args.fields:
        config.fields = csv(args.fields)
    if args.peaks:
        config.peaks = csv(args.peaks, int)
    if args.gaussian_fwhms:
        config.gaussian_fwhms = csv(args.gaussian_fwhms, float)
    if args.deproject:
        config.deproject = csv(args.deproject)
    report = run(args.store, config, args.run, csv(args.split), progress=progress_option(args),
                 force_size=args.force_size, **dask_options(args))
    if not report.written and not report.failed:
        print(f"nothing to do: run {report.run!r} already holds all {report.already_done} requested sims")
        return 0
    print(f"{report.run}: cleaned {len(report.written)} sim(s) in {report.seconds:.1f} s; "
          f"cmbcube.open(store).pred.sel(run={report.run!r}) holds them")
    return failures(report.failed)


def train(args, run) -> int:
    from cmbcube.stages.train import TrainConfig, defaults, recorded_patience
    values = {"model": args.model, **defaults(args.model, published=args.published)}
    if args.resume and args.early_stopping is None:      # a run started before the default: as it was recorded
        values["early_stopping"] = recorded_patience(args.store, args.run or args.model,
                                                     values.get("early_stopping", 0))
    for key in ("epochs", "batch_size", "repeats", "lr_start", "lr_end", "loss", "transform", "target_transform",
                "patch_side", "train_sims", "checkpoint_every", "early_stopping", "seed", "grad_clip", "augment",
                "precision", "channels_last", "head"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    if args.detectors:
        values["detectors"] = csv(args.detectors, int)
    if args.fields:
        values["fields"] = csv(args.fields)
    config = TrainConfig(**values)
    report = run(args.store, config, args.run, args.device, args.resume, args.deterministic,
                 progress=progress_option(args), num_workers=args.num_workers,
                 force_size=args.force_size, overwrite=args.overwrite, keep_checkpoints=args.keep_checkpoints)
    if report.dropped:
        print(f"--overwrite: {report.dropped}")
    best = f" (best validation loss: {report.best})" if report.best and report.best != report.checkpoint else ""
    print(f"{report.run}: {report.epochs_done} epoch(s), last train loss {report.train_loss[-1]:.4g}, "
          f"valid loss {report.valid_loss[-1]:.4g}{' (stopped early)' if report.stopped_early else ''}; "
          f"{report.samples_per_s:.1f} samples/s; checkpoint {report.checkpoint}{best}")
    return 0


def predict(args, run) -> int:
    report = run(args.store, args.run, csv(args.split), args.epoch, args.device, progress=progress_option(args),
                 mc_samples=args.mc_samples, force_size=args.force_size)
    if not report.written:
        print(f"nothing to do: run {args.run!r} already holds predictions for the requested sims")
    else:
        print(f"{args.run}: predicted {len(report.written)} sim(s) with the epoch-{report.epoch} checkpoint "
              f"in {report.seconds:.1f} s" + (f" ({report.mc_samples} Monte Carlo passes each; per-pixel "
                                              "sigma in pred_sigma)" if report.mc_samples else ""))
    return 0


def analyze(args, run) -> int:
    import os

    from cmbcube.errors import MissingFileError
    from cmbcube.recipe import SPLITS
    for split in csv(args.split) or ():          # checked here: the stage would fail on them with a bare ValueError
        if split not in SPLITS:
            raise InputError(f"--split {split!r}: allowed: {', '.join(SPLITS)}")
    if args.mask and not os.path.isfile(args.mask):
        raise MissingFileError(f"--mask {args.mask}: no such file (a HEALPix FITS mask, 1 = keep)")
    runs = "all" if args.runs == "all" else csv(args.runs)
    rep = run(args.store, runs, csv(args.split), args.f_sky, args.mask, progress=progress_option(args),
              force_size=args.force_size, estimator=args.estimator, **dask_options(args))
    if not rep.written and not rep.failed:
        print(f"nothing to do: {rep.already_done} (run, sim) pairs already analysed")
        return 0
    print(f"analysed {len(rep.written)} (run, sim) pair(s) in {rep.seconds:.1f} s: metrics and spectra in the cube")
    return failures(rep.failed)


def report(args, run) -> int:
    print(f"report: {run(args.store, args.out, args.split, csv(args.sims, int)).page}")
    return 0


def pipeline(args, run) -> int:
    done = run(args.recipe, args.store, overrides=args.overrides, report_dir=args.report, device=args.device,
               progress=progress_option(args), force_size=args.force_size, **dask_options(args))
    print(f"report: {done.page}")
    return 0


def view(args, run) -> int:
    print(run(args.store, args.product, args.split, args.sim, args.field, args.detector, args.run, args.rot,
              args.zoom, args.out).path)
    return 0


def ingest_cmbml(args, run) -> int:
    from cmbcube.interop.cmbml_scan import beam_sources, recipe_for, scan
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
    report = run(args.dir, args.store, progress=progress_option(args), name=args.name, units=args.units,
                 force_size=args.force_size, **dask_options(args))
    if not report.written and not report.failed:
        print(f"nothing to do: all {report.planned} sims of {report.source} are already in {report.store}")
        return 0
    print(f"ingested {len(report.written)} sim(s) from {report.source} into {report.store} in "
          f"{report.seconds:.1f} s ({report.already_done} were already there)")
    return failures(report.failed)


def export_cmbml(args, run) -> int:
    report = run(args.store, args.dir, csv(args.split), args.units, args.overwrite, progress=progress_option(args),
                 **dask_options(args))
    print(f"exported {len(report.written)} sim(s) to {report.destination}/Simulation in {report.seconds:.1f} s"
          + (f" ({len(report.skipped)} already there; --overwrite rewrites them)" if report.skipped else ""))
    return failures(report.failed)


def info(args) -> int:
    from cmbcube.cube import summary
    print(summary(args.store))
    return 0


def tag(args) -> int:
    from cmbcube.cube.icechunk_store import handles
    from cmbcube.cube.icechunk_versions import tag as make_tag
    if not handles(args.store):
        raise InputError(f"{args.store}: only Icechunk stores have versions (icechunk+file:///PATH or "
                         "icechunk+s3://BUCKET/PREFIX)")
    done = make_tag(args.store, args.name)
    print(f"tagged {args.store} {done['tag']} = snapshot {done['snapshot']} ({done['written_at']}: {done['message']})")
    return 0


def verify(args) -> int:
    from cmbcube.cube.verify import format_report, verify
    products = [p for chunk in args.products or [] for p in csv(chunk) or ()] or None
    report = verify(args.store, products, args.clear, args.threads, progress=progress_option(args))
    print(format_report(report))
    return 0 if report.ok else 1


def validate(args, run) -> int:
    from pathlib import Path

    out = Path(args.out) if args.out else None
    if out is not None and (out.is_dir() or not out.parent.is_dir()):      # checked before the work
        raise InputError(f"--out {args.out}: " + ("is a directory; name a file" if out.is_dir()
                                                  else f"no such directory {out.parent}"))
    report = run(args.store, args.sims, galaxy=not args.no_galaxy)
    print(report.text())
    if out is not None:
        out.write_text(report.to_json() + "\n")
    return 1 if report.failed else 0


def drop(args) -> int:
    from cmbcube.cube.drop import drop, format_report
    print(format_report(drop(args.store, args.product, args.run, args.force)))
    return 0


def assets(args) -> int:
    from cmbcube.interop import assets, fetch
    from cmbcube.recipe import load
    recipe = load(args.recipe, args.overrides)
    if not args.fetch:
        listed = assets.list_assets(recipe, args.destination)
        note = fetch.add_mirror_sizes(listed, args.base_url, args.connect_timeout) if args.base_url else None
        print(assets.format_listing(recipe, listed, args.destination) + (f"\nnote: {note}" if note else ""))
        return 0 if all(a.present for a in listed if a.needed) else 1
    report = fetch.fetch(recipe, args.destination, args.base_url, args.optional, args.connect_timeout,
                         progress=progress_option(args))     # an AssetError: main prints it, exit 1
    still = [a for a in assets.list_assets(recipe, args.destination) if a.needed and not a.present]
    print(fetch.format_fetch(report, still))
    return 1 if still or report.failed else 0


def check_recipe(args) -> int:
    from cmbcube.recipe import load
    from cmbcube.science.foregrounds import component_names
    recipe = load(args.recipe, args.overrides)
    from cmbcube.compute.limits import check_simulate
    r = recipe.data
    nsims = sum(recipe.splits.values())
    plan, forced = check_simulate(recipe, args.store or ".", None, None, args.workers, args.force_size,
                                  what=f"recipe {recipe.name}")
    print(f"recipe {recipe.name} is valid (hash {recipe.hash[:12]})")
    print("  sims: " + ", ".join(f"{k} {v}" for k, v in recipe.splits.items()) + f" = {nsims}")
    print(f"  nside {r['nside']} (sky model {r['sky_nside']}), detectors {r['detectors']}, fields {r['fields']}")
    fg = r["foregrounds"]
    print(f"  foregrounds: {fg['model']} {component_names(fg)} ({fg['vary']})")
    print("\n".join(plan.lines()))
    for problem in forced:
        print(f"  warning (--force-size): {problem}")
    if r["foregrounds"]["model"] == "pysm3":
        from cmbcube.interop.inputs import pysm_summary
        print("  " + pysm_summary(recipe))
    return 0
