"""A stage's units of work on an Icechunk store: one forked session per task, merged by the driver,
committed every few units with a message naming the stage and the units.

The tasks are submitted as usual (:func:`cmbcube.compute.cluster.run_tasks`); each carries its own
fork of the driver's session (pickled to the worker with the task, back with its result) and writes
through it (:func:`cmbcube.cube.icechunk_store.store_for` finds it).  As tasks finish, the driver
merges their forks into its current session and commits every ``CMBCUBE_COMMIT_UNITS`` units
(default 64) or ``CMBCUBE_COMMIT_SECONDS`` seconds (default 60), and once at the end.  A task that
fails leaves nothing: its fork is never merged.  A stage killed between commits keeps every commit
made; its uncommitted units are simply not done, and a rerun does them.
"""
from __future__ import annotations

import os
import time

from cmbcube.cube import icechunk_store as ics


class ForkToken:
    """A task's forked session, passed as the last positional argument (its str is short: it goes
    into the Dask key)."""

    def __init__(self, fork):
        self.fork = fork

    def __str__(self):
        return "ic"


class Forked:
    """``fn`` run with the store's writes going to the task's fork; returns (result, fork)."""

    def __init__(self, fn, url: str):
        self.fn, self.url = fn, url
        self.__name__ = getattr(fn, "__name__", "task")

    def __call__(self, *args):
        *args, token = args
        ics.set_task_fork(self.url, token.fork)
        try:
            result = self.fn(*args)
        finally:
            ics.set_task_fork(self.url, None)
        return result, token.fork


def _units(items) -> str:
    """'train 0-3, test 0, 2' from [(split, sim)...]; '(run 1) test 0-1' from [(run, split, sim)...]."""
    groups: dict = {}
    for item in items:
        *head, last = item
        groups.setdefault(" ".join(map(str, head)), []).append(last)
    parts = []
    for head, sims in groups.items():
        sims = sorted(int(s) for s in sims) if all(isinstance(s, int) or str(s).isdigit() for s in sims) else sims
        if sims and isinstance(sims[0], int) and sims == list(range(sims[0], sims[0] + len(sims))) and len(sims) > 2:
            parts.append(f"{head} {sims[0]}-{sims[-1]}".strip())
        else:
            parts.append(f"{head} {', '.join(map(str, sims))}".strip())
    return "; ".join(parts)


def _every() -> tuple[int, float]:
    try:
        units = max(1, int(os.environ.get("CMBCUBE_COMMIT_UNITS", "64")))
        seconds = float(os.environ.get("CMBCUBE_COMMIT_SECONDS", "60"))
    except ValueError:
        raise ics.IcechunkError("CMBCUBE_COMMIT_UNITS / CMBCUBE_COMMIT_SECONDS: a positive number") from None
    return units, seconds


def run_batches(store: str, client, fn, args: tuple, todo: list, label: str, on_done, run_tasks) -> list[str]:
    """``run_tasks`` over ``todo`` with forks, merged and committed as described above; returns the
    snapshot ids committed."""
    url = ics.parse(store).url
    ics.commit(store)                           # the driver's own changes first (a new run, new arrays)
    base = ics.writable_session(store)
    ics.discard(store)                          # nothing uncommitted: base only hands out forks
    forks = [ForkToken(base.fork()) for _ in todo]
    every, seconds = _every()
    state = {"session": base, "merged": [], "t0": time.monotonic(), "snaps": []}

    def flush():
        if state["merged"]:
            items = state["merged"]
            message = f"{label}: {len(items)} unit(s): {_units(items)}"
            state["snaps"].append(ics.commit_session(store, state["session"], message,
                                                     {"stage": label, "read_from": base.snapshot_id,
                                                      "units": [list(map(str, i)) for i in items]}))
            state["session"] = ics.repository(store).writable_session(state["session"].branch or ics.BRANCH)
            state["merged"], state["t0"] = [], time.monotonic()

    def done(item, result, error):
        item = tuple(item[:-1])
        if error is None:
            result, fork = result
            state["session"].merge(fork)
            state["merged"].append(item)
            if len(state["merged"]) >= every or time.monotonic() - state["t0"] >= seconds:
                flush()
        on_done(item, result, error)

    try:
        run_tasks(client, Forked(fn, url), args, [(*item, tok) for item, tok in zip(todo, forks)], label, done)
    finally:
        flush()                                 # every unit that finished stays, even after an interrupt
    return state["snaps"]
