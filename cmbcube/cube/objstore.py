"""Plain Zarr stores on object storage: ``s3://BUCKET/PREFIX``, read and written through fsspec (s3fs)
and zarr's FsspecStore, for collaborations without Icechunk.

The store is the same cube a local directory holds (store_layout.md), one object per file.  Credentials
and the endpoint come from the environment, never from the store or the recipe: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``, ``AWS_ENDPOINT_URL`` (an S3-compatible
server: MinIO, Ceph, moto...), or any other source botocore reads (profiles, instance roles).

How writes differ from a local store:

- every chunk (shard) and every metadata document is one PUT, atomic per object: what a local store does
  with a temporary file and a rename is a direct PUT here; a unit's done-flag is still written after
  its data, so a reader never sees a flag whose data is missing;
- there are no locks: a second writer on the same store at the same time is NOT kept apart (two
  simulate runs may compute the same sims, two stages adding runs at once may overwrite each other's
  run axis).  One writer at a time per store, or an Icechunk store (``icechunk+s3://``), which commits
  transactions and keeps versions; plain object storage keeps neither;
- no local-disk checks (free space, file-name length, damaged metadata files before a write); ``cmbcube
  verify`` reads every finished unit back instead;
- ``cmbcube drop`` edits objects one by one (:mod:`cmbcube.cube.drop_remote`), not atomically; an
  interrupted run removal is finished by rerunning it.
"""
from __future__ import annotations

import logging
import os

from cmbcube.cube.base import StoreError

log = logging.getLogger("cmbcube")

SCHEMES = ("s3",)
SPELLING = "s3://BUCKET/PREFIX (plain Zarr on S3-compatible object storage)"
NO_LOCKS = ("plain Zarr on object storage has no locks: a second writer on this store at the same time is not kept "
            "apart (one writer at a time, or an Icechunk store, icechunk+s3://, for transactions and versions)")
_WARNED: set = set()


def handles(path) -> bool:
    """Tell whether ``path`` is a URL of object storage this module opens."""
    head, sep, rest = str(path).partition("://")
    return bool(sep) and head in SCHEMES


def _options() -> dict:
    """s3fs settings: no listings cache (other writers add objects), the endpoint from the environment."""
    opts: dict = {"use_listings_cache": False}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        opts["endpoint_url"] = endpoint
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        opts["client_kwargs"] = {"region_name": region}
    return opts


def zarr_store(path, read_only: bool = True, storage_options: dict | None = None):
    """Zarr's FsspecStore on ``path`` (``storage_options`` replace the environment's settings, as
    ``cmbcube.open(..., key=..., secret=...)`` passes them).  A writable one warns once per store and
    process that nothing keeps a second writer apart."""
    from zarr.storage import FsspecStore
    url = str(path).rstrip("/")
    if not read_only and url not in _WARNED:
        _WARNED.add(url)
        log.warning("%s: %s", url, NO_LOCKS)
    opts = {**_options(), **(storage_options or {})}
    try:
        return FsspecStore.from_url(url, storage_options=opts, read_only=read_only)
    except ImportError as err:
        raise StoreError(f"{url}: reading and writing s3:// needs the s3fs package ({err}); pip install s3fs") \
            from None


def _sync(coro):
    from zarr.core.sync import sync
    return sync(coro)


def chunk_exists(path, key: str) -> bool:
    """Whether the object ``key`` (e.g. ``obs/c/0/1/0/0/0``) exists in the store."""
    return bool(_sync(zarr_store(path).exists(key)))


def exists(path) -> bool:
    """Whether a Zarr store (its root ``zarr.json``) is at ``path``; StoreError when the endpoint cannot be
    reached or the credentials are refused."""
    try:
        return chunk_exists(path, "zarr.json")
    except (OSError, ValueError) as err:
        raise StoreError(f"{path}: cannot reach the object store ({type(err).__name__}: {err}); check the bucket, "
                         "AWS_ENDPOINT_URL and the AWS_* credentials in the environment") from None


def create(path, ds, encoding) -> str:
    """A new store holding the template (``layout.template``), metadata consolidated: "created".  Not
    atomic as a whole (object storage has no rename): an interrupted creation can leave a partial
    template behind; empty the prefix and rerun.  A missing bucket or refused credentials: StoreError."""
    import warnings

    import zarr
    store = zarr_store(path, read_only=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        try:
            ds.to_zarr(store, mode="w-", compute=False, encoding=encoding, zarr_format=3, consolidated=False)
            zarr.consolidate_metadata(store)
        except (OSError, PermissionError) as err:
                raise StoreError(f"{path}: cannot create the store there ({type(err).__name__}: {err}); check that "
                             "the bucket exists and that the AWS_* credentials in the environment may write to "
                             "it") from None
    return "created"
