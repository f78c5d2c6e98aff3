"""Whether a store's metadata can be trusted before a stage writes into it or a reader opens it.

- every array's own ``zarr.json`` (and the root's) must parse: a stage that writes refuses a store
  where one does not (StoreError naming the file, exit 2; ``cmbcube verify`` lists the damage), while
  ``cmbcube.open``, which reads the root's consolidated copy, only warns, naming the file;
- a run removal (``cmbcube drop STORE run --run NAME``) that was interrupted leaves the run axis half
  moved: readers and stages refuse the store with the command that finishes it, instead of xarray's
  "conflicting sizes for dimension 'run'" or data read at shifted run indices.

A handful of small JSON files are read: milliseconds, whatever the number of sims.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from cmbcube.cube.base import DROP_JOURNAL_ATTR, StoreError, is_remote
from cmbcube.errors import command

log = logging.getLogger("cmbcube")
_WARNED: set = set()                     # (store, damaged files) already warned about in this process


def _problem(err: Exception) -> str:
    if isinstance(err, json.JSONDecodeError):
        return f"not valid JSON ({err.msg} at byte {err.pos}; truncated or overwritten?)"
    if isinstance(err, OSError):
        return f"unreadable ({err.strerror or err})"
    return str(err)


def _parse(meta: Path) -> dict:
    doc = json.loads(meta.read_bytes())
    if not isinstance(doc, dict):
        raise ValueError(f"not a zarr metadata document (a JSON {type(doc).__name__})")
    return doc


def metadata_damage(path: str) -> list[tuple[str, str]]:
    """(file, problem) for the root's and every array's ``zarr.json`` that does not parse, and for an
    array folder the consolidated metadata lists whose own ``zarr.json`` is gone.  Local stores only."""
    root = Path(path)
    out, listed = [], set()
    try:
        doc = _parse(root / "zarr.json")
        listed = set((doc.get("consolidated_metadata") or {}).get("metadata") or {})
    except (OSError, ValueError) as err:
        out.append((str(root / "zarr.json"), _problem(err)))
    try:
        entries = sorted(e for e in root.iterdir() if e.is_dir() and not e.name.startswith("."))
    except OSError as err:
        return out + [(str(root), _problem(err))]
    for entry in entries:
        meta = entry / "zarr.json"
        if meta.exists():
            try:
                _parse(meta)
            except (OSError, ValueError) as err:
                out.append((str(meta), _problem(err)))
        elif entry.name in listed:
            out.append((str(meta), "missing (the consolidated metadata lists this array)"))
    return out


def _listing(damage: list) -> str:
    text = "; ".join(f"{file}: {problem}" for file, problem in damage[:3])
    return text + (f"; and {len(damage) - 3} more" if len(damage) > 3 else "")


def check_metadata(path: str, stage: str = "cmbcube") -> None:
    """StoreError (exit 2) naming the damaged metadata files of a local store, before ``stage`` writes."""
    if is_remote(str(path)):
        return
    damage = metadata_damage(str(path))
    if damage:
        raise StoreError(f"{path}: damaged metadata: {_listing(damage)}; {stage} refuses to write into this store "
                         f"(nothing was written). `cmbcube verify {path}` lists the damage")


def warn_damaged_metadata(path: str) -> None:
    """For readers of the consolidated copy (``cmbcube.open``): a warning, once per store and damage."""
    if is_remote(str(path)):
        return
    damage = metadata_damage(str(path))
    key = (str(path), tuple(file for file, _ in damage))
    if damage and key not in _WARNED:
        _WARNED.add(key)
        log.warning("%s: damaged metadata: %s. Reading through the store's consolidated copy of it; stages "
                    "that write refuse this store; `cmbcube verify %s` lists the damage", path, _listing(damage), path)


def refuse_interrupted_drop(attrs, path: str) -> None:
    """StoreError (exit 2) if a run's removal from the run axis was interrupted (its journal is set)."""
    if DROP_JOURNAL_ATTR not in attrs:
        return
    try:
        name = str(json.loads(attrs[DROP_JOURNAL_ATTR])["run"])
    except (TypeError, ValueError, KeyError):
        name = "NAME"
    name = name if len(name) <= 100 else name[:100]
    raise StoreError(f"{path}: removing run {name!r} from this store was interrupted (cmbcube drop stopped "
                     f"half-way), so its run axis is half moved and nothing reads or writes it until that is "
                     f"finished: run `{command('drop', path, 'run', run=name)}` (it resumes where it stopped)")
