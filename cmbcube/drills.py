"""Fault-drill hooks: production code calls them at fixed points; they do nothing unless a drill's
environment variable is set (each costs one environment lookup).

- ``hold(stage, *key)`` is called by a task between computing its unit of work and writing it
  (``SIM``: simulate, ``ILC``: ilc, ``ANALYZE``: analyze), by training after each optimiser
  step (``TRAIN``, key = epoch index, batch index) and by an Icechunk store's driver just before
  each commit (``COMMIT``, key = the stage, e.g. ``simulate``; its data is written, its snapshot not):

  - ``CMBCUBE_<STAGE>_TRACE=DIR``: first touch ``DIR/<key parts joined by ->-<pid>`` (which process
    holds which unit), so a test can kill exactly that process while the unit is in flight;
  - ``CMBCUBE_<STAGE>_DELAY=SECONDS``: then sleep that long.

- ``fail_if_injected(split, sim)`` (simulate): ``CMBCUBE_FAIL_SIMS="train/3,test/0"`` makes those sims
  raise, for tests of failure reports and resumption.

The tests' side (fixtures such as ``make_example_tree``) lives in :mod:`cmbcube.testing`, which no
module of cmbcube imports (tests/test_architecture.py).
"""
from __future__ import annotations

import os
import time


def hold(stage: str, *key) -> None:
    trace = os.environ.get(f"CMBCUBE_{stage}_TRACE")
    if trace:
        open(os.path.join(trace, "-".join(map(str, (*key, os.getpid())))), "w").close()
    delay = float(os.environ.get(f"CMBCUBE_{stage}_DELAY") or 0)
    if delay > 0:
        time.sleep(delay)


def fail_if_injected(split: str, sim: int) -> None:
    """``CMBCUBE_FAIL_SIMS="train/3,test/0"`` makes those sims raise."""
    wanted = os.environ.get("CMBCUBE_FAIL_SIMS", "")
    if f"{split}/{sim}" in [w.strip() for w in wanted.split(",") if w.strip()]:
        raise RuntimeError(f"injected failure for {split}/{sim} (CMBCUBE_FAIL_SIMS)")
