"""``cmbcube verify``: every finished unit of work still has all its chunks, and they decode.

A unit is what one task writes and flags: a sim ((split, sim), flag ``sim_done``), a run's
prediction of a sim ((run, split, sim), flag ``pred_done``) or its analysis (flag
``analysis_done``).  For each flagged unit every chunk file of every product it wrote is
checked: the file (or shard) exists, a shard's index passes its crc32c and points inside the
file, every inner chunk that must exist is there, each chunk's crc32c matches its bytes, an
uncompressed chunk has the size of its map, and a compressed unit decodes through zarr.

Damaged units are reported in a table; ``clear=True`` deletes their damaged files and clears
their done-flags, so rerunning the stage that wrote them (simulate, ilc/predict, analyze)
rebuilds exactly those units.  Files are read with plain ``pread`` calls in a thread pool
(reading is I/O bound and crc32c runs in C).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from cmbcube import cube
from cmbcube.cube import icechunk_versions, layout, objstore
from cmbcube.cube.opener import consolidated_metadata
from cmbcube.cube.shardread import EMPTY, ShardLayout, crc_ok
from cmbcube.cube.verify_report import Damage, VerifyReport
from cmbcube.errors import InputError, param
from cmbcube.recipe import SPLITS

# the arrays verify checks are those written unit by unit and flagged: layout.unit_products(flag),
# read from the product table at call time (a product registered in layout.PRODUCTS is verified)


@dataclasses.dataclass
class _Layout:
    """How one array's files are laid out (read once by the driver): the one parser's reading, and
    a label for each inner chunk of a shard."""

    name: str
    shard: ShardLayout
    labels: list | None = None      # (n_inner,) "detector 143, field Q"


def _layout(group, name: str, nlead: int, names: set) -> _Layout:
    arr = group[name]
    shard = ShardLayout.from_array(arr)
    out = _Layout(name, shard)
    if shard.sharded:
        dims = cube.array_dims(arr)[nlead:]
        out.labels, shard.required = _inner_labels(group, name, list(zip(dims, shard.grid[nlead:])), names)
    return out


def _inner_labels(group, name, inner, names: set):
    """Labels and 'must exist' flags of a shard's inner chunks (C order over the inner grid); ``names``: the
    store's arrays whose metadata is readable."""
    import itertools
    values = {}
    for dim, count in inner:
        if count > 1 and dim in names:
            values[dim] = [str(v) for v in np.asarray(group[dim][...])][:count]
    axes = [(dim, count) for dim, count in inner if count > 1]
    labels = []
    for position in itertools.product(*[range(c) for _, c in axes]):
        where = dict(zip([d for d, _ in axes], position))
        labels.append(", ".join(f"{d} {values.get(d, list(range(c)))[where[d]]}" for d, c in axes) or "map")
    has_field = np.asarray(group["has_field"][...]) if "has_field" in names else None
    dims, grid = [d for d, _ in inner], [c for _, c in inner]
    required = layout.required_maps(name, dims, grid, has_field)
    if required is None:            # nothing known of the pairs: every map of a map product must exist
        product = layout.product_of(name)
        required = np.full(len(labels), product is not None and product.required != "none")
    return labels, required


