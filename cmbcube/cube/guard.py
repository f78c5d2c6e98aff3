"""Reads that cannot be fooled: a finished unit whose chunk is missing or corrupted raises.

Zarr reads a missing chunk (or shard) as its fill value, so a store whose finished sim lost a
shard would read NaN as if it were data.  :class:`GuardedStore` wraps the store every cmbcube
reader opens (``cmbcube.open`` / ``cube.open_dataset``, ``CubeDataset`` and the stages' input
reads) and checks each chunk request of a product of a unit of work:

- a chunk (shard) that is absent: if the unit's done-flag is set (``sim_done``, ``pred_done`` or
  ``analysis_done``) the read raises :class:`DamagedUnitError` naming the product and the unit;
  if the unit is not done the fill value is returned (NaN for maps: "not written yet");
- a shard index (fetched by zarr anyway): a map that must exist (``cmb``; ``obs``, ``noise``,
  ``components`` where ``has_field``) but is absent from the index raises, as does an index
  failing its crc32c;
- each chunk's bytes: crc32c checked here (zarr checks it again) so the error names the unit.

The cost: the done-flag is read only when a chunk is absent; otherwise one crc32c over bytes
already in memory per chunk (measured in benchmarks/loader.py).  Metadata is taken from the
documents zarr fetches through the wrapper itself (no extra request); ``has_field`` comes from
the recipe in the root attributes.

``consistent=True`` (what ``cmbcube.open`` uses) also makes each unit all or nothing for the
reader, although a sim's products are several shards written one after another and one read of
them is many requests: the first read touching a unit (one of its chunks, or its done-flag) reads
the flag, and that answer holds for the life of the store object (later reads of the flag get the
same bytes).  A unit not done then reads as the fill value in every product, even if its shards
appear meanwhile; a done unit reads its data (final: the flag is written last).  Cost: one flag
read per unit touched; no shard of a unit not done is read.  (Within one process: a copy pickled to
another process starts afresh.)
"""
from __future__ import annotations

import json

import numpy as np
from zarr.abc.store import RangeByteRequest, SuffixByteRequest
from zarr.storage import WrapperStore

from cmbcube.cube import layout
from cmbcube.cube.shardread import (
    EMPTY,
    DamagedUnitError,  # noqa: F401 - raised through damaged(); named here as before
    ShardLayout,
    crc_ok,
    damaged,
)
from cmbcube.recipe import SPLITS

STAGE = layout.FLAG_STAGE
FLAGS = layout.FLAGS


def _flag_of(name: str):
    """(done-flag, number of leading unit axes) of an array, from the product table at call time."""
    p = layout.product_of(name)
    if p is None or name not in p.unit_arrays() or p.flag is None:
        return None, 0
    return p.flag, len(layout.FLAGS[p.flag].dims)          # (split, sim) or (run, split, sim)


class _Layout:
    """What the guard needs to know of one product's storage: its chunk layout (the one parser,
    :class:`~cmbcube.cube.shardread.ShardLayout`, with the maps a finished unit must hold) and its flag."""

    def __init__(self, name: str, meta: dict, has_field):
        self.name = name
        self.flag, self.nlead = _flag_of(name)
        self.shard = ShardLayout.from_metadata(meta)
        if self.shard.sharded:
            dims = list(meta.get("dimension_names") or [])
            self.shard.required = layout.required_maps(name, dims, self.shard.grid, has_field)


def _as_bytes(buf):
    return buf.as_numpy_array().reshape(-1).view(np.uint8) if buf is not None else None


