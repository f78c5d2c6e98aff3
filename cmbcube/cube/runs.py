"""Runs: the run axis (one method with one configuration per run), predictions, losses, and
run-axis housekeeping (removing a run, clearing its chunks)."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np

from cmbcube.cube import icechunk_store as ics, layout
from cmbcube.cube.base import DROP_JOURNAL_ATTR, StoreError, array_dims, outer_chunks
from cmbcube.cube.facts import cmb_unit, nside
from cmbcube.cube.location import runs_dir
from cmbcube.cube.opener import fresh_group, open_group, read_attrs, read_group, source_group
from cmbcube.cube.store import consolidate, delete_arrays, metadata_transaction
from cmbcube.errors import InputError, command, param
from cmbcube.recipe import SPLITS, from_store_attrs

# ----------------------------------------------------------------------------- runs (predictions)
RUN_ARRAYS = layout.RUN_ARRAYS


class RunMismatch(StoreError):
    """A run name exists with other settings."""


def create_run_array(group, key: str, nrun: int) -> None:
    """Create run-axis array ``key`` (of the ``pred`` and ``run`` products, or ``pred_done``) with
    ``nrun`` runs in an open writable root group, as the table describes it."""
    spec = layout.array_spec(key)
    nsplit, nsim = group["sim_done"].shape
    size = {"run": nrun, "split": nsplit, "sim": nsim, "field": group["field"].shape[0],
            "pixel": group["cell_ids"].shape[0]}
    shape = tuple(size[d] for d in spec.dims)
    kwargs = dict(shape=shape, chunks=layout.unit_chunks(spec, shape), fill_value=spec.fill,
                  dimension_names=list(spec.dims))
    if spec.dtype == "str":
        group.create_array(key, dtype=str, **kwargs)
        return
    attrs = {"long_name": spec.long_name}
    if spec.maps:
        recipe = from_store_attrs(dict(group.attrs))
        attrs = {"healpix_nside": nside(group), "healpix_order": "nested", **attrs, "units": cmb_unit(group)}
        kwargs.update(chunks=layout.map_chunks(shape), shards=layout.unit_chunks(spec, shape),
                      compressors=layout.codecs(recipe["storage"]))
    group.create_array(key, dtype=spec.dtype, attributes=attrs, **kwargs)


def run_dir(store, run: str) -> Path:
    """The checkpoints folder of run ``run``: ``<store>.runs/<run>`` (``run`` checked by check_run_name
    before anything is written there)."""
    return runs_dir(store) / run


_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")


def check_run_name(name, field: str = param("run")) -> str:
    """A run name is also a folder name (``<store>.runs/<name>``, report files): 1-100 letters, digits,
    '.', '_', '-', '+', starting with a letter or digit, so no '/', '..' or absolute path can lead a
    write or a deletion outside the store and its runs folder.  ValueError (exit 2) names the field."""
    if not isinstance(name, str) or not _RUN_NAME.fullmatch(name):
        raise InputError(f"{field} {name!r}: not allowed as a run name (it becomes the folder <store>.runs/<name>); "
                         "use 1-100 letters, digits, '.', '_', '-', '+', starting with a letter or digit "
                         "(no '/', no '..', no absolute path)")
    return name


def safe_name(text) -> str:
    """``text`` usable as one file-name component: characters other than letters, digits, '.', '_',
    '-', '+' become '_', and a leading '.' too (for names read from a store, which may be hostile)."""
    out = re.sub(r"[^A-Za-z0-9._+-]", "_", str(text)) or "_"
    return "_" + out[1:] if out[0] == "." else out


def ensure_run(path: str, name: str, method: str, config: dict, beam_fwhm_arcmin: float,
               uncertainty: bool = False) -> int:
    """Driver-side: the index of run ``name``, created if needed (see _ensure_run); all or nothing."""
    check_run_name(name)
    if DROP_JOURNAL_ATTR in read_attrs(path):
        name = json.loads(read_attrs(path)[DROP_JOURNAL_ATTR])["run"]
        raise StoreError(f"{path}: removing a run was interrupted; finish it first "
                         f"({command('drop', path, 'run', run=name)})")
    def attempt():
        with metadata_transaction(path, f"add run {name!r}"):
            return _ensure_run(path, name, method, config, beam_fwhm_arcmin, uncertainty)
    return ics.retry_on_conflict(path, attempt)        # Icechunk: again from the tip if another run came first


def _ensure_run(path: str, name: str, method: str, config: dict, beam_fwhm_arcmin: float,
                uncertainty: bool = False) -> int:
    """Driver-side: the index of run ``name`` along the ``run`` axis, creating it if needed.

    A run is one method with one configuration; asking for an existing name with
    another configuration is refused (RunMismatch).  New runs grow the run axis
    of every run-indexed array (metadata only; no data is rewritten).
    """
    group = open_group(path, "r+")
    names = set(group.array_keys())
    config_json = json.dumps(config, sort_keys=True)
    if "run" in names:
        runs = [str(r) for r in group["run"][...]]
        if name in runs:
            i = runs.index(name)
            old = str(group["run_config"][i])
            if old != config_json:
                raise RunMismatch(f"run {name!r} already exists in {path} with other settings:\n  stored: {old}\n"
                                  f"  asked:  {config_json}\nchoose another {param('run')} name (or drop the run)")
            if uncertainty and "pred_sigma" not in names:
                create_run_array(group, "pred_sigma", len(runs))
            return i
        index = len(runs)
        # every run-indexed array grows with the run axis (predictions, losses, metrics...)
        for key in names:
            arr = group[key]
            dims = getattr(arr.metadata, "dimension_names", None) or ()
            if not dims or dims[0] != "run" or arr.shape[0] != index:
                continue
            arr.resize((index + 1,) + arr.shape[1:])
    else:
        index = 0
        for key in RUN_ARRAYS:
            create_run_array(group, key, 1)
    if uncertainty and "pred_sigma" not in set(group.array_keys()):
        create_run_array(group, "pred_sigma", index + 1)
    group["run"][index] = name
    group["run_method"][index] = method
    group["run_config"][index] = config_json
    group["run_beam_fwhm_arcmin"][index] = float(beam_fwhm_arcmin)
    consolidate(path)
    return index



def pred_done_count(path: str, run: int, splits=SPLITS) -> int:
    """How many sims of ``splits`` hold the run's prediction."""
    done = np.asarray(open_group(path)["pred_done"][run])
    return int(sum(done[SPLITS.index(s)].sum() for s in splits))


