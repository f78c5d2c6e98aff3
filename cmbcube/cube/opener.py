"""The one way into a store: every ``zarr.open_group`` / ``zarr.open_array`` of cmbcube is here.

Reads go through the read guard (:mod:`cmbcube.cube.guard`) unless a function says otherwise, with
metadata bounds checked before anything is allocated; local paths and fsspec URLs (http(s) servers
that ignore Range requests included), Icechunk repositories and plain Zarr on object storage.

The ways in, each one function:

- :func:`open_dataset`: a lazy xarray view (``cmbcube.open``), guarded, bounds checked;
- :func:`open_group` (mode ``"r"``): the root group, guarded, bounds checked; any other mode: the
  root group for writing, read from every array's own metadata (driver and tasks writing units);
- :func:`read_group`: the root group, guarded (stages' input reads, ``CubeDataset``);
- :func:`source_group`: a path opened as :func:`open_group` does, or an open group passed through;
- :func:`fresh_group`: the root group from every array's own metadata, not guarded (housekeeping:
  verify, drop, done-flags);
- :func:`read_attrs`: the root attributes, guarded opening;
- :func:`consolidated_metadata`: the root's consolidated copy of the metadata, as stored (verify);
- :func:`open_flag`: an array inside a store the guard wraps (the guard's done-flag reads).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cmbcube.cube import icechunk_store as ics, objstore
from cmbcube.cube.base import StoreError, is_remote


def open_dataset(path: str, chunks="auto-inner", guard: bool = True, consistent: bool = False, **storage_options):
    """Lazy xarray view of a store (local path or fsspec URL); nothing is read until asked.

    Reads go through the guard (:mod:`cmbcube.cube.guard`): a finished unit whose chunk is missing or
    corrupted raises DamagedUnitError naming it; units not done yet read as NaN (fill).
    ``consistent``: each unit (sim, run x sim) reads all or nothing, fixed at its first read (see the guard).
    Metadata declaring sizes no cmbcube store has is refused first (:func:`check_bounds`)."""
    import warnings

    import xarray as xr
    import zarr
    if not is_remote(path) and not Path(path).exists():
        raise StoreError(f"{path}: no such store")
    import zarr.errors
    store = zarr_store(path, storage_options, guard, consistent)
    snapshot = ics.snapshot_of(store) if ics.handles(path) else None
    if is_remote(path):
        store = _metadata_memo()(store)          # the bounds check and xarray share one metadata request
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        try:
            check_bounds(zarr.open_group(store, mode="r", zarr_format=3), path)
            ds = xr.open_zarr(store, chunks={} if chunks == "auto-inner" else chunks, zarr_format=3)
        except (OSError, zarr.errors.BaseZarrError) as err:      # missing, unreachable, not a store
            raise StoreError(f"{path}: cannot open a cube there ({type(err).__name__}: {err})") from None
        except StoreError:
            raise
        except ValueError as err:          # xarray: arrays disagree on a dimension's length (damaged metadata)
            raise StoreError(f"{path}: its arrays' metadata disagree ({str(err)[:300]}); `cmbcube verify {path}` "
                             "says what is damaged") from None
    from cmbcube.cube.health import warn_damaged_metadata
    warn_damaged_metadata(path)            # read through the consolidated copy: a damaged array file is named
    if snapshot:
        ds.attrs["icechunk_snapshot"] = snapshot      # the version read, for citing (provenance)
    return ds


MAX_NSIDE = 8192                        # the recipe's limit
MAX_PIXELS = 12 * MAX_NSIDE ** 2        # the pixel axis, and the largest chunk (one map) any stage writes
MAX_AXIS = 10_000_000                   # every other axis (sims, runs, detectors, epochs...)


def check_bounds(group, path: str) -> None:
    """Refuse a store whose metadata declares sizes no cmbcube store has (a hostile or damaged
    zarr.json), before anything is allocated: every axis at most MAX_AXIS long (``pixel``:
    12 x 8192^2), at most 8 dimensions, chunks and shards no larger than their array, and no chunk
    larger than one map at nside 8192 (what a read allocates at once).  Reads only the metadata
    zarr already holds (the consolidated copy).  StoreError names the array and the figures.
    A store whose run removal was interrupted (cmbcube drop) is refused too, naming the command that
    finishes it (:func:`cmbcube.cube.health.refuse_interrupted_drop`)."""
    from cmbcube.cube.health import refuse_interrupted_drop
    refuse_interrupted_drop(group.attrs, path)
    for name, arr in group.arrays():
        shape = tuple(int(n) for n in arr.shape)
        dims = tuple(getattr(arr.metadata, "dimension_names", None) or ()) or (None,) * len(shape)
        problem = None
        if len(shape) > 8:
            problem = f"{len(shape)} dimensions (at most 8)"
        for dim, n in zip(dims, shape):
            cap = MAX_PIXELS if dim in ("pixel", None) else MAX_AXIS
            if problem is None and n > cap:
                problem = f"dimension {dim or '?'} of length {n} (at most {cap})"
        for what, grid in (("chunk", arr.chunks), ("shard", getattr(arr, "shards", None))):
            grid = tuple(int(c) for c in grid) if grid else ()
            if problem is None and grid and any(c > max(n, 1) for c, n in zip(grid, shape)):
                problem = f"{what} shape {grid} larger than the array {shape}"
        chunk = int(np.prod([int(c) for c in arr.chunks], dtype=object)) if arr.chunks else 1
        if problem is None and chunk > MAX_PIXELS:
            problem = f"chunks of {chunk} elements (at most {MAX_PIXELS}, one map at nside {MAX_NSIDE})"
        if problem:
            raise StoreError(f"{path}: array {name!r} declares {problem}: no cmbcube store has that; refusing to "
                             "read it (damaged or hostile metadata; nothing was allocated)")


def _metadata_memo():
    """A zarr store wrapper that fetches each metadata document (zarr.json) once."""
    from zarr.storage import WrapperStore

    class MetadataMemo(WrapperStore):
        def __init__(self, store):
            super().__init__(store)
            self._memo = {}

        async def get(self, key, prototype, byte_range=None):
            if byte_range is not None or not key.endswith("zarr.json"):
                return await self._store.get(key, prototype, byte_range)
            if key not in self._memo:
                self._memo[key] = await self._store.get(key, prototype, byte_range)
            return self._memo[key]

    return MetadataMemo


def zarr_store(path: str, storage_options: dict | None = None, guard: bool = True, consistent: bool = False):
    """What zarr opens for ``path``, read-only: a local path as a LocalStore; a URL as an fsspec
    store (``storage_options`` go to fsspec, e.g. ``anon=True`` or ``key=/secret=`` for s3://).
    With ``guard`` (the default) wrapped in :class:`cmbcube.cube.guard.GuardedStore`: a finished unit
    whose chunk is missing or corrupted raises DamagedUnitError instead of reading as fill values.

    http(s) stores are read through a filesystem that also copes with servers that ignore
    Range requests (``python -m http.server``): fsspec would hand zarr the whole file for a
    byte range and the read would fail its checksum; here the range is cut out locally.
    """
    path = str(path)
    if ics.handles(path):
        inner = ics.store_for(path)           # the running task's fork, the driver's session or the version
    elif not is_remote(path):
        if not guard:
            return path
        from zarr.storage import LocalStore
        inner = LocalStore(path, read_only=True)
    else:
        from zarr.storage import FsspecStore
        if path.startswith(("http://", "https://")):
            fs = _range_tolerant_http()(asynchronous=True, **(storage_options or {}))
            inner = FsspecStore(fs, path=path.rstrip("/"), read_only=True)
        elif objstore.handles(path):
            inner = objstore.zarr_store(path, read_only=True, storage_options=storage_options)
        else:
            inner = FsspecStore.from_url(path, storage_options=storage_options or None, read_only=True)
    if not guard:
        return inner
    from cmbcube.cube.guard import GuardedStore
    return GuardedStore(inner, path, consistent, open_array=open_flag)


async def open_flag(store, path: str):
    """The array ``path`` of an already made zarr ``store`` (async; what the guard reads done-flags and
    run names with, inside the store it wraps)."""
    from zarr.api.asynchronous import open_array
    return await open_array(store=store, path=path, mode="r", zarr_format=3)


def read_group(source, storage_options: dict | None = None):
    """The store's root group for reading through the guard (stages' input reads): ``source`` a path or
    URL (guarded :func:`zarr_store`), or a zarr store already made (opened as it is)."""
    import zarr
    made = not isinstance(source, (str, os.PathLike))
    return zarr.open_group(source if made else zarr_store(str(source), storage_options), mode="r")


def open_group(path: str, mode: str = "r"):
    """The root group: read through the guard with its bounds checked (mode "r"), or for writing
    from every array's own metadata (driver and tasks writing their units)."""
    import zarr
    if mode == "r":
        group = zarr.open_group(zarr_store(path), mode="r", zarr_format=3)
        check_bounds(group, path)
        return group
    return zarr.open_group(ics.target(path, mode), mode=mode, use_consolidated=False)


