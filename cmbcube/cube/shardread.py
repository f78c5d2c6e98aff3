"""The one reader of Zarr v3 chunk layouts, and a fast path for whole maps out of local shards.

:class:`ShardLayout` parses an array's metadata document (``zarr.json``): sharded or not, the
inner grid of a shard, its codecs (crc32c, compression), where its index lies; and parses a
shard index (one (offset, nbytes) uint64 pair per inner chunk, then the index's crc32c).  The
fast reader, the read guard (:mod:`cmbcube.cube.guard`) and ``cmbcube verify`` all use it.

zarr-python decodes a shard inner chunk by inner chunk through its async codec pipeline (~0.25 ms
per map, measured); for the common case of an uncompressed shard on a local filesystem
:class:`ShardReader` reads the maps with one ``pread`` each, their crc32c verified, straight into
the output.  Anything else falls back to zarr.
"""
from __future__ import annotations

import dataclasses
import os
import struct

import numpy as np

from cmbcube.cube.layout import FLAG_STAGE, product_of
from cmbcube.errors import InputError, command
from cmbcube.recipe import SPLITS

EMPTY = 2 ** 64 - 1           # a shard index's (offset, nbytes) of an absent inner chunk


class DamagedUnitError(InputError):
    """A unit of work is marked done but one of its chunks is missing or corrupted."""


def crc_ok(blob) -> bool:
    """Whether ``blob`` ends with the crc32c (4 bytes, little endian) of the rest: Zarr v3's crc32c
    codec, on a chunk or on a shard index (the one check for shardread, the guard and verify)."""
    import google_crc32c
    if len(blob) < 4:
        return False
    return google_crc32c.value(blob[:-4]) == struct.unpack("<I", bytes(blob[-4:]))[0]


def _names(codecs) -> list[str]:
    return [c.get("name") if isinstance(c, dict) else c for c in codecs or []]


def _little(codecs) -> bool:
    first = (codecs or [{}])[0]
    return isinstance(first, dict) and first.get("name") == "bytes" and \
        (first.get("configuration") or {}).get("endian") == "little"


