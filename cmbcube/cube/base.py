"""The bottom of cube/: what every other cube module may import without importing any of them.

The store's error class, whether a path is a URL, the text of an OS error, the names of the
housekeeping attributes (drop), and which chunk files hold one unit of work.  Nothing here opens
a store (:mod:`cmbcube.cube.opener` does).
"""
from __future__ import annotations

import itertools
import os

from cmbcube.errors import InputError, param

DROPPED_ATTR = "cmbcube_dropped"            # JSON list of products removed by `cmbcube drop`
DROP_JOURNAL_ATTR = "cmbcube_dropping_run"  # set while a run is being removed from the run axis


class StoreError(InputError, RuntimeError):
    """The store path cannot be used as asked (exists with another recipe, unreadable...)."""


def is_remote(path: str) -> bool:
    """Tell whether ``path`` is a URL rather than a local path."""
    return "://" in str(path)


def os_error_message(path: str, err: OSError, action: str) -> str:
    """'<store>: could not <action>: <file>: <OS error> (<what to do>)' for StoreError."""
    where = err.filename or path
    reason = err.strerror or str(err)
    hint = {28: f"free some space (cmbcube drop removes products) or use another {param('store')} path",
            122: f"the disk quota is exhausted: free some space or use another {param('store')} path",
            13: "check the permissions of the store directory", 1: "check the permissions of the store directory",
            30: f"the file system is read-only: use another {param('store')} path"}.get(err.errno, "")
    return f"{path}: could not {action}: {where}: {reason}" + (f" ({hint})" if hint else "")


def array_dims(arr) -> tuple:
    """Return the dimension names of a Zarr array (empty when it has none)."""
    return tuple(getattr(arr.metadata, "dimension_names", None) or ())


def outer_chunks(arr) -> tuple:
    """Shape of the array's storage units: the shard shape for sharded arrays, else the chunk shape."""
    return tuple(arr.metadata.chunk_grid.chunk_shape)


def unit_files(path: str, arr, name: str, leading: tuple) -> list[tuple[str, str]]:
    """(key, local file) of every chunk file (the shard, for sharded arrays) holding
    ``arr[leading]``: what one unit of work writes, e.g. (split, sim) or (run, split, sim)."""
    outer = outer_chunks(arr)
    grid = [-(-s // c) for s, c in zip(arr.shape, outer)]
    lead = [int(i) // c for i, c in zip(leading, outer)]
    out = []
    for rest in itertools.product(*[range(g) for g in grid[len(lead):]]):
        key = arr.metadata.encode_chunk_key(tuple(lead) + tuple(rest))
        out.append((key, os.path.join(str(path), name, *key.split("/"))))
    return out