def source_group(source):
    """The root group of ``source``: a path (opened read-only, guarded), or an already open zarr group
    (or xarray Dataset) of the cube, passed through so a task reads several things from one opening."""
    return open_group(str(source)) if isinstance(source, (str, os.PathLike)) else source


def fresh_group(path: str, mode: str = "r"):
    """The root group read from every array's own metadata (not the consolidated copy); not guarded."""
    import zarr
    return zarr.open_group(ics.target(path, mode), mode=mode, use_consolidated=False)


def read_attrs(path: str) -> dict:
    """Return the root attributes of the store at ``path``; StoreError if it is no Zarr store."""
    import zarr
    try:
        group = zarr.open_group(zarr_store(path), mode="r", zarr_format=3)
    except Exception as err:  # noqa: BLE001 - zarr raises several types for "not a store"
        raise StoreError(f"{path}: not a readable Zarr store ({type(err).__name__}: {err})") from None
    return dict(group.attrs)


def consolidated_metadata(path: str):
    """The consolidated metadata the root ``zarr.json`` of a local store holds (None when it holds none);
    what zarr raises when the root cannot be read."""
    import zarr
    return zarr.open_group(path, mode="r", use_consolidated=True).metadata.consolidated_metadata


_RANGE_WARNED: set = set()


