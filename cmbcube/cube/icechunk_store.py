"""Icechunk repositories as cmbcube stores: where they are, the sessions reads and writes go through,
and commits (conflicts with other writers resolved where they can be, reported by name where not).

A store location ``icechunk+file:///PATH`` or ``icechunk+s3://BUCKET/PREFIX`` names an Icechunk
repository (transactional Zarr v3 with snapshots, branches and tags) holding the same cube a plain
Zarr directory holds (store_layout.md).  The spelling follows pip's ``git+https://...@ref``: the
scheme names the format and the transport, a trailing ``@NAME`` names a version (a tag, a branch
or a snapshot id) to read.  Credentials and the endpoint of S3 come from the environment
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``,
``AWS_ENDPOINT_URL``), never from the store or the recipe.

How writes go (the process running a stage is the *driver*):

- driver-side changes (the store's template, a new run, attributes, small variables) go into the
  driver's writable session; ``store.consolidate`` (what every stage calls when its metadata is
  complete) commits them (:func:`commit`);
- units of work write through *forked* sessions, one per task, on whichever worker runs it; the
  driver merges each finished task's fork and commits every few units
  (:mod:`cmbcube.cube.icechunk_batches`), so a killed stage loses only its uncommitted units and a
  rerun resumes from the last commit (the done-flags are committed with their data);
- a commit that finds another writer's commit first is rebased; where that writer changed array
  metadata (a run axis grown by another run) the commit's chunks are carried onto the new tip,
  unless the other writer wrote the very same chunks: :class:`VersionConflict` names them.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import sys
import threading

from cmbcube.errors import InputError, command, param

log = logging.getLogger("cmbcube")

PREFIX = "icechunk+"
SCHEMES = ("file", "s3")
BRANCH = "main"
VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
SPELLING = "icechunk+file:///PATH or icechunk+s3://BUCKET/PREFIX (optionally @VERSION: a tag, branch or snapshot)"


class IcechunkError(InputError, RuntimeError):
    """An Icechunk store location cannot be used as asked (exit 2)."""


class VersionConflict(IcechunkError):
    """Another writer committed the same chunks, or the same metadata, at the same time."""


def handles(path) -> bool:
    """Tell whether ``path`` names an Icechunk repository (``icechunk+...://``)."""
    return str(path).startswith(PREFIX)


@dataclasses.dataclass(frozen=True)
class Location:
    url: str                 # the location without its version
    scheme: str              # file | s3
    root: str                # the directory (file) or the bucket (s3)
    prefix: str              # the key prefix within the bucket ("" for file)
    version: str | None      # tag, branch or snapshot id to read (None: the branch main)


def parse(path) -> Location:
    """The parts of an ``icechunk+...`` location; IcechunkError names what is wrong."""
    text = str(path)
    head, sep, rest = text.partition("://")
    scheme = head[len(PREFIX):] if head.startswith(PREFIX) else head
    if not sep or scheme not in SCHEMES or not rest.strip("/"):
        raise IcechunkError(f"{text}: not an Icechunk store location; allowed: {SPELLING}")
    base, version = rest, None
    if "@" in rest.rsplit("/", 1)[-1]:
        base, version = rest.rsplit("@", 1)
        check_version_name(version, f"{text}: version")
    base = base.rstrip("/") or "/"
    if scheme == "file":
        return Location(f"{head}://{base}", scheme, os.path.abspath(os.path.expanduser(base)), "", version)
    bucket, _, prefix = base.partition("/")
    return Location(f"{head}://{base}", scheme, bucket, prefix.strip("/"), version)


def check_version_name(name, what: str = "tag") -> str:
    """Return ``name`` if it is a valid tag or branch name, else raise IcechunkError."""
    if not isinstance(name, str) or not VERSION_NAME.fullmatch(name):
        raise IcechunkError(f"{what} {name!r}: use 1-100 letters, digits, '.', '_', '-', starting with a letter "
                            "or digit")
    return name


def with_version(path: str, version: str | None) -> str:
    """``path`` pinned to ``version`` (``--version`` on read-only commands); plain paths refuse one."""
    if version is None:
        return str(path)
    if not handles(path):
        raise IcechunkError(f"{param('version')} {version}: only Icechunk stores have versions ({SPELLING}); "
                            f"{path} is not one")
    check_version_name(version, param("version"))
    return parse(path).url + "@" + version


# ----------------------------------------------------------------------------- repositories
_REPOS: dict = {}                        # url -> icechunk.Repository (this process)


def _s3_environment() -> dict:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return {"endpoint_url": endpoint, "region": region, "allow_http": bool(endpoint and endpoint.startswith("http:")),
            "force_path_style": bool(endpoint)}


def storage(loc: Location):
    """Where the repository lives, as icechunk's Storage (S3 credentials from the environment)."""
    import icechunk
    if loc.scheme == "file":
        return icechunk.local_filesystem_storage(loc.root)
    env = _s3_environment()
    keys = {}
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        keys = {"access_key_id": os.environ["AWS_ACCESS_KEY_ID"],
                "secret_access_key": os.environ["AWS_SECRET_ACCESS_KEY"],
                "session_token": os.environ.get("AWS_SESSION_TOKEN")}
    else:
        keys = {"from_env": True}
    return icechunk.s3_storage(bucket=loc.root, prefix=loc.prefix or None, **env, **keys)


def _quiet_local_warning() -> None:
    # icechunk warns (through its Rust log) that local-disk repositories are unsafe for concurrent commits;
    # cmbcube's docs say so once (store_layout.md), not every command
    if "ICECHUNK_LOG" not in os.environ:
        import icechunk
        icechunk.set_logs_filter("icechunk=error")


def exists(path) -> bool:
    """Tell whether the repository at ``path`` exists (IcechunkError when it cannot be reached)."""
    loc = parse(path)
    if loc.url in _REPOS:
        return True
    if loc.scheme == "file" and not os.path.isdir(loc.root):
        return False
    import icechunk
    _quiet_local_warning()
    try:
        return bool(icechunk.Repository.exists(storage(loc)))
    except Exception as err:  # noqa: BLE001 - unreachable endpoint, bad credentials: say which
        raise IcechunkError(f"{loc.url}: cannot reach the repository ({type(err).__name__}: {err}); check "
                            "AWS_ENDPOINT_URL and the AWS_* credentials in the environment") from None


def repository(path, create: bool = False):
    """The icechunk Repository at ``path`` (opened once per process); ``create`` makes a new one."""
    import icechunk
    loc = parse(path)
    repo = _REPOS.get(loc.url)
    if repo is not None:
        return repo
    _quiet_local_warning()
    if create:
        if loc.scheme == "file" and not os.path.isdir(os.path.dirname(loc.root)):
            raise IcechunkError(f"{param('store')} {path}: parent directory {os.path.dirname(loc.root)} does not exist")
        repo = icechunk.Repository.create(storage(loc))
    else:
        if not exists(path):
            raise IcechunkError(f"{loc.url}: no such store (no Icechunk repository there; "
                                f"`{command('simulate', store=...)}` makes one)")
        repo = icechunk.Repository.open(storage(loc))
    _REPOS[loc.url] = repo
    return repo


def resolve(path) -> dict:
    """The session arguments of the version ``path`` names: {"tag": ...}, {"branch": ...} or
    {"snapshot_id": ...}; IcechunkError lists the tags and branches when none matches."""
    loc = parse(path)
    repo = repository(path)
    name = loc.version or BRANCH
    if loc.version and name in repo.list_tags():
        return {"tag": name}
    if name in repo.list_branches():
        return {"branch": name}
    if loc.version and re.fullmatch(r"[0-9A-Z]{20}", name):
        try:
            repo.lookup_snapshot(name)
            return {"snapshot_id": name}
        except Exception:  # noqa: BLE001 - not a snapshot of this repository
            pass
    raise IcechunkError(f"{loc.url}: no version {name!r}; tags: {', '.join(sorted(repo.list_tags())) or 'none'}; "
                        f"branches: {', '.join(sorted(repo.list_branches()))} (or a snapshot id)")


# ----------------------------------------------------------------------------- sessions
_DRIVER: dict = {}                      # url -> this process's writable session (uncommitted driver changes)
_TASK = threading.local()               # .forks: {url: ForkSession} while a task runs in this thread


def task_fork(url: str):
    """Return this thread's fork session of ``url`` while a task runs in it, else None."""
    return getattr(_TASK, "forks", {}).get(url)


def set_task_fork(url: str, fork) -> None:
    """Set (or, with ``fork`` None, forget) this thread's fork session of ``url``."""
    forks = getattr(_TASK, "forks", None)
    if forks is None:
        forks = _TASK.forks = {}
    if fork is None:
        forks.pop(url, None)
    else:
        forks[url] = fork


def writable_session(path):
    """The driver's writable session on the store's branch (opened on first use, until committed)."""
    loc = parse(path)
    session = _DRIVER.get(loc.url)
    if session is None:
        where = resolve(path)
        if "branch" not in where:
            raise IcechunkError(f"{path}: version {loc.version!r} is a fixed snapshot (a tag or snapshot id) and "
                                "cannot be written; write to the store itself or to a branch")
        session = _DRIVER[loc.url] = repository(path).writable_session(where["branch"])
    return session


def store_for(path, write: bool = False):
    """The zarr store reads and writes of ``path`` go through in this process and thread: the running
    task's fork, else the driver's uncommitted session, else (reads) a read-only session at the
    version the path names (the branch main's tip by default)."""
    loc = parse(path)
    fork = task_fork(loc.url)
    if fork is not None:
        return fork.store
    if write or (loc.url in _DRIVER and not loc.version):
        return writable_session(path).store
    return repository(path).readonly_session(**resolve(path)).store


def snapshot_id(path) -> str:
    """The snapshot a read of ``path`` sees now."""
    return repository(path).readonly_session(**resolve(path)).snapshot_id


def discard(path) -> None:
    """Forget the driver's uncommitted changes (a failed metadata transaction: all or nothing)."""
    session = _DRIVER.pop(parse(path).url, None)
    if session is not None and session.has_uncommitted_changes:
        session.discard_changes()


def _command() -> str:
    argv = [os.path.basename(sys.argv[0] or "python")] + sys.argv[1:]
    return " ".join(a for a in argv if "=" not in a or not a.upper().startswith("AWS"))[:500]


def _changed(session) -> str:
    diff = session.status()
    names = sorted({n.strip("/") or "root" for n in (*diff.new_arrays, *diff.new_groups, *diff.updated_arrays,
                                                      *diff.updated_groups, *diff.updated_chunks)})
    return ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")


def commit(path, message: str | None = None, metadata: dict | None = None) -> str | None:
    """Commit the driver's changes to ``path`` (if any); returns the new snapshot id, else None."""
    loc = parse(path)
    session = _DRIVER.pop(loc.url, None)
    if session is None or not session.has_uncommitted_changes:
        return None
    return commit_session(path, session, message or f"metadata: {_changed(session)}", metadata)


def commit_session(path, session, message: str, metadata: dict | None = None) -> str:
    """Commit ``session``: rebased over other writers' commits; chunks carried onto the tip where the
    others changed array metadata; VersionConflict when both wrote the same chunk or metadata."""
    import icechunk

    from cmbcube import __version__
    meta = {"cmbcube_version": __version__, "command": _command(), **(metadata or {})}
    solver = icechunk.BasicConflictSolver(on_chunk_conflict=icechunk.VersionSelection.Fail)
    from cmbcube.drills import hold
    hold("COMMIT", re.sub(r"[^A-Za-z0-9]+", "_", str(meta.get("stage", "metadata"))))   # fault drills only
    for _ in range(50):
        try:
            snap = session.commit(message, metadata=meta, rebase_with=solver, rebase_tries=10)
            log.info("%s: committed %s (%s)", parse(path).url, snap, message)
            return snap
        except (icechunk.ConflictError, icechunk.RebaseFailedError):
            session = _carry_chunks(path, session)
    raise VersionConflict(f"{path}: could not commit after 50 tries (other writers kept committing); rerun")


def _carry_chunks(path, session):
    """A new session on the branch tip holding the chunks ``session`` wrote (its base is stale)."""
    import numpy as np
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.chunk_key_encodings import parse_chunk_key_encoding
    from zarr.core.sync import sync
    ours = session.status()
    meta = sorted({*ours.new_arrays, *ours.new_groups, *ours.updated_arrays, *ours.updated_groups,
                   *ours.deleted_arrays, *ours.deleted_groups})
    if meta:
        raise VersionConflict(f"{path}: another writer committed while this one changed the metadata of "
                              f"{', '.join(m.strip('/') or 'the root' for m in meta)}; nothing of this change was "
                              "written; rerun (it starts from the other writer's commit)")
    repo, branch = repository(path), session.branch or BRANCH
    theirs = repo.diff(from_snapshot_id=session.snapshot_id, to_branch=branch).updated_chunks
    clash = [(a, c) for a, coords in ours.updated_chunks.items() for c in coords if c in theirs.get(a, ())]
    if clash:
        a, c = clash[0]
        raise VersionConflict(f"{path}: another writer committed the same chunk(s) meanwhile: {len(clash)}, "
                              f"first {a.strip('/')} chunk {tuple(c)}; this commit was not written (the other "
                              "writer's data stays); rerun to see what is left to do")
    fresh = repo.writable_session(branch)
    source, target = session.store, fresh.store
    proto = default_buffer_prototype()
    for array, coords in ours.updated_chunks.items():
        meta = json.loads(sync(target.get(f"{array.strip('/')}/zarr.json", proto)).to_bytes())
        keys = parse_chunk_key_encoding(meta["chunk_key_encoding"])     # the array's key encoding, as zarr reads it
        for c in coords:
            key = f"{array.strip('/')}/{keys.encode_chunk_key(tuple(int(i) for i in np.atleast_1d(c)))}"
            buf = sync(source.get(key, proto))
            sync(target.delete(key) if buf is None else target.set(key, buf))
    log.info("%s: another writer committed first; carried %d chunk(s) onto its commit", path,
             sum(len(c) for c in ours.updated_chunks.values()))
    return fresh


# ----------------------------------------------------------------------------- what cube/store.py calls
def target(path, mode: str = "r"):
    """What zarr opens for ``path``: the path itself for a local store, the session's store for Icechunk,
    an FsspecStore for plain Zarr on object storage (:mod:`cmbcube.cube.objstore`)."""
    from cmbcube.cube import objstore
    if objstore.handles(path):
        return objstore.zarr_store(path, read_only=mode == "r")
    return store_for(path, write=mode != "r") if handles(path) else path


def create(path, ds, encoding) -> str:
    """A new repository holding the store's template (``layout.template``), in one commit: "created"."""
    import warnings
    loc = parse(path)
    if loc.version:
        raise IcechunkError(f"{param('store')} {path}: a new store has no versions yet; drop @{loc.version}")
    repo = repository(path, create=True)
    session = repo.writable_session(BRANCH)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        ds.to_zarr(session.store, mode="w-", compute=False, encoding=encoding, zarr_format=3, consolidated=False)
    commit_session(path, session, f"create the store (recipe {ds.attrs.get('recipe_name')!r}, hash "
                                  f"{str(ds.attrs.get('recipe_hash'))[:12]})", {"stage": "create"})
    return "created"


def chunk_exists(path, key: str) -> bool:
    """Tell whether the repository at ``path`` holds the key ``key``."""
    from zarr.core.sync import sync
    return bool(sync(store_for(path).exists(key)))


def retry_on_conflict(path, attempt, tries: int = 20):
    """``attempt()`` (a driver-side metadata change that commits itself, e.g. adding a run), again
    from the new tip when another writer's commit came first; once for plain stores."""
    if not handles(path):
        return attempt()
    for k in range(tries):
        try:
            return attempt()
        except VersionConflict:
            discard(path)
            if k == tries - 1:
                raise
            log.info("%s: another writer committed first; retrying on its commit", path)
        except BaseException:
            discard(path)                    # all or nothing: the failed change is not committed later
            raise


def snapshot_of(store) -> str | None:
    """The snapshot id an (optionally wrapped) IcechunkStore reads."""
    while store is not None and not hasattr(store, "session"):
        store = getattr(store, "_store", None)
    try:
        return store.session.snapshot_id if store is not None else None
    except Exception:  # noqa: BLE001 - a fork's store has no session object
        return None