class GuardedStore(WrapperStore):
    """A read-only store whose chunk reads refuse damaged finished units (see the module doc)."""

    def __init__(self, store, label: str | None = None, consistent: bool = False, *, open_array):
        super().__init__(store)
        self.label = label or str(store)
        self.consistent = consistent
        self.open_array = open_array     # async (store, path) -> array: the opener's, for the flags read here
        self._seen: dict = {}            # consistent: flag chunk key -> (bytes as first read,) or its Future
        self._held: dict = {}            # consistent: (flag, unit) -> done, as first read
        self._meta: dict = {}            # array name -> its metadata document
        self._attrs: dict | None = None
        self._layouts: dict = {}
        self._flags: dict = {}           # (flag name, held) -> opened AsyncArray

    def _with_store(self, store):
        return type(self)(store, self.label, self.consistent, open_array=self.open_array)

    def __getstate__(self):
        return {"_store": self._store, "label": self.label, "consistent": self.consistent,
                "open_array": self.open_array}

    def __setstate__(self, state):
        self.__init__(state["_store"], state["label"], state.get("consistent", False),
                      open_array=state["open_array"])

    def __str__(self):
        return self.label

    def __repr__(self):
        return f"GuardedStore({self._store!r})"

    # -- metadata, captured as zarr fetches it ----------------------------------------------------
    def _capture(self, key: str, buf) -> None:
        try:
            doc = json.loads(bytes(_as_bytes(buf)))
        except (ValueError, TypeError):
            return
        if key == "zarr.json":
            self._attrs = doc.get("attributes", {})
            consolidated = (doc.get("consolidated_metadata") or {}).get("metadata") or {}
            for name, meta in consolidated.items():
                if isinstance(meta, dict) and meta.get("node_type") == "array":
                    self._meta[name] = meta
        elif doc.get("node_type") == "array":
            self._meta[key[: -len("/zarr.json")]] = doc
        self._layouts.clear()

    async def _layout(self, name: str):
        layout = self._layouts.get(name)
        if layout is None:
            meta = self._meta.get(name)
            if meta is None:                    # no consolidated metadata: fetch the array's own
                buf = await self._store.get(f"{name}/zarr.json", _prototype())
                if buf is None:
                    return None
                self._capture(f"{name}/zarr.json", buf)
                meta = self._meta.get(name)
                if meta is None:
                    return None
            layout = self._layouts[name] = _Layout(name, meta, self._has_field())
        return layout

    def _optional(self) -> tuple:
        """Products whose chunk may be absent for a finished unit: OPTIONAL, and cosmo_params of a
        store without a CMB (all NaN, the fill value, which zarr does not write)."""
        try:
            from cmbcube.recipe import from_store_attrs
            return layout.optional_arrays(from_store_attrs(self._attrs)["cmb"]["enabled"])
        except Exception:  # noqa: BLE001 - not a cmbcube store (or no attributes yet)
            return layout.optional_arrays()

    def _has_field(self):
        """(detector, field) bool from the store's recipe (as the template computes it)."""
        try:
            from cmbcube.recipe import from_store_attrs
            recipe = from_store_attrs(self._attrs)
            fields = recipe["fields"]
            return np.array([[f in d.fields for f in fields] for d in recipe.detectors()])
        except Exception:  # noqa: BLE001 - not a cmbcube store (or no attributes yet): no map check
            return None

    # -- done-flags, read only when something is missing ------------------------------------------
    async def _flag(self, flag: str, unit: tuple, held: bool = False) -> bool:
        """Whether the unit is done: read afresh, or (``held``: consistent mode) as first read."""
        if held and (flag, unit) in self._held:
            return self._held[(flag, unit)]
        done = await self._read_flag(flag, unit, held)
        if held:
            self._held[(flag, unit)] = done
        return done

    async def _read_flag(self, flag: str, unit: tuple, held: bool) -> bool:
        arr = self._flags.get((flag, held))
        if arr is None:
            try:                            # held: through this store, where a flag's first read holds
                arr = await self.open_array(self if held else self._store, flag)
            except Exception:  # noqa: BLE001 - no such flag array: nothing of that level is done
                return False
            self._flags[(flag, held)] = arr  # opened once; its values are read every time
        if any(i >= s for i, s in zip(unit, arr.shape)):
            return False
        return int(np.asarray(await arr.getitem(tuple(unit)))) == 1

    async def _describe(self, layout: _Layout, unit: tuple) -> str:
        if layout.nlead == 2:
            return f"{layout.name} of {SPLITS[unit[0]]} sim {unit[1]}"
        run = str(unit[0])
        try:
            arr = await self.open_array(self._store, "run")
            run = repr(str(np.asarray(await arr.getitem((unit[0],)))))
        except Exception:  # noqa: BLE001 - keep the index
            pass
        return f"{layout.name} of run {run}, {SPLITS[unit[1]]} sim {unit[2]}"

    async def _damaged(self, layout, unit, key, problem):
        return damaged(self.label, await self._describe(layout, unit), problem, f"chunk {key}", layout.flag)

    # -- the reads ---------------------------------------------------------------------------------
    async def _first_read(self, key, prototype):
        """consistent: a flag chunk's bytes as first read (concurrent first reads share one request)."""
        import asyncio
        loop = asyncio.get_running_loop()
        entry = self._seen.get(key)
        if isinstance(entry, asyncio.Future):
            if entry.get_loop() is not loop:         # another event loop's read in flight: read afresh
                return await self._store.get(key, prototype)
            entry = await entry
        if entry is None:
            pending = self._seen[key] = loop.create_future()
            try:
                buf = await self._store.get(key, prototype)
            except BaseException as err:
                del self._seen[key]
                pending.set_exception(err)
                pending.exception()                  # retrieved: raised to the readers waiting on it
                raise
            entry = self._seen[key] = (None if buf is None else bytes(_as_bytes(buf)),)
            pending.set_result(entry)
        return None if entry[0] is None else prototype.buffer.from_bytes(entry[0])

    async def get(self, key, prototype, byte_range=None):
        parts = key.split("/")
        if len(parts) < 3 or parts[1] != "c":          # metadata, and anything that is not a chunk
            buf = await self._store.get(key, prototype, byte_range)
            if parts[-1] == "zarr.json" and buf is not None:
                self._capture(key, buf)
            return buf
        if self.consistent and parts[0] in FLAGS and byte_range is None:
            return await self._first_read(key, prototype)
        flag, nlead = _flag_of(parts[0])
        layout = await self._layout(parts[0]) if flag is not None else None
        try:
            unit = tuple(int(p) for p in parts[2:])[:nlead]
        except ValueError:
            layout = None
        if layout is None:
            return await self._store.get(key, prototype, byte_range)
        if self.consistent and not await self._flag(flag, unit, held=True):
            return None                 # not done when first looked at: the fill value, whatever appears
        buf = await self._store.get(key, prototype, byte_range)
        if buf is None:
            if layout.name in self._optional() or not await self._flag(flag, unit):
                return None                 # not written yet (or cleared since: drop, verify --clear): fill
            buf = await self._store.get(key, prototype, byte_range)     # written meanwhile?
            if buf is None:
                raise await self._damaged(layout, unit, key, f"is marked done ({flag}) but its chunk is missing")
        blob = _as_bytes(buf)
        problem = self._check(layout, blob, byte_range)
        if problem:
            raise await self._damaged(layout, unit, key, problem)
        return buf

    def _check(self, layout: _Layout, blob, byte_range) -> str | None:
        shard = layout.shard
        if not shard.sharded:
            if shard.checksum and not crc_ok(blob):
                return "fails its checksum (corrupted)"
            return None
        if isinstance(byte_range, RangeByteRequest):
            if byte_range.end - byte_range.start != len(blob):
                return "is cut short (truncated shard)"
            if shard.checksum and shard.index_at_end and not crc_ok(blob):
                return "fails its checksum (corrupted)"
            return None
        if isinstance(byte_range, SuffixByteRequest) and shard.index_at_end:
            if len(blob) != shard.index_size:
                return "has a shard shorter than its index (truncated)"
            return self._check_index(shard, blob)
        if byte_range is None and shard.index_at_end:
            if len(blob) < shard.index_size:
                return "has a shard shorter than its index (truncated)"
            index = blob[len(blob) - shard.index_size:]
            problem = self._check_index(shard, index)
            if problem:
                return problem
            data_end = len(blob) - shard.index_size
            for k, (offset, nbytes) in enumerate(shard.table(index).tolist()):
                if offset == EMPTY:
                    continue
                if offset + nbytes > data_end:
                    return "has a map pointing outside its shard (truncated)"
                if shard.checksum and not crc_ok(blob[offset:offset + nbytes]):
                    return f"fails its checksum (corrupted; inner chunk {k})"
        return None

    @staticmethod
    def _check_index(shard: ShardLayout, index) -> str | None:
        if shard.index_problem(index):
            return "has a shard index failing its checksum (corrupted)"
        missing = shard.missing_required(shard.table(index))
        if missing.size:
            return f"lacks {missing.size} map(s) that must exist (inner chunk {int(missing[0])} first)"
        return None

    async def get_partial_values(self, prototype, key_ranges):
        return [await self.get(key, prototype, byte_range) for key, byte_range in key_ranges]

    async def _get_many(self, requests):
        for key, prototype, byte_range in requests:
            yield key, await self.get(key, prototype, byte_range)


def _prototype():
    from zarr.core.buffer import default_buffer_prototype
    return default_buffer_prototype()
