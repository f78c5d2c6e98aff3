"""One fan-out for every stage that runs one task per unit of work (a sim, a (run, sim) pair).

simulate, ilc, analyze, ingest-cmbml and export-cmbml all do the same thing around their
task body: a progress bar over the units to do, a Dask client (or none: in this process),
:func:`cmbcube.compute.cluster.run_tasks`, each finished unit recorded in a report, failures
collected (never raised, so every unit that can finish does), the store's metadata
consolidated at the end and the wall time measured.  :func:`fan_out` is that, once;
:class:`StageReport` is the report it fills.

A stage subclasses :class:`StageReport` for its own fields and, where a unit's result means
more than "written", overrides :meth:`StageReport.add` (simulate sums timings, export counts
skipped sims) or :meth:`StageReport.add_failure` (simulate adds a disk-full hint)::

    @dataclasses.dataclass
    class MyReport(StageReport):
        store: str

    report = MyReport(store, already_done=n_done)
    fan_out(report, my_task, (store, config), todo, label="my-stage", cluster=recipe["cluster"],
            scheduler=scheduler, scheduler_file=scheduler_file, workers=workers, progress=progress,
            where=store, consolidate=store)
    # my_task(store, config, *item) runs once per item of todo
"""
from __future__ import annotations

import dataclasses
import logging
import time

log = logging.getLogger("cmbcube")


@dataclasses.dataclass(kw_only=True)
class StageReport:
    """What a fanned-out stage did: units written, units failed, units already done before, seconds.

    Its fields are keyword-only, so a subclass puts its own (positional) fields first.
    """
    written: list = dataclasses.field(default_factory=list)    # items, in the order they finished
    failed: list = dataclasses.field(default_factory=list)     # (*item, "ErrorType: message")
    already_done: int = 0                                      # units finished before this run
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def add(self, item: tuple, result) -> None:
        """One unit finished with the task's return value ``result``."""
        self.written.append(item)

    def add_failure(self, item: tuple, error: BaseException) -> None:
        """One unit failed (after the scheduler's retries); its data is not flagged done."""
        self.failed.append((*item, failure_text(error)))


def failure_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def fan_out(report: StageReport, fn, args: tuple, todo: list, *, label: str, cluster: dict | None,
            scheduler: str | None = None, scheduler_file: str | None = None, workers: int | None = None,
            progress: bool | None = None, desc: str | None = None, bar_items=None, where: str | None = None,
            consolidate: str | None = None, lenient_consolidate: bool = False) -> StageReport:
    """Run ``fn(*args, *item)`` for every item of ``todo`` and record each outcome in ``report``.

    - ``label``: the Dask key prefix (and the bar's name unless ``desc``);
    - ``cluster``, ``scheduler``, ``scheduler_file``, ``workers``: as
      :func:`cmbcube.compute.cluster.client_for` (the recipe's ``cluster`` section, the CLI options);
    - ``progress``, ``bar_items`` (what the bar's log line lists; default ``todo``), ``where``: as
      :func:`cmbcube.progress.bar`;
    - ``consolidate``: a store whose metadata is consolidated when the units are done (also after
      a failure or an interrupt: every finished unit stays readable).  With ``lenient_consolidate``
      a failed consolidation is only logged when units failed too (their list is what the caller
      needs), for stages that change no metadata;
    - ``report.seconds`` gets the wall time, consolidation included.

    Returns ``report``.  Failures never raise: they land in ``report.failed``.
    """
    from cmbcube.compute.cluster import client_for, run_tasks
    from cmbcube.cube import icechunk_batches, icechunk_store
    from cmbcube.progress import bar as progress_bar
    t0 = time.perf_counter()
    bar = progress_bar(len(todo), desc or label, progress=progress, items=todo if bar_items is None else bar_items,
                       where=where)

    def on_done(item, result, error):
        if error is None:
            report.add(item, result)
        else:
            report.add_failure(item, error)
        bar.update(1, failed=error is not None)         # a cmbcube.progress.Progress

    try:
        with client_for(cluster, scheduler, scheduler_file, workers) as client:
            if consolidate is not None and icechunk_store.handles(consolidate):    # forks, batch commits
                icechunk_batches.run_batches(consolidate, client, fn, args, todo, label, on_done, run_tasks)
            else:
                run_tasks(client, fn, args, todo, label, on_done)
    finally:
        bar.close()
        try:
            if consolidate is not None:
                _consolidate(consolidate, report, lenient_consolidate)
        finally:
            report.seconds = time.perf_counter() - t0
    return report


def _consolidate(store: str, report: StageReport, lenient: bool) -> None:
    from cmbcube import cube
    try:
        cube.consolidate(store)
    except cube.StoreError as err:
        if not (lenient and report.failed):
            raise
        log.warning("%s", err)          # the old consolidated copy stays right; keep the failures' list
