"""``cmbcube drop`` on stores that are not local directories: Icechunk repositories
(``icechunk+file://``, ``icechunk+s3://``) and plain Zarr on object storage (``s3://``).

The store ends up holding what a local drop leaves (store_layout.md, "Dropping products"); the
edits go through zarr on the store's own key space instead of moving files:

- whole arrays are deleted key by key (``del group[name]``); obs and cmb are recorded in
  ``cmbcube_dropped`` as locally;
- ``pred`` (and ``analysis --run``) delete the run's chunk keys ``<array>/c/<run>/...``;
- ``run --run NAME`` deletes the run's chunk keys, copies each later run's chunk objects one index
  down (the stored bytes, not decoded) and shrinks every run-axis array by one.

Icechunk: every edit goes into one writable session, committed ONCE with the message
``drop PRODUCT [--run NAME]``; a drop killed before that commit leaves the branch at its previous
snapshot (nothing half-done is ever visible).  Older snapshots and tags still hold the dropped data,
and its bytes stay in the repository until Icechunk's ``expire_snapshots`` and
``garbage_collect`` remove what no kept snapshot references.

Plain ``s3://``: no transactions and no locks; one writer at a time.  Removing a run records its
progress in ``cmbcube_dropping_run`` (each copied slot), so a rerun of the same command finishes an
interrupted removal and every stage refuses the store meanwhile, as on a local store.

The run's checkpoints folder (:func:`cmbcube.cube.runs.run_dir`, a local folder) goes after the
store's change is written.
"""
from __future__ import annotations

import json
import shutil

from cmbcube import cube
from cmbcube.cube import icechunk_store as ics, objstore
from cmbcube.cube.drop_plan import DropReport, choices, refuse_unsafe, run_products, whole_arrays
from cmbcube.cube.layout import run_axis_arrays_of
from cmbcube.errors import InputError, command, param


def handles(store) -> bool:
    """Tell whether ``store`` is one this module drops from (an Icechunk repository or object storage)."""
    return ics.handles(store) or objstore.handles(store)


def message(product: str, run: str | None, force: bool = False) -> str:
    """The Icechunk commit message of a drop, e.g. ``drop run --run nilc``."""
    return f"drop {product}" + (f" --run {run}" if run else "") + (" --force" if force else "")


def drop(store: str, product: str, run: str | None = None, force: bool = False) -> DropReport:
    """Drop ``product`` (of ``run``) from a shared store; in an Icechunk repository as one commit, all or nothing."""
    store = str(store)
    if product not in choices():
        raise InputError(f"unknown product {product!r}; allowed: {', '.join(choices())}")
    if run is not None and product not in run_products():
        raise InputError(f"{param('run')} applies to {', '.join(run_products())}, not to {product}")
    if ics.handles(store):
        ics.writable_session(store)          # no such repository, or a tag: refused before anything
    elif not objstore.exists(store):
        raise cube.StoreError(f"{store}: no such store")
    try:
        report, targets = _drop(store, product, run, force)
        if ics.handles(store):
            snap = ics.commit(store, message(product, run, force), {"stage": "drop"})
            report.notes.append(f"committed as snapshot {snap}; older snapshots and tags still hold what was "
                                "dropped: its space is freed only once Icechunk's expire_snapshots and "
                                "garbage_collect remove what no kept snapshot references")
        else:
            cube.consolidate(store)
    except BaseException:
        if ics.handles(store):
            ics.discard(store)                # all or nothing: nothing of this drop is committed
        raise
    _remove_checkpoints(store, report, targets)
    return report


