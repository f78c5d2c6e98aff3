"""The store as a whole: create or reuse it, its attributes, locks, all-or-nothing metadata changes,
consolidation and whole arrays (create, delete).  Opening it is :mod:`cmbcube.cube.opener`'s.

Writing rules (measured: two writers in one shard lose data):
- only the driver writes metadata (template creation, consolidation);
- a task owns whole shards: everything of one (split, sim) for a product;
- a per-sim done-flag (its own unsharded chunk) is written after the data.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from cmbcube.cube import icechunk_store as ics, layout, location, objstore
from cmbcube.cube.base import DROPPED_ATTR, StoreError, is_remote, os_error_message
from cmbcube.cube.opener import fresh_group, open_group, read_attrs
from cmbcube.errors import param
from cmbcube.recipe import Recipe, from_store_attrs


def create_or_check(path: str, recipe: Recipe) -> str:
    """Create the store for ``recipe``; if it exists with the same recipe, reuse it.

    Returns "created" or "existing".  A store made from another recipe is refused
    (StoreError) and left untouched.
    """
    if is_remote(path) and not ics.handles(path) and not objstore.handles(path):
        raise StoreError(f"simulate writes local stores, Icechunk repositories ({ics.SPELLING}) or plain Zarr on "
                         f"{objstore.SPELLING}; {path} is another URL")
    target = Path(path)
    if ics.exists(path) if ics.handles(path) else objstore.exists(path) if objstore.handles(path) else target.exists():
        attrs = read_attrs(path)
        if attrs.get("recipe_hash") != recipe.hash:
            raise StoreError(_recipe_mismatch(path, attrs, recipe))
        version = layout.foreground_model_attrs(recipe["foregrounds"])["foreground_model_version"]
        if recipe["foregrounds"]["model"].startswith("synthetic") and \
                attrs.get("foreground_model_version", "1.0") != version:
            raise StoreError(f"{path} was simulated with version {attrs.get('foreground_model_version', '1.0')} "
                             f"of the {recipe['foregrounds']['model']!r} sky and this cmbcube has version {version}; "
                             f"refusing to mix skies. Use a new {param('store')} path (the earlier Gaussian sky is "
                             "foregrounds.model: synthetic-gaussian)")
        gone = [d["product"] for d in json.loads(attrs.get(DROPPED_ATTR, "[]")) if d["product"] in ("obs", "cmb")]
        from cmbcube.cube.sims import pending
        if gone and pending(path):
            raise StoreError(f"{path}: {' and '.join(gone)} were dropped from this store (cmbcube drop), so its "
                             f"remaining sims cannot be simulated into it; simulate into a new {param('store')} path")
        location.check_writable_store_state(path, "simulate")          # metadata parses, no drop half done, writable
        return "existing"
    if ics.handles(path) or objstore.handles(path):
        return (ics if ics.handles(path) else objstore).create(path, *layout.template(recipe))
    location.check_store_path(path)             # a name the file system can hold, with room for NAME.runs
    location.check_new_store_folder(path)       # exists and can be written in (tried: root ignores modes)
    ds, encoding = layout.template(recipe)

    def build(tmp):
        ds.to_zarr(tmp, mode="w-", compute=False, encoding=encoding, zarr_format=3, consolidated=False)
        consolidate(tmp)

    try:
        location.atomic_create(target, build)
    except OSError as err:
        import errno
        if err.errno in (errno.ENOTEMPTY, errno.EEXIST) and target.exists():
            return create_or_check(path, recipe)     # another process created it meanwhile: check it as existing
        raise StoreError(os_error_message(path, err, "create the store") + "; nothing was created") from err
    return "created"


@contextlib.contextmanager
def sims_lock(path: str, stage: str):
    """Held by the driver of a stage that writes sims (simulate, ingest-cmbml) for its whole run:
    a second such process on the same store is refused at once (StoreError, exit 2) instead of
    computing and writing the same sims again.  An exclusive, non-blocking flock on the store's
    ``sim_done`` directory (never replaced, so the lock is not lost), released by the kernel when the
    process ends, even by SIGKILL.  Independent of :func:`store_lock`: stages writing other products
    (ilc, train, analyze) are not held up.  A no-op where the file system refuses directory locks."""
    import fcntl
    try:
        fd = os.open(os.path.join(path, "sim_done"), os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(f"{path}: another process (cmbcube simulate or ingest-cmbml) is writing sims into this "
                             f"store right now; {stage} refuses to run beside it so that no sim is computed or written "
                             "twice. Wait for it to finish (or stop it), then rerun: it resumes where that one "
                             "stopped") from None
        except OSError:
            pass                                     # no directory locks here (some network file systems)
        yield
    finally:
        os.close(fd)                                 # releases the lock


def _recipe_mismatch(path, attrs, recipe) -> str:
    if "recipe_hash" not in attrs:
        return f"{path} exists and is not a cmbcube store; choose another {param('store')} path"
    old = from_store_attrs(attrs)
    diffs = []

    def walk(a, b, prefix):
        for key in sorted(set(a) | set(b)):
            va, vb = a.get(key), b.get(key)
            where = f"{prefix}{key}"
            if isinstance(va, dict) and isinstance(vb, dict):
                walk(va, vb, where + ".")
            elif va != vb:
                diffs.append(f"{where}: store has {va!r}, recipe has {vb!r}")
    walk(json.loads(json.dumps(old.hashed)), json.loads(json.dumps(recipe.hashed)), "")
    return (f"{path} was made from a different recipe ({attrs.get('recipe_name')!r}, hash "
            f"{attrs['recipe_hash'][:12]}); refusing to mix datasets. Differences:\n  " + "\n  ".join(diffs[:20])
            + f"\nUse a new {param('store')} path, or the store's own recipe (cmbcube info shows it).")


def local_store_attrs(path: str, verb: str) -> dict:
    """Attributes of a cmbcube store that ``verb`` (e.g. "verify reads") needs as local files;
    StoreError for a URL, a missing path or a Zarr store that is not a cmbcube store."""
    if is_remote(path):
        raise StoreError(f"{path}: {verb} a local store's files; run it where the store lives")
    if not Path(path).is_dir():
        raise StoreError(f"{path}: no such store")
    attrs = read_attrs(path)
    if "recipe_hash" not in attrs:
        raise StoreError(f"{path} is a Zarr store but not a cmbcube store")
    return attrs


def update_attrs(path: str, attrs: dict) -> None:
    """Driver-side: add or replace global attributes (provenance), then consolidate; all or nothing,
    under the store's lock (see metadata_transaction)."""
    with metadata_transaction(path, "write the store's attributes"):
        open_group(path, "r+").attrs.update(attrs)
        consolidate(path)


