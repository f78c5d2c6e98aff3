"""Testing hooks for fault drills, off unless their environment variables are set.

``hold(stage, *key)`` is called by a task between computing its unit of work and writing it
(``SIM``: simulate, ``ILC``: ilc, ``ANALYZE``: analyze) and by training after each optimiser
step (``TRAIN``, key = epoch index, batch index):

- ``CMBCUBE_<STAGE>_TRACE=DIR``: first touch ``DIR/<key parts joined by ->-<pid>`` (which process
  holds which unit), so a test can kill exactly that process while the unit is in flight;
- ``CMBCUBE_<STAGE>_DELAY=SECONDS``: then sleep that long.
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