def _drop(store: str, product: str, run: str | None, force: bool) -> tuple:
    """The store's edits (uncommitted) and the report; also the runs whose checkpoints go once they are written."""
    attrs = cube.read_attrs(store)
    if "recipe_hash" not in attrs:
        raise cube.StoreError(f"{store} is a Zarr store but not a cmbcube store")
    journal = json.loads(attrs.get(cube.DROP_JOURNAL_ATTR, "null") or "null")
    if journal and not (product == "run" and run == journal["run"]):
        raise cube.StoreError(f"{store}: removing run {journal['run']!r} was interrupted; finish it first "
                              f"({command('drop', store, 'run', run=journal['run'])})")
    group = cube.fresh_group(store, "r+")
    arrays = dict(group.arrays())       # every array's metadata, read once (one request each on s3)
    names = set(arrays)
    runs = [str(r) for r in arrays["run"][...]] if "run" in names else []
    report, targets = DropReport(store, product, run, [], 0, 0, []), []

    refuse_unsafe(store, product, run, names, runs, force, journal)

    if product == "run":
        targets = [run] if run is not None else runs
        if not targets:
            raise cube.StoreError(f"{store}: no runs to drop")
        axis = {k: a for k, a in arrays.items() if cube.array_dims(a)[:1] == ("run",)}
        if run is None:
            _delete_arrays(group, axis)
        else:
            _remove_run(store, group, axis, run, runs, journal)
        report.removed += [f"run {name!r}" for name in targets]
    elif product == "pred" or (product == "analysis" and run is not None):
        if not runs:
            raise cube.StoreError(f"{store}: no runs, so no {product} to drop")
        analysis_arrays = run_axis_arrays_of("analysis")
        wanted = run_axis_arrays_of("pred") + analysis_arrays if product == "pred" else analysis_arrays
        present = [n for n in wanted if n in names]
        if not present:
            raise cube.StoreError(f"{store}: no {product} to drop")
        _check_run_chunking(store, {n: arrays[n] for n in present})
        index = None if run is None else runs.index(run)
        for name in present:
            _delete_keys(group, name, index)
        who = f"run {run!r}" if run is not None else "every run"
        report.removed.append(f"{'predictions and analysis' if product == 'pred' else 'metrics and spectra'} of {who} "
                              f"({', '.join(present)})")
        if product == "pred":
            report.notes.append(f"the run definitions, losses and checkpoints stay: cmbcube ilc / predict "
                                f"--run {run or 'NAME'} writes the predictions again")
    else:
        present = [n for n in whole_arrays(product) if n in names]
        if whole_arrays(product)[0] not in names:
            have = [p for p in choices() if p not in ("pred", "run") and whole_arrays(p)[0] in names]
            raise cube.StoreError(f"{store}: no {product} in this store "
                                  f"(products present: {', '.join(have) or 'none'})")
        _delete_arrays(group, present)
        if cube.PRODUCTS.get(product).flag == "sim_done":
            cube.record_dropped(store, product)
        report.removed.append(f"{product} ({', '.join(present)})")
        if product == "stats":
            report.notes.append("runs trained with a normalising transform need cmbcube preprocess again "
                                "before cmbcube predict")
        if product in ("obs", "cmb"):
            report.notes.append(f"cmbcube simulate will refuse to add sims to this store ({product} is gone)")
    if not ics.handles(store):
        report.notes.append("object sizes on s3:// are not counted; 'reclaimed' counts local checkpoints only")
    return report, targets


# ----------------------------------------------------------------------------- zarr edits
def _sync(coro):
    from zarr.core.sync import sync
    return sync(coro)


def _keys(zstore, prefix: str) -> list[str]:
    async def collect():
        return [k async for k in zstore.list_prefix(prefix)]
    return _sync(collect())


def _delete_arrays(group, names) -> None:
    """Delete whole arrays ``names`` (those present), metadata and chunks."""
    for name in names:
        del group[name]


def _slots(zstore, name: str) -> dict:
    """{run index: [chunk key suffixes after ``<name>/c/<index>``]} of array ``name``, stored one chunk
    per run (``c/<index>`` for a 1-D array: suffix "", ``c/<index>/...`` otherwise).  Listed from the
    array's own prefix (Icechunk lists nodes, not chunk prefixes)."""
    out: dict = {}
    head = f"{name}/c/"
    for key in _keys(zstore, name + "/"):
        if key.startswith(head):
            index, sep, rest = key[len(head):].partition("/")
            if index.isdigit():
                out.setdefault(int(index), []).append(sep + rest)
    return out


def _delete_keys(group, name: str, index: int | None) -> None:
    """Delete the chunks of run ``index`` of array ``name`` (every run's when None)."""
    zstore = group.store
    _gather([zstore.delete(f"{name}/c/{k}{suffix}") for k, suffixes in _slots(zstore, name).items()
             if index is None or k == index for suffix in suffixes])


def _gather(coros: list) -> None:
    """Run the store operations ``coros`` concurrently (one request each on object storage)."""
    import asyncio

    async def run():
        await asyncio.gather(*coros)
    if coros:
        _sync(run())