def store_recipe(path: str) -> Recipe:
    """Return the recipe the store at ``path`` was made from."""
    return from_store_attrs(read_attrs(path))


def create_array(path: str, name: str, shape, dims, dtype="f4", chunks=None, shards=None, fill_value=np.nan,
                 attrs=None, overwrite=False):
    """Driver-side: a new array with named dimensions (xarray-readable), codecs from the recipe."""
    group = open_group(path, "r+")
    if name in set(group.array_keys()) and not overwrite:
        return group[name]
    recipe = from_store_attrs(dict(group.attrs))
    kwargs = dict(shape=tuple(shape), dtype=dtype, chunks=tuple(chunks or shape), fill_value=fill_value,
                  dimension_names=list(dims), attributes=attrs or {}, overwrite=overwrite)
    if shards is not None:
        kwargs["shards"] = tuple(shards)
    if np.dtype(dtype).kind == "f":
        kwargs["compressors"] = layout.codecs(recipe["storage"])
    return group.create_array(name, **kwargs)


# ----------------------------------------------------------------------------- housekeeping (verify, drop)
def dropped_products(path: str) -> list[str]:
    """List the products dropped from the store, oldest first."""
    return [d["product"] for d in json.loads(read_attrs(path).get(DROPPED_ATTR, "[]"))]


def record_dropped(path: str, product: str) -> None:
    """Record in the store's attributes that ``product`` was dropped, and when."""
    group = fresh_group(path, "r+")
    entries = json.loads(group.attrs.get(DROPPED_ATTR, "[]"))
    entries = [e for e in entries if e["product"] != product]
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    group.attrs[DROPPED_ATTR] = json.dumps(entries + [{"product": product, "dropped": now}])


