"""Where a store can live: the length of its name, whether its folder can be written, and how a new
store is built in a temporary sibling and renamed into place.

Checked before any work starts (issue 21): a name the file system cannot hold, or a folder the process
cannot write in, is a StoreError (exit 2) naming the limit or the OS error, never a traceback after
minutes of computing.  Writability is tried for real (a file created and removed): ``os.access``
says yes to root on a read-only mount or an immutable folder.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path

from cmbcube.cube import icechunk_store as ics
from cmbcube.cube.base import StoreError, is_remote, os_error_message
from cmbcube.cube.health import check_metadata, refuse_interrupted_drop
from cmbcube.cube.opener import read_attrs
from cmbcube.errors import command, param

DEFAULT_NAME_MAX = 255                   # Linux file systems; os.pathconf says where it can
DEFAULT_PATH_MAX = 4096
DEEPEST_KEY = 64                         # bytes a store adds below its path (obs/c/2/19999/8/2/0, temporaries)


def runs_dir(store) -> Path:
    """The folder holding a store's runs' checkpoints: ``<store>.runs`` beside a local store or an
    ``icechunk+file://`` repository; for a store on object storage (``s3://``, ``icechunk+s3://``) a
    local folder ``$CMBCUBE_RUNS_DIR/<location>.runs`` (default ``~/.cache/cmbcube/runs``): checkpoints
    are files torch writes and reads, kept on the machine that trains."""
    text = str(store).rstrip("/")
    if "://" not in text:
        return Path(text + ".runs")
    if ics.handles(text) and ics.parse(text).scheme == "file":
        return Path(ics.parse(text).root.rstrip("/") + ".runs")
    base = Path(os.environ.get("CMBCUBE_RUNS_DIR") or Path.home() / ".cache" / "cmbcube" / "runs")
    url = ics.parse(text).url if ics.handles(text) else text
    return base / (re.sub(r"[^A-Za-z0-9._-]+", "_", url.split("://", 1)[1]).strip("_")[:200] + ".runs")


def runs_suffix() -> str:
    """What cmbcube appends to a store's name for the checkpoints folder beside it (``.runs``): a store name
    leaves room for it.  Other folders beside the store (``.namaster``) are named by :func:`sibling_name`."""
    return Path(runs_dir("s")).name[1:]


def sibling_name(store, suffix: str) -> str:
    """``<store><suffix>``; when that name is longer than the file system allows, the store's name is cut
    and a hash of it added (``<cut>-<hash><suffix>``), so a store of a legal name still gets its folder."""
    path = str(store).rstrip("/")
    name = os.path.basename(path)
    name_max, _ = name_limits(path)
    if len(os.fsencode(name + suffix)) <= name_max:
        return path + suffix
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:12]
    room = max(name_max - len(os.fsencode(suffix)) - len(digest) - 1, 0)
    short = os.fsencode(name)[:room].decode("utf-8", "ignore")
    return os.path.join(os.path.dirname(path), f"{short}-{digest}{suffix}")


def _existing_ancestor(path: Path) -> Path:
    folder = path
    while not os.path.isdir(folder) and folder != folder.parent:
        folder = folder.parent
    return folder


def _pathconf(folder: Path, name: str, default: int) -> int:
    try:
        value = os.pathconf(folder, name)
    except (OSError, ValueError):
        return default
    return value if value and value > 0 else default


def name_limits(path: str) -> tuple[int, int]:
    """(NAME_MAX, PATH_MAX) of the file system that holds (or will hold) ``path``."""
    folder = _existing_ancestor(Path(os.path.abspath(path)).parent)
    return _pathconf(folder, "PC_NAME_MAX", DEFAULT_NAME_MAX), _pathconf(folder, "PC_PATH_MAX", DEFAULT_PATH_MAX)


def check_store_path(path: str, option: str = param("store")) -> None:
    """Refuse a local store path the file system cannot hold, before anything reads or creates it: a
    folder name over NAME_MAX bytes, a store name that leaves no room for the checkpoints folder beside it
    (``NAME.runs``), or a path too long for the files inside the store."""
    if not path or is_remote(str(path)):
        return
    name_max, path_max = name_limits(path)
    absolute = os.path.abspath(path)
    parts = Path(absolute).parts
    for part in parts[1:-1]:
        if len(os.fsencode(part)) > name_max:
            raise StoreError(f"{option} {_short(path)}: the folder name {_short(part)!r} is {len(os.fsencode(part))} "
                             f"bytes; this file system allows at most {name_max} per name")
    name = parts[-1] if len(parts) > 1 else ""
    if name:
        extra = runs_suffix()
        size = len(os.fsencode(name))
        if size + len(extra) > name_max:
            raise StoreError(f"{option} {_short(path)}: the store name is {size} bytes; this file system allows "
                             f"{name_max} per name and the trainings' folder beside the store is NAME{extra}, so "
                             f"use a name of at most {name_max - len(extra)} bytes")
    if len(os.fsencode(absolute)) + DEEPEST_KEY > path_max:
        raise StoreError(f"{option} {_short(path)}: the path is {len(os.fsencode(absolute))} bytes; the files "
                         f"inside a store add up to {DEEPEST_KEY} more and this system allows {path_max} per path: "
                         "use a shorter path")


def _short(text: str, limit: int = 60) -> str:
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit // 2]}...{text[-limit // 2:]}"


def temporary_sibling(target: Path, tag: str) -> Path:
    """``.NAME.TAG-xxxxxxxx`` beside ``target`` (cut and hashed by :func:`sibling_name` when NAME is too long
    to take the additions; the store's final name is unchanged)."""
    hidden = target.parent / f".{target.name}"
    return Path(sibling_name(hidden, f".{tag}-{uuid.uuid4().hex[:8]}"))


def atomic_create(path: Path, build) -> None:
    """Build a store in a sibling temporary folder and rename it into place: all or nothing."""
    tmp = temporary_sibling(path, "creating")
    try:
        build(str(tmp))
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def probe_writable(folder: str, store: str, what: str) -> None:
    """Create and remove a file in ``folder``: a StoreError naming the OS error if that fails (a
    read-only mount, an immutable folder, no permission; root included)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".cmbcube-probe-", dir=folder)
    except OSError as err:
        err.filename = str(folder)
        raise StoreError(os_error_message(store, err, what) + "; nothing was written") from None
    os.close(fd)
    try:
        os.unlink(name)
    except OSError:
        pass


def check_new_store_folder(path: str) -> None:
    """The folder a new store goes in exists and can be written in (tried for real)."""
    target = Path(path)
    if not target.parent.is_dir():
        what = "is not a folder" if target.parent.exists() else "does not exist"
        raise StoreError(f"{param('store')} {path}: parent directory {target.parent} {what}; nothing was created")
    probe_writable(str(target.parent), path, f"create the store in {target.parent}")


def check_writable_store(path: str) -> None:
    """An existing local store can be written (its root folder, where metadata goes); no-op for URLs."""
    if is_remote(str(path)) or not os.path.isdir(path):
        return
    probe_writable(str(path), str(path), "write into the store")


def check_writable_store_state(path: str, stage: str = "cmbcube") -> None:
    """Before a stage writes into an existing local store: its metadata parses, no run removal is half
    done, and its folder can be written in (tried for real)."""
    if is_remote(str(path)):
        return
    check_metadata(path, stage)
    refuse_interrupted_drop(read_attrs(path), path)
    check_writable_store(path)


def require_store(path: str) -> dict:
    """The attributes of the cmbcube store at ``path``; a StoreError (exit 2) that says "no such store" for a
    missing local path and names what is wrong with a path that is not a cmbcube store, before any stage
    opens arrays in it; for a local store also damaged metadata, a half-done run removal and a folder
    that cannot be written (the stages calling it write into the store)."""
    path = str(path)
    if not is_remote(path) and not os.path.isdir(path):
        raise StoreError(f"{path}: no such store (a cmbcube store is the directory "
                         f"`{command('simulate', store=...)}` or `{command('ingest-cmbml', store=...)}` made)")
    attrs = read_attrs(path)
    if "recipe_hash" not in attrs:
        raise StoreError(f"{path} is a Zarr store but not a cmbcube store")
    check_writable_store_state(path)         # the stages calling this write: metadata parses, writable
    return attrs
