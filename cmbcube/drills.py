"""Moved: the fault-drill hooks live in :mod:`cmbcube.testing` (``hold``).

This alias remains only for code owned by other branches of issue 12 that still imports
``cmbcube.drills`` (stages/train.py, stages/analysis.py, stages/ilc.py ``_clean_task``); delete it
once they import ``cmbcube.testing``.
"""
from cmbcube.testing import hold  # noqa: F401
