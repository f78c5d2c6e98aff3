"""Fast path for reading whole maps out of uncompressed local shards.

zarr-python decodes a shard inner chunk by inner chunk through its async codec
pipeline (~0.25 ms per map, measured); for the common case of an uncompressed
shard on a local filesystem the maps can be read with one ``pread`` each, their
crc32c verified, straight into the output.  The layout read here is the Zarr v3
sharding codec (index at the end: one (offset, nbytes) uint64 pair per inner
chunk, then the index's crc32c).  Anything else falls back to zarr.
"""
from __future__ import annotations

import os
import struct

import numpy as np

EMPTY = 2 ** 64 - 1           # a shard index's (offset, nbytes) of an absent inner chunk



def crc_ok(blob) -> bool:
    """Whether ``blob`` ends with the crc32c (4 bytes, little endian) of the rest: Zarr v3's crc32c
    codec, on a chunk or on a shard index (the one check for shardread, the guard and verify)."""
    import google_crc32c
    if len(blob) < 4:
        return False
    return google_crc32c.value(blob[:-4]) == struct.unpack("<I", bytes(blob[-4:]))[0]


class ShardReader:
    """Reads inner chunks (whole maps) of one sharded array whose last axis is the map."""

    def __init__(self, root: str, name: str, array):
        codec = array.metadata.codecs[0]
        self.ok = False
        if type(codec).__name__ != "ShardingCodec" or "://" in str(root):
            return
        inner = [type(c).__name__ for c in codec.codecs]
        index = [type(c).__name__ for c in codec.index_codecs]
        little = getattr(codec.codecs[0], "endian", None) is not None and codec.codecs[0].endian.value == "little"
        if inner not in (["BytesCodec"], ["BytesCodec", "Crc32cCodec"]) or not little:
            return
        if index != ["BytesCodec", "Crc32cCodec"] or codec.index_location.value != "end":
            return
        if any(c != 1 for c in codec.chunk_shape[:-1]) or codec.chunk_shape[-1] != array.shape[-1]:
            return
        self.checksum = inner[-1] == "Crc32cCodec"
        self.dtype = np.dtype(array.dtype).newbyteorder("<")
        self.fill = array.metadata.fill_value
        self.shard_shape = array.shards
        self.grid = tuple(s // c for s, c in zip(array.shards, codec.chunk_shape))
        self.nchunks = int(np.prod(self.grid))
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

        def damaged(problem):
            from cmbcube.cube.guard import DamagedUnitError
            from cmbcube.recipe import SPLITS
            unit = f"{SPLITS[leading[0]]} sim {leading[1]}" if nlead == 2 else f"unit {tuple(leading)}"
            return DamagedUnitError(f"{self.root}: {self.name} of {unit}: {path}: {problem}; the store is damaged: "
                                    f"run `cmbcube verify {self.root} --clear` to clear its done-flag, then rerun "
                                    "the stage that wrote it")
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            if strict:
                raise damaged("shard missing although the unit is marked done") from None
            out[:] = self.fill
            return out
        try:
            size = os.fstat(fd).st_size
            index_bytes = self.nchunks * 16
            if size < index_bytes + 4:
                raise damaged("shard too short for its index (truncated)")
            raw = os.pread(fd, index_bytes + 4, size - index_bytes - 4)
            if not crc_ok(raw):
                raise damaged("shard index checksum mismatch (corrupted)")
            table = np.frombuffer(raw[:-4], dtype="<u8").reshape(self.nchunks, 2)
            inner_grid = self.grid[nlead:]
            wanted = []
            for row, position in enumerate(maps):
                k = int(np.ravel_multi_index(tuple(position) + (0,) * (len(inner_grid) - len(position)), inner_grid))
                offset, nbytes = int(table[k, 0]), int(table[k, 1])
                if offset == EMPTY:
                    if strict:
                        raise damaged(f"map {tuple(position)} missing from the shard")
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
                    raise damaged("inner chunk size differs from an uncompressed map")
                # scatter-read the run straight into the output rows (one copy, like np.load)
                crcs = np.empty(len(run), dtype="<u4")
                buffers = []
                for i, (_, _, row, _) in enumerate(run):
                    buffers.append(out[row].view(np.uint8))
                    if self.checksum:
                        buffers.append(crcs[i:i + 1].view(np.uint8))
                total = run[-1][0] + run[-1][1] - first
                if os.preadv(fd, buffers, first) != total:
                    raise damaged("shard shorter than its index says (truncated)")
                if self.checksum:
                    for i, (_, _, row, position) in enumerate(run):
                        if google_crc32c.value(out[row]) != int(crcs[i]):
                            raise damaged(f"chunk {position} checksum mismatch (corrupted)")
                start = end
        finally:
            os.close(fd)
        return out