def run_epoch(path: str, run: int) -> int:
    """Return the epoch recorded for run index ``run``."""
    return int(np.asarray(open_group(path)["run_epoch"][run]))



def set_run_epoch(path: str, run: int, epoch: int) -> None:
    """Record ``epoch`` for run index ``run``."""
    open_group(path, "r+")["run_epoch"][run] = int(epoch)


def run_config(path: str, run: int) -> dict:
    """Return the configuration stored for run index ``run``."""
    return json.loads(str(open_group(path)["run_config"][run]))


def write_losses(path: str, run: int, train: list, valid: list, train_sims: int | None = None) -> None:
    """Driver-side (the training process): per-epoch losses of a run, (run, epoch) arrays, and the
    number of training skies it saw (``train_sims``, (run,))."""
    with metadata_transaction(path, "write the training losses"):
        _write_losses(path, run, train, valid, train_sims)


def _write_losses(path: str, run: int, train: list, valid: list, train_sims: int | None = None) -> None:
    group = open_group(path, "r+")
    names = set(group.array_keys())
    nrun = group["run"].shape[0]
    need = max(len(train), 1)
    for key, values, long in (("loss_train", train, "mean training loss per epoch"),
                              ("loss_valid", valid, "mean validation loss per epoch (valid split)")):
        if key not in names:
            group.create_array(key, shape=(nrun, need), dtype="f8", chunks=(1, need), fill_value=np.nan,
                               dimension_names=["run", "epoch"], attributes={"long_name": long})
        arr = group[key]
        if arr.shape[0] < nrun or arr.shape[1] < need:
            arr.resize((max(arr.shape[0], nrun), max(arr.shape[1], need)))
        row = np.full(arr.shape[1], np.nan)
        row[: len(values)] = values
        arr[run] = row
    if train_sims is not None:
        if "train_sims" not in names:
            group.create_array("train_sims", shape=(nrun,), dtype="i8", chunks=(1,), fill_value=-1,
                               dimension_names=["run"],
                               attributes={"long_name": "training skies (train-split sims) the run was trained on "
                                                        "(-1: not recorded)"})
        arr = group["train_sims"]
        if arr.shape[0] < nrun:
            arr.resize((nrun,))
        arr[run] = int(train_sims)
    consolidate(path)