def _range_tolerant_http():
    import logging
    from urllib.parse import urlsplit

    from fsspec.implementations.http import HTTPFileSystem

    class RangeTolerantHTTP(HTTPFileSystem):
        async def set_session(self):
            # fsspec closes the sessions of synchronous instances only; close ours too (at exit at the
            # latest) instead of leaving aiohttp's 'Unclosed client session' warnings behind
            if self._session is None:
                import asyncio
                import weakref
                session = await super().set_session()
                weakref.finalize(self, self.close_session, asyncio.get_running_loop(), session)
            return self._session

        async def _cat_file(self, url, start=None, end=None, **kwargs):
            if start is None and end is None:
                return await super()._cat_file(url, **kwargs)
            if start == end:
                return b""
            kw = self.kwargs.copy()
            kw.update(kwargs)
            headers = kw.pop("headers", {}).copy()
            headers["Range"] = await self._process_limits(url, start, end)
            session = await self.set_session()
            async with session.get(self.encode_url(url), headers=headers, **kw) as r:
                out = await r.read()
                self._raise_not_found_for_status(r, url)
                partial = r.status == 206
            if partial:
                return out
            host = urlsplit(url).netloc
            if host not in _RANGE_WARNED:
                _RANGE_WARNED.add(host)
                logging.getLogger("cmbcube").warning(
                    "%s ignores HTTP Range requests: every read downloads whole shard files "
                    "(serve the store with a server that supports ranges, e.g. nginx or an object store)", host)
            return out[slice(start, end)]

    return RangeTolerantHTTP


