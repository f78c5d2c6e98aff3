"""``cmbcube run``: simulate -> preprocess -> ilc -> train -> predict -> analyze -> report.

Every stage skips what is already done, so a second run is quick.
"""
from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path

from cmbcube.errors import CmbcubeError, command, param
from cmbcube.recipe import Recipe, load
from cmbcube.stages import (
    analyze as analysis,
    checkpoints,
    ilc,
    predict,
    preprocess,
    report,
    simulate,
    train,
    train_guard,
)


class StageFailed(CmbcubeError, RuntimeError):
    """A stage of ``cmbcube run`` left failed tasks: the pipeline stops there (exit status 1); rerunning
    the same command retries them."""


def default_report_dir(store: str) -> str:
    """``STORE.report`` beside a local store; for a store given by URL (Icechunk, s3://) a folder in the
    current directory named after the location (never a folder named 'icechunk+file:' or 's3:')."""
    text = str(store).rstrip("/")
    if "://" not in text:
        return str(Path(text).with_suffix(".report"))
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.split("://", 1)[1].split("@")[0]).strip("_")[:200] + ".report"


def check_existing_run(store: str, found, config) -> None:
    """What ``cmbcube run`` may reuse of a run already there: one this store knows, trained (or being
    trained) for the recipe's ``pipeline.epochs``; anything else is a RunExists (exit 2) saying what to do."""
    if not found.in_store:
        raise train_guard.RunExists(
            f"{found.folder} holds checkpoints of a run {found.name!r} that {store} does not know (left by an "
            f"earlier store of that name?); nothing was changed. Move that folder away, or use another "
            f"{param('store')}")
    recorded = json.loads(found.state["config"]) if found.state is not None else {}
    if recorded and int(recorded.get("epochs", config.epochs)) != config.epochs:
        raise train_guard.RunExists(
            f"run {found.name!r} in {store} was trained for {recorded['epochs']} epochs and the recipe asks for "
            f"{config.epochs} (pipeline.epochs); nothing was changed. Set pipeline.epochs={recorded['epochs']} "
            f"to use it, or `{command('drop', store, 'run', run=found.name)}` to train it again")
    if recorded and not checkpoints.finished(found.state):
        changed = config.changed_from(recorded, ignore=("early_stopping",))
        if changed:       # e.g. killed before cmbcube's defaults changed: resuming would mix two trainings
            raise train_guard.RunExists(
                f"run {found.name!r} in {store} was started with other training settings than `cmbcube run` uses "
                f"now ({', '.join(f'{k}: {a!r} -> {b!r}' for k, (a, b) in sorted(changed.items()))}) and did not "
                f"finish; nothing was changed. `{command('drop', store, 'run', run=found.name)}` to train it again, or "
                f"finish it as it was started: `{command('train', store, model=found.name, resume=True)}` with "
                f"those settings as options (`{param('published', True)}` for a run started with the published "
                "settings)")


def run(recipe: Recipe | str, store: str, scheduler=None, scheduler_file=None, workers=None, overrides=(),
        report_dir: str | None = None, device: str | None = None, progress=None, say=print,
        force_size: bool = False) -> report.ReportPage:
    """Every stage in turn, each skipping what is done; the report is the last stage's (its page, and the
    whole pipeline's wall time)."""
    if not isinstance(recipe, Recipe):
        recipe = load(recipe, overrides)
    cfg = recipe["pipeline"]
    if scheduler is None and scheduler_file is None and recipe["cluster"]["kind"] in ("local", "slurm"):
        # one cluster (local processes or SLURM jobs) for every stage: workers, and their
        # compiled code, are reused instead of each stage starting (or submitting) its own
        from cmbcube.compute.cluster import client_for
        with client_for(recipe["cluster"], workers=workers) as client:
            return run(recipe, store, client.scheduler.address, None, None, (), report_dir, device, progress, say,
                       force_size)
    cluster = dict(scheduler=scheduler, scheduler_file=scheduler_file, workers=workers)
    t0 = time.perf_counter()

    def step(name, started):
        say(f"[{time.perf_counter() - t0:6.1f} s] {name} ({time.perf_counter() - started:.1f} s)")

    started = time.perf_counter()
    rep = simulate.run(recipe, store, progress=progress, force_size=force_size, **cluster)
    if rep.failed:
        raise StageFailed(f"simulate: {len(rep.failed)} sim(s) failed, e.g. {rep.failed[0]}; rerun to retry")
    step(f"simulate: {len(rep.written)} new sim(s), {rep.already_done} already done", started)
    started = time.perf_counter()
    out = preprocess.run(store, progress=progress, **cluster)
    step(f"preprocess: statistics {out.status}", started)
    splits = tuple(cfg["splits"])
    for method in cfg["ilc"]:
        started = time.perf_counter()
        r = ilc.run(store, ilc.ILCConfig(method=method), splits=splits, progress=progress, force_size=force_size,
                    **cluster)
        if r.failed:
            raise StageFailed(f"ilc {method}: {len(r.failed)} sim(s) failed, e.g. {r.failed[0]}")
        step(f"ilc {method}: {len(r.written)} new sim(s)", started)
    for model in cfg["models"]:
        started = time.perf_counter()
        config = train.TrainConfig(model=model, epochs=cfg["epochs"], **train.defaults(model))
        found = train_guard.find(store, model)
        if found is not None:
            check_existing_run(store, found, config)
            # a run started before early stopping was the default resumes with the patience it recorded
            config = dataclasses.replace(config, early_stopping=train.recorded_patience(store, model,
                                                                                       config.early_stopping))
        if found is not None and found.state is not None and checkpoints.finished(found.state):
            step(f"train {model}: already trained ({found.checkpoint.name})", started)   # all epochs or stopped early
        else:
            resume = found is not None      # killed earlier: continue it
            t = train.run(store, config, device=device, resume=resume, progress=progress, force_size=force_size)
            step(f"train {model}: {t.epochs_done} epochs, valid loss {t.valid_loss[-1]:.4g}", started)
        started = time.perf_counter()
        p = predict.run(store, model, splits=splits, device=device, progress=progress, force_size=force_size)
        step(f"predict {model}: {len(p.written)} new sim(s)", started)
    started = time.perf_counter()
    a = analysis.run(store, splits=splits, f_sky=float(cfg["f_sky"]), progress=progress, force_size=force_size,
                     **cluster)
    if a.failed:
        raise StageFailed(f"analyze: {len(a.failed)} failed, e.g. {a.failed[0]}")
    step(f"analyze: {len(a.written)} new (run, sim) pair(s)", started)
    started = time.perf_counter()
    page = report.run(store, report_dir or default_report_dir(store), split=splits[0])
    step("report", started)
    return dataclasses.replace(page, seconds=time.perf_counter() - t0)