def _check_file(layout: _Layout, path: str, key: str) -> tuple[list[str], int]:
    """Problems of one chunk file (empty when sound) and the bytes read."""
    shard = layout.shard
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return [f"{'shard' if shard.sharded else 'chunk'} {key} missing"], 0
    except OSError as err:
        return [f"{key} unreadable: {err.strerror}"], 0
    problems, nread = [], 0
    try:
        size = os.fstat(fd).st_size
        if not shard.sharded:
            blob = os.pread(fd, size, 0)
            nread += len(blob)
            if shard.checksum and not crc_ok(blob):
                problems.append(f"chunk {key} checksum mismatch (corrupted)")
            elif shard.chunk_nbytes and len(blob) != shard.chunk_nbytes:
                problems.append(f"chunk {key} has {len(blob)} bytes, expected {shard.chunk_nbytes} (truncated?)")
            return problems, nread
        index_len = shard.index_size
        if size < index_len:
            return [f"shard {key} is {size} bytes, shorter than its index (truncated)"], 0
        raw = os.pread(fd, index_len, size - index_len if shard.index_at_end else 0)
        nread += len(raw)
        problem = shard.index_problem(raw)
        if problem:
            return [f"shard {key}: {problem}"], nread
        table = shard.table(raw)
        data_start, data_end = (0, size - index_len) if shard.index_at_end else (index_len, size)
        missing = set(shard.missing_required(table).tolist())
        for k in range(shard.nchunks):
            offset, nbytes = int(table[k, 0]), int(table[k, 1])
            label = layout.labels[k] if layout.labels else str(k)
            if offset == EMPTY:
                if k in missing:
                    problems.append(f"shard {key}: {label} missing")
                continue
            if offset < data_start or offset + nbytes > data_end:
                problems.append(f"shard {key}: {label} points outside the file (truncated)")
                continue
            if shard.chunk_nbytes and nbytes != shard.chunk_nbytes:
                problems.append(f"shard {key}: {label} has {nbytes} bytes, expected {shard.chunk_nbytes}")
                continue
            if shard.checksum:
                blob = os.pread(fd, nbytes, offset)
                nread += len(blob)
                if len(blob) != nbytes or not crc_ok(blob):
                    problems.append(f"shard {key}: {label} checksum mismatch (corrupted)")
    finally:
        os.close(fd)
    return problems, nread


def _check_unit(path: str, arrays: dict, layouts: dict, level: str, unit: tuple, leading: tuple,
                products, optional=None) -> tuple[list[Damage], int, int]:
    optional = layout.optional_arrays() if optional is None else optional
    damage, files, nread = [], 0, 0
    for name in products:
        shard_layout, arr = layouts[name], arrays[name]
        unit_damage = []
        for key, file in cube.unit_files(path, arr, name, leading):
            if name in optional and not os.path.exists(file):
                continue
            problems, n = _check_file(shard_layout, file, key)
            files += 1
            nread += n
            unit_damage += [Damage(level, unit, name, key, p) for p in problems]
        if not unit_damage and shard_layout.shard.compressed:
            try:                            # checksums passed: make sure the codecs decode too
                np.asarray(arr[leading])
            except Exception as err:  # noqa: BLE001 - any decoding failure is damage
                unit_damage.append(Damage(level, unit, name, "", f"does not decode: {type(err).__name__}: {err}"))
        damage += unit_damage
    return damage, files, nread


def _read_flags(arr, level: str, unit_of) -> tuple[np.ndarray, list[Damage]]:
    """A done-flag array; unreadable flag chunks count as done and damaged (clearing rewrites them)."""
    try:
        return np.asarray(arr[...]) == 1, []
    except Exception:  # noqa: BLE001 - a corrupted flag chunk: find which, element by element
        flags = np.zeros(arr.shape, dtype=bool)
        damage = []
        for index in np.ndindex(*arr.shape):
            try:
                flags[index] = int(arr[index]) == 1
            except Exception as err:  # noqa: BLE001
                flags[index] = True
                damage.append(Damage(level, unit_of(index), arr.basename if hasattr(arr, "basename") else "flag",
                                     "", f"done-flag unreadable ({type(err).__name__})"))
        return flags, damage


def _node_type(meta: Path) -> str | None:
    """``node_type`` of a zarr.json (None when absent or unreadable: metadata_problems reports that)."""
    try:
        return json.loads(meta.read_text()).get("node_type")
    except (OSError, ValueError):
        return None