def run_index(path: str, name: str) -> int:
    """Return the index of the run named ``name``; StoreError naming the runs present if none."""
    group = open_group(path)
    runs = [str(r) for r in group["run"][...]] if "run" in set(group.array_keys()) else []
    if name not in runs:
        raise StoreError(f"{path}: no run {name!r}; runs present: {', '.join(runs) or 'none'}")
    return runs.index(name)


def run_pending(path: str, run: int, splits) -> list[tuple[str, int]]:
    """List the (split, sim) of ``splits`` simulated but not yet predicted by run index ``run``."""
    group = open_group(path)
    sim_done = np.asarray(group["sim_done"][...]) == 1
    pred_done = np.asarray(group["pred_done"][run]) == 1
    out = []
    for split in splits:
        i = SPLITS.index(split)
        out += [(split, int(s)) for s in np.nonzero(sim_done[i] & ~pred_done[i])[0]]
    return out


def prediction_done(source, run: int, split: str, sim: int) -> bool:
    """Whether run ``run``'s prediction of the sim is written (its ``pred_done`` flag)."""
    return bool(source_group(source)["pred_done"][run, SPLITS.index(split), sim])


def pending_predictions(path: str, run_name: str, splits) -> int:
    """Finished sims of ``splits`` that run ``run_name`` has not predicted yet (all of them for a run not in
    the store), read without creating the run."""
    group = read_group(path)
    names = set(group.array_keys())
    done = np.asarray(group["sim_done"][...]) == 1
    runs = [str(r) for r in group["run"][...]] if "run" in names else []
    if run_name in runs and "pred_done" in names:
        done = done & ~(np.asarray(group["pred_done"][runs.index(run_name)]) == 1)
    return int(sum(done[SPLITS.index(s)].sum() for s in splits))


def write_prediction(path: str, run: int, split: str, sim: int, maps: np.ndarray,
                     sigma: np.ndarray | None = None) -> None:
    """Worker-side: one sim's prediction (field, pixel) NESTED (+ optional sigma), then its flag."""
    group = open_group(path, "r+")
    isplit = SPLITS.index(split)
    group["pred"][run, isplit, sim] = maps
    if sigma is not None:
        group["pred_sigma"][run, isplit, sim] = sigma
    group["pred_done"][run, isplit, sim] = 1



def clear_run_done(path: str, run: int, split: str, sim: int, analysis_only: bool = False) -> None:
    """Forget that run ``run`` predicted (and analysed) a sim, so `cmbcube ilc`/`predict` and
    `cmbcube analyze` redo exactly it; ``analysis_only`` keeps the prediction's flag."""
    group = open_group(path, "r+")
    isplit = SPLITS.index(split)
    names = set(group.array_keys())
    if not analysis_only and "pred_done" in names:
        group["pred_done"][run, isplit, sim] = 0
    if "analysis_done" in names and group["analysis_done"].shape[0] > run:
        group["analysis_done"][run, isplit, sim] = 0