def _check_run_chunking(store: str, arrays: dict) -> None:
    for name, arr in arrays.items():
        enc = arr.metadata.chunk_key_encoding
        if cube.outer_chunks(arr)[0] != 1 or getattr(enc, "separator", "/") != "/" \
                or getattr(enc, "name", "default") != "default":
            raise cube.StoreError(f"{store}: array {name} is not stored one chunk per run (chunks "
                                  f"{cube.outer_chunks(arr)}, key encoding {enc}); cmbcube drop cannot edit its "
                                  "run axis")


def _move_slot(zstore, name: str, slots: dict, source: int, dest: int) -> None:
    """Run ``dest`` of array ``name`` becomes a copy of run ``source`` (the stored bytes; keys of ``dest``
    that ``source`` lacks deleted, as they read as the fill value).  ``slots`` (:func:`_slots`) is kept
    up to date."""
    from zarr.core.buffer import default_buffer_prototype
    proto = default_buffer_prototype()

    async def copy(suffix):
        buf = await zstore.get(f"{name}/c/{source}{suffix}", proto)
        if buf is not None:
            await zstore.set(f"{name}/c/{dest}{suffix}", buf)
    _gather([zstore.delete(f"{name}/c/{dest}{suffix}")
             for suffix in set(slots.get(dest, ())) - set(slots.get(source, ()))])
    _gather([copy(suffix) for suffix in slots.get(source, ())])
    slots[dest] = list(slots.get(source, ()))


def _remove_run(store: str, group, axis: dict, run: str, runs: list, journal) -> None:
    """Run ``run`` leaves the run axis of every array in ``axis``.  Plain stores keep a journal in
    ``cmbcube_dropping_run``, updated after each slot copied, so a rerun resumes where it stopped
    (copying run k onto k - 1 is repeatable until run k + 1 is copied onto k)."""
    plain = not ics.handles(store)
    if journal is None:
        _check_run_chunking(store, axis)
        journal = {"run": run, "index": runs.index(run), "nrun": len(runs),
                   "shapes": {name: arr.shape[0] for name, arr in axis.items()}, "next": {}}
        if plain:
            group.attrs[cube.DROP_JOURNAL_ATTR] = json.dumps(journal)
    index, nrun = journal["index"], journal["nrun"]
    if nrun == 1:
        _delete_arrays(group, axis)
    for name in axis if nrun > 1 else ():
        arr = axis[name]
        before = journal["shapes"].get(name, arr.shape[0])
        if arr.shape[0] != before or before <= index:
            continue                                    # already shrunk, or no slot to remove
        start = journal.setdefault("next", {}).get(name, index + 1)
        slots = _slots(group.store, name)
        for k in range(start, before):
            _move_slot(group.store, name, slots, k, k - 1)
            if plain:
                journal["next"][name] = k + 1
                group.attrs[cube.DROP_JOURNAL_ATTR] = json.dumps(journal)
        _delete_keys(group, name, before - 1)
        arr.resize((before - 1,) + tuple(arr.shape[1:]))
    if cube.DROP_JOURNAL_ATTR in group.attrs:
        del group.attrs[cube.DROP_JOURNAL_ATTR]


def _remove_checkpoints(store: str, report: DropReport, targets: list) -> None:
    """The checkpoints folders of the dropped runs (local folders), as a local drop removes them."""
    runs_dir = cube.runs_dir(store)
    report.bytes_before = report.bytes_after = (cube.disk_size(str(runs_dir)) or 0) if runs_dir.exists() else 0
    for name in targets:
        folder = cube.run_dir(store, name)
        try:
            cube.check_run_name(name)
            inside = not folder.is_symlink() and folder.resolve().parent == runs_dir.resolve()
        except InputError:
            inside = False
        if not inside:
            report.notes.append(f"run name {name!r} is not a folder name under {runs_dir}: nothing deleted "
                                "for it outside the store")
        elif folder.is_dir():
            report.bytes_after -= cube.disk_size(str(folder)) or 0
            shutil.rmtree(folder)
            report.removed.append(f"its checkpoints {folder}")
    if runs_dir.is_dir() and not any(runs_dir.iterdir()):
        runs_dir.rmdir()
    if ics.handles(store):
        report.notes.append("the repository's size is unchanged until then ('reclaimed' counts local checkpoints)")