def metadata_problems(path: str) -> list[Damage]:
    """Array metadata that does not parse, consolidated metadata out of date, an interrupted drop."""
    out = []
    present = {}
    for entry in sorted(Path(path).iterdir()):
        meta = entry / "zarr.json"
        if entry.is_dir() and meta.exists():
            try:
                present[entry.name] = tuple(json.loads(meta.read_text()).get("shape", ()))
            except (OSError, ValueError) as err:
                out.append(Damage("metadata", (), entry.name, "zarr.json", f"metadata unreadable: {err}"))
    attrs = cube.read_attrs(path)
    if cube.DROP_JOURNAL_ATTR in attrs:        # first: the drop's own writes leave no consolidated copy
        run = json.loads(attrs[cube.DROP_JOURNAL_ATTR])["run"]
        return out + [Damage("metadata", (), "run", "", f"removing run {run!r} was interrupted: rerun "
                                                        f"`cmbcube drop {path} run --run {run}` to finish it")]
    try:
        consolidated = consolidated_metadata(path)
    except Exception as err:  # noqa: BLE001
        return out + [Damage("metadata", (), "(root)", "zarr.json", f"root metadata unreadable: {err}")]
    if consolidated is None:
        out.append(Damage("metadata", (), "(root)", "zarr.json", "no consolidated metadata"))
    else:
        listed = {k: tuple(getattr(v, "shape", ())) for k, v in consolidated.metadata.items()}
        stale = sorted(set(listed) ^ set(present)) + sorted(k for k in set(listed) & set(present)
                                                           if listed[k] != present[k])
        if stale:
            out.append(Damage("metadata", (), "(root)", "zarr.json",
                              f"consolidated metadata out of date ({', '.join(stale[:8])})"))
    return out


def verify(path: str, products=None, clear: bool = False, workers: int | None = None,
           progress: bool | None = None) -> VerifyReport:
    """Read back every finished unit of the store (``products`` only, if given) and report the damage."""
    path = str(path)
    if cube.icechunk_store.handles(path) or objstore.handles(path):      # chunks read back through the guard
        return icechunk_versions.verify(path, products, clear, progress)
    cube.local_store_attrs(path, "verify reads")          # a local cmbcube store, or a clear error
    t0 = time.perf_counter()
    report = VerifyReport(path)
    report.damage += metadata_problems(path)
    every = layout.unit_products()                  # from the product table, read now
    run_level = {flag: layout.unit_products(flag) for flag in ("pred_done", "analysis_done")}
    group = cube.fresh_group(path)
    # arrays whose own zarr.json does not parse are reported by metadata_problems and never opened (listing
    # the group's members would parse them all and fail on the first)
    names = {entry.name for entry in Path(path).iterdir() if _node_type(entry / "zarr.json") == "array"}
    if products:
        unknown = [p for p in products if p not in every]
        if unknown:
            raise InputError(f"{param('products')} {','.join(unknown)}: unknown; allowed: {', '.join(every)}")
        absent = [p for p in products if p not in names]
        if absent:
            raise InputError(f"{param('products')} {','.join(absent)}: not in {path}; present: "
                             f"{', '.join(p for p in every if p in names)}")
        wanted = list(products)
    else:
        wanted = [p for p in every if p in names]
    sim_products = [p for p in wanted if p in layout.unit_products("sim_done")]
    pred_products = [p for p in wanted if p in run_level["pred_done"] and "pred_done" in names]
    ana_products = [p for p in wanted if p in run_level["analysis_done"] and "analysis_done" in names]
    arrays = {name: group[name] for name in sim_products + pred_products + ana_products}
    layouts = {name: _layout(group, name, 3 if name in run_level["pred_done"] + run_level["analysis_done"] else 2,
                             names) for name in arrays}
    report.unchecked_checksums = sorted(n for n, lay in layouts.items() if not lay.shard.checksum)

    jobs = []                                  # (level, unit, leading, products)
    if sim_products:
        flags, bad = _read_flags(group["sim_done"], "sim", lambda i: (SPLITS[i[0]], int(i[1])))
        report.damage += bad
        jobs += [("sim", (SPLITS[i], int(j)), (i, int(j)), sim_products) for i, j in zip(*np.nonzero(flags))]
    runs = [str(r) for r in group["run"][...]] if "run" in names else []
    for level, flag_name, prods in (("pred", "pred_done", pred_products), ("analysis", "analysis_done", ana_products)):
        if not prods:
            continue
        flags, bad = _read_flags(group[flag_name], level, lambda i: (runs[i[0]], SPLITS[i[1]], int(i[2])))
        report.damage += bad
        jobs += [(level, (runs[r], SPLITS[i], int(j)), (int(r), i, int(j)), prods)
                 for r, i, j in zip(*np.nonzero(flags)) if r < len(runs)]
    report.units = len(jobs)
    # pred_sigma; and cosmo_params without a CMB (all NaN: zarr writes no chunk equal to the fill value)
    optional = set(layout.optional_arrays(cube.store_recipe(path)["cmb"]["enabled"]))
    workers = workers or min(8, (os.cpu_count() or 2) * 2)
    from cmbcube.progress import bar as progress_bar
    bar = progress_bar(len(jobs), "verify", unit="unit", progress=progress, where=f"{path} (read only)")
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = [pool.submit(_check_unit, path, arrays, layouts, level, unit, leading, prods, optional)
                       for level, unit, leading, prods in jobs]
            for fut in as_completed(futures):
                damage, files, nread = fut.result()
                report.damage += damage
                report.files += files
                report.bytes_read += nread
                bar.update(1)
                if damage:
                    bar.set_postfix(damaged=len({d.unit for d in report.damage}))
    finally:
        bar.close()
    report.damage.sort(key=lambda d: ({"metadata": 0, "sim": 1, "pred": 2, "analysis": 3}[d.level],
                                      tuple(map(str, d.unit)), d.product, d.key))
    if clear and report.damage:
        with cube.store_lock(path):
            _clear(path, report, runs)
        report.cleared = True
    report.seconds = time.perf_counter() - t0
    return report


