"""``cmbcube run``: simulate -> preprocess -> ilc -> train -> predict -> analyze -> report.

Every stage skips what is already done, so a second run is quick.
"""
from __future__ import annotations

import time
from pathlib import Path

from cmbcube.errors import CmbcubeError
from cmbcube.stages import analyze as analysis
from cmbcube.stages import checkpoints, ilc, predict, preprocess, report, simulate, train, train_guard
from cmbcube.recipe import Recipe, load


class StageFailed(CmbcubeError, RuntimeError):
    """A stage of ``cmbcube run`` left failed tasks: the pipeline stops there (exit status 1); rerunning
    the same command retries them."""


def run(recipe: Recipe | str, store: str, scheduler=None, scheduler_file=None, workers=None, overrides=(),
        report_dir: str | None = None, device: str | None = None, progress=None, say=print,
        force_size: bool = False) -> Path:
    if not isinstance(recipe, Recipe):
        recipe = load(recipe, overrides)
    cfg = recipe["pipeline"]
    if scheduler is None and scheduler_file is None and recipe["cluster"]["kind"] in ("local", "slurm"):
        # one cluster (local processes or SLURM jobs) for every stage: workers, and their
        # compiled code, are reused instead of each stage starting (or submitting) its own
        from cmbcube.stages.cluster import client_for
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
    step(f"preprocess: statistics {out['status']}", started)
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
        if found is not None and found.state is not None and checkpoints.finished(found.state):
            step(f"train {model}: already trained ({found.checkpoint.name})", started)   # all epochs or stopped early
        else:
            resume = found is not None      # killed earlier: continue it
            t = train.train(store, config, device=device, resume=resume, progress=progress, force_size=force_size)
            step(f"train {model}: {t.epochs_done} epochs, valid loss {t.valid_loss[-1]:.4g}", started)
        started = time.perf_counter()
        p = predict.predict(store, model, splits=splits, device=device, progress=progress, force_size=force_size)
        step(f"predict {model}: {len(p.written)} new sim(s)", started)
    started = time.perf_counter()
    a = analysis.run(store, splits=splits, f_sky=float(cfg["f_sky"]), progress=progress, force_size=force_size,
                     **cluster)
    if a.failed:
        raise StageFailed(f"analyze: {len(a.failed)} failed, e.g. {a.failed[0]}")
    step(f"analyze: {len(a.written)} new (run, sim) pair(s)", started)
    started = time.perf_counter()
    page = report.build(store, report_dir or str(Path(str(store).rstrip("/")).with_suffix(".report")),
                        split=splits[0])
    step("report", started)
    return page
