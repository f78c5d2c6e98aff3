"""The stage layer: each module is one step of the benchmark (simulate, preprocess, ilc, train,
predict, analyze, report, view) fanned out over Dask and reading/writing only through the cube."""

import os as _os

from cmbcube.science import sht as _sht

# Threads per spherical-harmonic transform, in every process that runs a stage (Dask workers import
# the stage modules): $CMBCUBE_SHT_THREADS, else 1. The science layer itself reads no environment.
_threads = _os.environ.get("CMBCUBE_SHT_THREADS", "1") or "1"
if not _threads.isdigit() or int(_threads) < 1:
    from cmbcube.errors import InputError
    raise InputError(f"CMBCUBE_SHT_THREADS={_threads!r}: expected a whole number >= 1 (threads per transform)")
_sht.set_threads(int(_threads))