def _clear(path: str, report: VerifyReport, runs: list[str]) -> None:
    """Delete the damaged files and clear the done-flags of their units (metadata: reconsolidate)."""
    group = cube.fresh_group(path)
    for d in report.damage:
        if d.key and d.level != "metadata":
            leading = (SPLITS.index(d.unit[0]), d.unit[1]) if d.level == "sim" else \
                (runs.index(d.unit[0]), SPLITS.index(d.unit[1]), d.unit[2])
            for key, file in cube.unit_files(path, group[d.product], d.product, leading):
                if key == d.key and os.path.exists(file):
                    os.remove(file)
    for split, sim in report.units_at("sim"):
        cube.clear_done(path, split, sim)
    for run, split, sim in report.units_at("pred"):
        cube.clear_run_done(path, runs.index(run), split, sim)
    for run, split, sim in report.units_at("analysis"):
        cube.clear_run_done(path, runs.index(run), split, sim, analysis_only=True)
    meta = [d for d in report.damage if d.level == "metadata"]
    if meta and not any("unreadable" in d.problem or "interrupted" in d.problem for d in meta):
        cube.consolidate(path)


def format_report(report: VerifyReport) -> str:
    """Format a verify report for the terminal."""
    lines = []
    size = cube.human(report.bytes_read)
    head = (f"verified {report.store}: {report.units} finished unit(s), {report.files} file(s), {size} read "
            f"in {report.seconds:.1f} s")
    lines.append(head)
    if report.unchecked_checksums:
        lines.append(f"  note: {', '.join(report.unchecked_checksums)} stored without crc32c checksums "
                     "(storage.checksum: false): corruption is found only where it breaks decoding")
    if report.ok:
        lines.append("  no damage found")
        return "\n".join(lines)
    sections = (("metadata", "metadata", ("product",)),
                ("sim", "damaged sims (rebuilt by rerunning cmbcube simulate)", ("split", "sim", "product")),
                ("pred", "damaged predictions (rebuilt by rerunning cmbcube ilc / predict for the run)",
                 ("run", "split", "sim", "product")),
                ("analysis", "damaged analyses (rebuilt by rerunning cmbcube analyze)",
                 ("run", "split", "sim", "product")))
    for level, title, columns in sections:
        rows = [d for d in report.damage if d.level == level]
        if not rows:
            continue
        nunits = len({d.unit for d in rows})
        lines.append(f"{title}: {nunits if level != 'metadata' else len(rows)}")
        table = [list(columns) + ["problem"]]
        for d in rows:
            table.append([str(v) for v in d.unit] + [d.product, d.problem])
        widths = [max(len(r[k]) for r in table) for k in range(len(columns))]
        for row in table:
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    if report.cleared:
        lines.append("cleared the done-flags of the damaged units and deleted their damaged files; "
                     "rerun the stages above to rebuild exactly them")
    else:
        lines.append("rerun with --clear to clear their done-flags, then rerun the stages above")
    return "\n".join(lines)