def run_axis_arrays(path: str) -> list[str]:
    """List the arrays whose first axis is the run axis."""
    group = fresh_group(path)
    return sorted(k for k in group.array_keys() if array_dims(group[k])[:1] == ("run",))


def _check_run_chunking(path: str, names) -> None:
    """Run-axis housekeeping moves whole chunk directories: one chunk (or shard) per run index."""
    group = fresh_group(path)
    for name in names:
        arr = group[name]
        enc = arr.metadata.chunk_key_encoding
        if outer_chunks(arr)[0] != 1 or getattr(enc, "separator", "/") != "/" \
                or getattr(enc, "name", "default") != "default":
            raise StoreError(f"{path}: array {name} is not stored one chunk per run (chunks {outer_chunks(arr)}, "
                             f"key encoding {enc}); cmbcube drop cannot edit its run axis")


def delete_run_chunks(path: str, names, run: int | None) -> None:
    """Delete the data of run index ``run`` (every run when None) from run-axis arrays; the
    arrays and the run axis stay (missing chunks read as the fill value: NaN, or 0 for flags)."""
    _check_run_chunking(path, names)
    for name in names:
        base = Path(path) / name / "c"
        target = base if run is None else base / str(run)
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def remove_run(path: str, name: str) -> int:
    """Remove run ``name`` from the run axis: its chunks are deleted, later runs move down one
    index (chunk files renamed, never rewritten) and every run-axis array shrinks by one.

    Crash-safe: the root attribute ``cmbcube_dropping_run`` records the operation and the arrays
    already done; calling again with the same name finishes it.  Returns the removed index.
    """
    group = fresh_group(path, "r+")
    journal = json.loads(group.attrs.get(DROP_JOURNAL_ATTR, "null") or "null")
    if journal is not None and journal["run"] != name:
        raise StoreError(f"{path}: removing run {journal['run']!r} was interrupted; finish it first "
                         f"({command('drop', path, 'run', run=journal['run'])})")
    names = run_axis_arrays(path)
    if journal is None:
        runs = [str(r) for r in group["run"][...]] if "run" in names else []
        if name not in runs:
            raise StoreError(f"{path}: no run {name!r}; runs present: {', '.join(runs) or 'none'}")
        _check_run_chunking(path, names)
        shapes = {key: fresh_group(path)[key].shape[0] for key in names}
        journal = {"run": name, "index": runs.index(name), "nrun": len(runs), "shapes": shapes}
        group.attrs[DROP_JOURNAL_ATTR] = json.dumps(journal)
    index, nrun = journal["index"], journal["nrun"]
    if nrun == 1:
        delete_arrays(path, names)
    else:
        for key in names:
            arr = fresh_group(path, "r+")[key]
            before = journal["shapes"].get(key, arr.shape[0])
            if arr.shape[0] != before or before <= index:
                continue                    # already shrunk (an interrupted drop), or no slot to remove
            remove_run_slot(Path(path) / key, index)
            arr.resize((before - 1,) + tuple(arr.shape[1:]))
    del group.attrs[DROP_JOURNAL_ATTR]
    consolidate(path)
    return index


def remove_run_slot(array_dir: Path, index: int) -> None:
    """c/<index> deleted, c/<k> -> c/<k-1> for k > index, through c.dropping so an interrupted
    pass can be finished (each entry's destination depends only on its own index)."""
    chunks, staging = array_dir / "c", array_dir / "c.dropping"
    if chunks.exists():
        staging.mkdir(exist_ok=True)
        for entry in sorted(chunks.iterdir()):
            try:
                k = int(entry.name)
            except ValueError:              # a stray temporary (*.partial) key
                k = index
            if k == index and entry.is_dir():
                shutil.rmtree(entry)
            elif k == index:
                entry.unlink()
            else:
                os.rename(entry, staging / str(k if k < index else k - 1))
        chunks.rmdir()
    if staging.exists():
        os.rename(staging, chunks)