def delete_arrays(path: str, names) -> list[str]:
    """Remove whole arrays (data and metadata); returns those that existed.  Consolidate after."""
    gone = []
    for name in names:
        where = Path(path) / name
        if (where / "zarr.json").exists():
            shutil.rmtree(where)
            gone.append(name)
    return gone


_HELD_LOCKS: dict[str, int] = {}        # this process's holds: real store path -> depth


@contextlib.contextmanager
def store_lock(path: str):
    """Exclusive inter-process lock (flock on the store's directory) around driver-side metadata
    changes: stages running at once in different processes, each writing its own products, take
    turns to grow the run axis, add arrays and consolidate (measured: without it, two processes
    adding runs at once crash or overwrite each other's run).  Re-entrant within a process (one
    driver thread); a no-op for URLs and where the file system refuses directory locks."""
    if is_remote(str(path)):
        yield
        return
    key = os.path.realpath(path)
    if _HELD_LOCKS.get(key):
        _HELD_LOCKS[key] += 1
        try:
            yield
        finally:
            _HELD_LOCKS[key] -= 1
        return
    import fcntl
    try:
        fd = os.open(key, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        fd = None
    try:
        if fd is not None:
            _HELD_LOCKS[key] = 1
        yield
    finally:
        if fd is not None:
            _HELD_LOCKS.pop(key, None)
            os.close(fd)                 # releases the lock


class metadata_transaction:
    """Driver-side metadata changes made all or nothing on a local store (under :func:`store_lock`).

    On an OS error (disk full, permission denied, read-only file system) every array metadata
    file and the root's are put back as they were, arrays created meanwhile are removed, and a
    StoreError names the path and the error.  Data chunks of existing arrays are not restored.
    """

    def __init__(self, path: str, action: str):
        self.path, self.action = str(path), action

    def __enter__(self):
        self._lock = store_lock(self.path)
        self._lock.__enter__()
        root = Path(self.path)
        self.before = {}
        if not is_remote(self.path) and root.is_dir():
            for meta in [root / "zarr.json", *root.glob("*/zarr.json")]:
                try:
                    self.before[meta] = meta.read_bytes()
                except OSError:
                    pass
        return self

    def __exit__(self, kind, err, tb):
        try:
            return self._restore(err)
        finally:
            self._lock.__exit__(None, None, None)

    def _restore(self, err):
        cause = err.__cause__ if isinstance(err, StoreError) else err
        if not isinstance(cause, OSError) or isinstance(cause, FileNotFoundError) or not self.before:
            return False
        root = Path(self.path)
        for meta in root.glob("*/zarr.json"):
            if meta not in self.before:
                shutil.rmtree(meta.parent, ignore_errors=True)
        for meta, blob in self.before.items():
            try:
                if not meta.exists() or meta.read_bytes() != blob:
                    tmp = meta.with_name(f".zarr.json.restore-{uuid.uuid4().hex[:8]}")
                    tmp.write_bytes(blob)
                    os.replace(tmp, meta)
            except OSError:
                pass                        # an unwritten file still holds its old bytes (atomic writes)
        raise StoreError(os_error_message(self.path, cause, self.action)
                         + "; the store's metadata was left as it was") from cause


def write_variables(path: str, ds) -> None:
    """Driver-side: add or replace small whole variables (statistics, tables), then consolidate."""
    import warnings
    if is_remote(path) and not ics.handles(path) and not objstore.handles(path):
        raise StoreError(f"{path}: writing needs a local store, an Icechunk repository or {objstore.SPELLING}")
    ds = ds.copy()
    ds.attrs = read_attrs(path)          # to_zarr(mode="a") replaces the group's attributes
    with metadata_transaction(path, f"write {', '.join(map(str, ds.data_vars))}"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        ds.to_zarr(ics.target(path, "r+"), mode="a", zarr_format=3, consolidated=False)
        consolidate(path)


def consolidate(path: str) -> None:
    """Rewrite the consolidated metadata (driver only, at the end of a stage); commits an Icechunk store."""
    import warnings
    if ics.handles(path):
        return ics.commit(path)

    import zarr
    with store_lock(path), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        try:
            zarr.consolidate_metadata(ics.target(path, "r+"))
        except OSError as err:
            if isinstance(err, FileNotFoundError):
                raise
            raise StoreError(os_error_message(path, err, "write the consolidated metadata")) from err


