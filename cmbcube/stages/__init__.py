"""The stage layer: one module per command (simulate, preprocess, ilc, train, predict, analyze, report,
view, ingest, export, validate, pipeline), each exposing ``run(...) -> StageReport`` (a subclass of
:class:`cmbcube.compute.fanout.StageReport`), fanned out over Dask by :mod:`cmbcube.compute` and
reading/writing only through the cube; the other modules here support one of them (simspec,
checkpoints, train_guard, augment, report_figures, report_ranking, report_sky)."""

import os as _os

from cmbcube.science import sht as _sht

# Threads per spherical-harmonic transform, in every process that runs a stage (Dask workers import
# the stage modules): $CMBCUBE_SHT_THREADS, else 1. The science layer itself reads no environment.
_threads = _os.environ.get("CMBCUBE_SHT_THREADS", "1") or "1"
if not _threads.isdigit() or int(_threads) < 1:
    from cmbcube.errors import InputError
    raise InputError(f"CMBCUBE_SHT_THREADS={_threads!r}: expected a whole number >= 1 (threads per transform)")
_sht.set_threads(int(_threads))
