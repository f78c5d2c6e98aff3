"""Moved: the fault-drill hooks live in :mod:`cmbcube.testing` (``hold``).

This alias remains only for the modules of other branches of issue 12 that still import
``cmbcube.drills`` (stages/train.py, stages/analysis.py); delete it once they import
``cmbcube.testing``.
"""
from cmbcube.testing import hold  # noqa: F401
