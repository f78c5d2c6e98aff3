"""``cmbcube drop``: remove a product from a store, data and metadata, to reclaim disk space.

The store stays a valid cube that ``cmbcube.open`` reads; consolidated metadata is rewritten
at the end.  How each product goes (store_layout.md, "Dropping products"):

- whole arrays (obs, cmb, components, noise, stats, analysis) are deleted with their metadata;
  obs and cmb are recorded in the root attribute ``cmbcube_dropped`` so that simulate refuses
  to add sims that would lack them;
- predictions (``pred``) are cleared chunk by chunk, keeping each run's definition, losses and
  checkpoints, so ``cmbcube ilc`` / ``cmbcube predict`` can write them again;
- a whole run (``run --run NAME``) leaves the run axis: later runs move down one index (chunk
  files renamed, not rewritten) and its checkpoints directory ``<store>.runs/<run>/`` goes too.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from cmbcube import cube
from cmbcube.cube import analysis_io, drop_remote, layout
from cmbcube.cube.drop_plan import DropReport, choices, refuse_unsafe, run_products, whole_arrays
from cmbcube.errors import InputError, command, param


def _is_runs_subfolder(folder: Path, runs_dir: Path, name: str) -> bool:
    """Whether deleting ``folder`` (the checkpoints of run ``name``, a name read from the store, which
    may have been edited) stays inside the runs folder: a valid run name, a real folder (not a link)
    whose parent is the runs folder."""
    try:
        cube.check_run_name(name)
    except ValueError:
        return False
    return not folder.is_symlink() and folder.resolve().parent == runs_dir.resolve()


def _size(path: Path) -> int:
    return (cube.disk_size(str(path)) or 0) if path.exists() else 0


def drop(store: str, product: str, run: str | None = None, force: bool = False) -> DropReport:
    """Remove ``product`` (one run's with ``run``) from a store; see the module docstring.  A local store:
    holds the store's metadata lock, so stages adding runs or arrays wait for it; Icechunk and s3://
    stores: :mod:`cmbcube.cube.drop_remote`."""
    store = str(store)
    if product not in choices():
        raise InputError(f"unknown product {product!r}; allowed: {', '.join(choices())}")
    if drop_remote.handles(store):              # Icechunk (one commit) and plain s3:// stores
        return drop_remote.drop(store, product, run, force)
    if cube.is_remote(store):
        raise cube.StoreError(f"{store}: drop edits a local store, an Icechunk repository or s3://; run it where "
                              "the store lives")
    if not Path(store).is_dir():
        raise cube.StoreError(f"{store}: no such store")
    with cube.store_lock(store):
        return _drop(store, product, run, force)


def _drop(store: str, product: str, run: str | None, force: bool) -> DropReport:
    if product not in choices():
        raise InputError(f"unknown product {product!r}; allowed: {', '.join(choices())}")
    if run is not None and product not in run_products():
        raise InputError(f"{param('run')} applies to {', '.join(run_products())}, not to {product}")
    attrs = cube.local_store_attrs(store, "drop edits")
    journal = attrs.get(cube.DROP_JOURNAL_ATTR)
    if journal and not (product == "run" and run == json.loads(journal)["run"]):
        name = json.loads(journal)["run"]
        raise cube.StoreError(f"{store}: removing run {name!r} was interrupted; finish it first "
                              f"({command('drop', store, 'run', run=name)})")
    runs_dir = cube.runs_dir(store)
    before = _size(Path(store)) + _size(runs_dir)
    group = cube.fresh_group(store)
    names = set(group.array_keys())
    runs = [str(r) for r in group["run"][...]] if "run" in names else []
    report = DropReport(store, product, run, [], before, before)

    refuse_unsafe(store, product, run, names, runs, force, journal)

    if product == "run":
        targets = [run] if run is not None else runs
        if not targets:
            raise cube.StoreError(f"{store}: no runs to drop")
        configs = {}
        for name in targets:
            if name in runs:
                try:
                    configs[name] = json.loads(str(group["run_config"][runs.index(name)]))
                except (ValueError, KeyError):
                    configs[name] = {}
        if run is not None:
            cube.remove_run(store, run)
        else:
            cube.delete_arrays(store, cube.run_axis_arrays(store))
            cube.consolidate(store)
        for name in targets:
            report.removed.append(f"run {name!r}")
            folder = cube.run_dir(store, name)
            if not _is_runs_subfolder(folder, runs_dir, name):
                report.notes.append(f"run name {name!r} is not a folder name under {runs_dir}: nothing deleted "
                                    "for it outside the store")
            elif folder.is_dir():
                shutil.rmtree(folder)
                report.removed.append(f"its checkpoints {folder}")
            other = configs.get(name, {}).get("checkpoint_dir")
            if other and Path(other).resolve() != folder.resolve() and Path(other).exists():
                report.notes.append(f"checkpoints of {name!r} at {other} are outside {runs_dir}: left in place")
        if runs_dir.is_dir() and not any(runs_dir.iterdir()):
            runs_dir.rmdir()
    elif product == "pred" or (product == "analysis" and run is not None):
        if not runs:
            raise cube.StoreError(f"{store}: no runs, so no {product} to drop")
        analysis_arrays = layout.run_axis_arrays_of("analysis")          # metrics, spectra, analysis_done
        wanted = layout.run_axis_arrays_of("pred") + analysis_arrays if product == "pred" else analysis_arrays
        present = [n for n in wanted if n in names]
        if not present:
            raise cube.StoreError(f"{store}: no {product} to drop")
        cube.delete_run_chunks(store, present, None if run is None else runs.index(run))
        cube.consolidate(store)
        who = f"run {run!r}" if run is not None else "every run"
        report.removed.append(f"{'predictions and analysis' if product == 'pred' else 'metrics and spectra'} of {who} "
                              f"({', '.join(present)})")
        if product == "pred":
            report.notes.append(f"the run definitions, losses and checkpoints stay: cmbcube ilc / predict "
                                f"--run {run or 'NAME'} writes the predictions again")
    else:
        present = [n for n in whole_arrays(product) if n in names]
        main = whole_arrays(product)[0]
        if main not in names:
            have = [p for p in choices() if p not in ("pred", "run") and whole_arrays(p)[0] in names]
            raise cube.StoreError(f"{store}: no {product} in this store "
                                  f"(products present: {', '.join(have) or 'none'})")
        cube.delete_arrays(store, present)
        if layout.PRODUCTS.get(product).flag == "sim_done":      # obs, cmb, components, noise
            cube.record_dropped(store, product)
        cube.consolidate(store)
        report.removed.append(f"{product} ({', '.join(present)})")
        if product == "stats":
            report.notes.append("runs trained with a normalising transform need cmbcube preprocess again "
                                "before cmbcube predict")
        nmt_cache = Path(analysis_io.namaster_dir(store))
        if product == "analysis" and nmt_cache.is_dir():       # NaMaster coupling matrices of the masks
            shutil.rmtree(nmt_cache)
            report.removed.append(f"its NaMaster coupling matrices {nmt_cache}")
        if product in ("obs", "cmb"):
            report.notes.append(f"cmbcube simulate will refuse to add sims to this store ({product} is gone)")
    report.bytes_after = _size(Path(store)) + _size(runs_dir)
    return report


def format_report(report: DropReport) -> str:
    """Format a drop's report for the terminal: what went, the space reclaimed, the notes."""
    human = cube.human
    lines = [f"dropped {', '.join(report.removed)} from {report.store}: reclaimed {human(max(report.reclaimed, 0))} "
             f"({human(report.bytes_before)} -> {human(report.bytes_after)}, checkpoints included)"]
    lines += [f"  note: {n}" for n in report.notes]
    return "\n".join(lines)