@dataclasses.dataclass
class ShardLayout:
    """How one array's chunk files are laid out, parsed from its metadata document."""

    sharded: bool
    outer: tuple                    # shape of one chunk file: the shard, or the chunk when unsharded
    inner: tuple                    # shape of an inner chunk (== outer when unsharded)
    checksum: bool                  # (inner) chunks end with their crc32c
    compressed: bool                # (inner) chunks go through a codec other than bytes / crc32c
    plain: bool = False             # (inner) codecs are little-endian bytes (+ crc32c): raw maps on disk
    index_crc: bool = False         # the shard index ends with its crc32c
    index_plain: bool = False       # the index codecs are exactly little-endian bytes + crc32c
    index_at_end: bool = True
    itemsize: int = 0               # bytes per element (0: variable-length, e.g. strings)
    required: np.ndarray | None = None   # (nchunks,) bool: inner chunks a finished unit must hold

    @classmethod
    def from_metadata(cls, meta: dict) -> ShardLayout:
        codecs = meta.get("codecs") or []
        outer = tuple(int(c) for c in meta["chunk_grid"]["configuration"]["chunk_shape"])
        try:
            itemsize = np.dtype(meta.get("data_type")).itemsize
        except TypeError:
            itemsize = 0
        sharded = bool(codecs) and _names(codecs)[0] == "sharding_indexed"
        if not sharded:
            names = _names(codecs)
            return cls(False, outer, outer, names[-1:] == ["crc32c"],
                       any(n not in ("bytes", "crc32c") for n in names), _little(codecs) and
                       names in (["bytes"], ["bytes", "crc32c"]), itemsize=itemsize)
        conf = codecs[0]["configuration"]
        names, index = _names(conf["codecs"]), _names(conf["index_codecs"])
        return cls(True, outer, tuple(int(c) for c in conf["chunk_shape"]), names[-1:] == ["crc32c"],
                   any(n not in ("bytes", "crc32c") for n in names),
                   _little(conf["codecs"]) and names in (["bytes"], ["bytes", "crc32c"]),
                   index_crc=index[-1:] == ["crc32c"],
                   index_plain=_little(conf["index_codecs"]) and index == ["bytes", "crc32c"],
                   index_at_end=conf.get("index_location", "end") == "end", itemsize=itemsize)

    @classmethod
    def from_array(cls, array) -> ShardLayout:
        """From an open zarr array (its metadata as the document would say it)."""
        return cls.from_metadata(array.metadata.to_dict())

    @property
    def grid(self) -> tuple:
        """Inner chunks per shard along each axis (() when unsharded)."""
        return tuple(o // i for o, i in zip(self.outer, self.inner)) if self.sharded else ()

    @property
    def nchunks(self) -> int:
        return int(np.prod(self.grid)) if self.sharded else 1

    @property
    def index_size(self) -> int:
        return 16 * self.nchunks + (4 if self.index_crc else 0)

    @property
    def chunk_nbytes(self) -> int:
        """Encoded size of an uncompressed (inner) chunk, crc32c included (0: unknown)."""
        if self.compressed or not self.itemsize:
            return 0
        return int(np.prod(self.inner)) * self.itemsize + (4 if self.checksum else 0)

    def index_problem(self, raw) -> str | None:
        """What is wrong with shard index bytes ``raw`` (crc32c included), or None."""
        if len(raw) != self.index_size:
            return "shard shorter than its index (truncated)"
        if self.index_crc and not crc_ok(raw):
            return "index checksum mismatch (corrupted)"
        return None

    def table(self, raw) -> np.ndarray:
        """(nchunks, 2) uint64 (offset, nbytes) of each inner chunk, C order over the grid."""
        return np.frombuffer(bytes(raw[:16 * self.nchunks]), dtype="<u8").reshape(self.nchunks, 2)

    def missing_required(self, table) -> np.ndarray:
        """Indices of inner chunks that must exist but are absent from the index ``table``."""
        if self.required is None:
            return np.zeros(0, dtype=int)
        return np.nonzero((table[:, 0] == EMPTY) & self.required)[0]


def damaged(store, what: str, problem: str, where: str, flag: str | None):
    """The one DamagedUnitError text: '<store>: <product of unit>: <problem> (<where>); the store is damaged:
    run `cmbcube verify <store> --clear` ..., then rerun <the stage writing ``flag``'s units>'."""
    stage = FLAG_STAGE.get(flag, "the stage that wrote it")
    return DamagedUnitError(f"{store}: {what}: {problem} ({where}); the store is damaged: run "
                            f"`{command('verify', store, clear=True)}` to clear its done-flag, then rerun {stage} "
                            "to rebuild it")


class ShardReader:
    """Reads inner chunks (whole maps) of one sharded array whose last axis is the map."""

    def __init__(self, root: str, name: str, array):
        self.ok = False
        layout = ShardLayout.from_array(array)
        if not layout.sharded or "://" in str(root) or not layout.plain or not layout.index_plain:
            return
        if not layout.index_at_end or any(c != 1 for c in layout.inner[:-1]) or layout.inner[-1] != array.shape[-1]:
            return
        self.layout = layout
        self.checksum = layout.checksum
        self.dtype = np.dtype(array.dtype).newbyteorder("<")
        self.fill = array.metadata.fill_value
        self.shard_shape = array.shards
        self.grid = layout.grid
        self.nchunks = layout.nchunks
        self.npix = array.shape[-1]
        self.root, self.name, self.array = str(root), name, array
        self.ok = True

    def read(self, leading: tuple[int, ...], maps: list[tuple[int, ...]], strict: bool = False) -> np.ndarray:
        """Maps at shard coordinates ``leading`` (the shard's position on the outer axes) and
        inner positions ``maps`` (tuples over the sharded middle axes) -> (len(maps), npix).

        Absent shards and maps read as the fill value, unless ``strict`` (the caller knows the
        unit is finished and the maps exist): then they raise DamagedUnitError, as corruption
        always does, naming the product and the unit."""
        import google_crc32c
        nlead = len(leading)
        shard_coords = tuple(leading) + (0,) * (len(self.shard_shape) - nlead)
        key = self.array.metadata.encode_chunk_key(shard_coords)
        path = os.path.join(self.root, self.name, *key.split("/"))
        out = np.empty((len(maps), self.npix), dtype=self.dtype)

        def fail(problem):
            unit = f"{SPLITS[leading[0]]} sim {leading[1]}" if nlead == 2 else f"unit {tuple(leading)}"
            product = product_of(self.name)
            return damaged(self.root, f"{self.name} of {unit}", problem, path, product.flag if product else None)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            if strict:
                raise fail("shard missing although the unit is marked done") from None
            out[:] = self.fill
            return out
        try:
            size = os.fstat(fd).st_size
            index_size = self.layout.index_size
            if size < index_size:
                raise fail("shard too short for its index (truncated)")
            raw = os.pread(fd, index_size, size - index_size)
            problem = self.layout.index_problem(raw)
            if problem:
                raise fail(f"shard {problem}")
            table = self.layout.table(raw)
            inner_grid = self.grid[nlead:]
            wanted = []
            for row, position in enumerate(maps):
                k = int(np.ravel_multi_index(tuple(position) + (0,) * (len(inner_grid) - len(position)), inner_grid))
                offset, nbytes = int(table[k, 0]), int(table[k, 1])
                if offset == EMPTY:
                    if strict:
                        raise fail(f"map {tuple(position)} missing from the shard")
                    out[row] = self.fill
                else:
                    wanted.append((offset, nbytes, row, position))
            # coalesce chunks stored back to back into single reads
            wanted.sort()
            start = 0
            while start < len(wanted):
                end = start + 1
                while end < len(wanted) and wanted[end][0] == wanted[end - 1][0] + wanted[end - 1][1]:
                    end += 1
                first = wanted[start][0]
                run = wanted[start:end]
                expected = self.npix * self.dtype.itemsize + (4 if self.checksum else 0)
                if any(nbytes != expected for _, nbytes, _, _ in run):
                    raise fail("inner chunk size differs from an uncompressed map")
                # scatter-read the run straight into the output rows (one copy, like np.load)
                crcs = np.empty(len(run), dtype="<u4")
                buffers = []
                for i, (_, _, row, _) in enumerate(run):
                    buffers.append(out[row].view(np.uint8))
                    if self.checksum:
                        buffers.append(crcs[i:i + 1].view(np.uint8))
                total = run[-1][0] + run[-1][1] - first
                if os.preadv(fd, buffers, first) != total:
                    raise fail("shard shorter than its index says (truncated)")
                if self.checksum:
                    for i, (_, _, row, position) in enumerate(run):
                        if google_crc32c.value(out[row]) != int(crcs[i]):
                            raise fail(f"chunk {position} checksum mismatch (corrupted)")
                start = end
        finally:
            os.close(fd)
        return out
