"""Resource limits checked at the edge, before anything is created or started.

Every stage that grows a store (and ``cmbcube check-recipe``) estimates what it will need,
from the recipe or the store's metadata alone (nothing here scales with the number of sims
beyond a few integers):

- the bytes it will add to the store (uncompressed: compression only makes it smaller),
  against the free space of the file system holding the store (``shutil.disk_usage``);
- the store's metadata (coordinate arrays, JSON documents), which grows with the sim axis;
- the memory one worker needs for one task, against the memory limit of the cluster's workers
  (``cluster.memory_limit`` or ``auto`` = the machine's memory / workers; SLURM: ``memory`` /
  processes; synchronous: the machine's memory);
- the number of sims and of files, against a sane cap.

What does not fit is refused with :class:`LimitError` (exit status 2) listing the figures;
``force=True`` (``--force-size``) lifts the disk, memory and soft caps for the deliberate case.
The hard cap on sims per split cannot be lifted: every stage reads the ``sim`` axis and its
done-flags whole, so beyond it a store cannot be used at all.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

from cmbcube.cube.info import human  # limits.human: the one size formatter
from cmbcube.cube.opener import read_attrs
from cmbcube.errors import InputError, param

# Measured: reading the (3, N) done-flags (one chunk per split and sim) through zarr takes ~0.6 ms and
# ~7 KB of memory per sim index (N = 1e6: 10 minutes and 7 GB), and every stage reads them whole.
MAX_SIMS_PER_SPLIT = 20_000             # soft: lifted by force_size (--force-size)
HARD_MAX_SIMS_PER_SPLIT = 200_000       # cannot be lifted (~2 minutes and ~1.4 GB to read the flags)
MAX_FILES = 1_000_000                   # chunk files a store may hold (soft)
PROCESS_BASE = 300 * 2 ** 20            # a worker process with numpy, healpy, ducc, camb imported (measured ~290 MB)
FORCE_HINT = f"{param('force_size', True)} runs it anyway"


class LimitError(InputError):
    """A plan does not fit the machine or the layout's limits; the message gives the figures."""


@dataclasses.dataclass
class Plan:
    """What a stage will add: figures for the checks and for check-recipe's summary."""
    what: str                             # "simulate", "ilc nilc", ...
    sims: int = 0                         # units of work to do
    max_per_split: int = 0                # the sim axis length
    files: int = 0                        # chunk files written
    store_bytes: int = 0                  # bytes added to the store (uncompressed)
    metadata_bytes: int = 0               # coordinates + JSON documents
    worker_bytes: int = 0                 # peak memory of one task (estimate)
    notes: list = dataclasses.field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"  store size: {human(self.store_bytes)} in {self.files:,} file(s) (uncompressed; "
               f"metadata {human(self.metadata_bytes)})",
               f"  memory per worker: ~{human(self.worker_bytes)} per task (estimate)"]
        return out + [f"  {n}" for n in self.notes]


# ----------------------------------------------------------------------------- estimates

def simulate_plan(recipe, pending: int | None = None, what: str = "simulate") -> Plan:
    """Sizes of a recipe's store (all planned sims; or ``pending`` sims added to an existing store,
    whose metadata is written already) and of one sim task.

    Per sim: ``obs`` (every existing detector/field map), ``cmb``, optional ``components`` and
    ``noise`` as float32 maps with a crc32c and a 16-byte shard-index entry each; the small
    ``cosmo_params``, ``cl_theory`` and ``sim_done`` chunks.  Worker memory: the process
    (~300 MB), the sky model at ``sky_nside`` ((components + 3) x 3 fields float64 maps, x0.9
    for temporaries) and the sim's outputs twice (float64 intermediates), calibrated against
    peak RSS measured at nside 64-128 (here, within ~10%) and 512 (docs/benchmarks.md: 3.66 GB).
    """
    from cmbcube.recipe import SPLITS
    r = recipe.data
    splits = recipe.splits
    nside, sky_nside = r["nside"], r["sky_nside"]
    npix, sky_npix = 12 * nside ** 2, 12 * sky_nside ** 2
    dets = recipe.detectors()
    fields = r["fields"]
    maps_obs = sum(1 for d in dets for f in fields if f in d.fields)
    from cmbcube.science.foregrounds import component_names
    ncomp = len(component_names(r["foregrounds"])) if "components" in r["keep"] else 0
    nfg = len(component_names(r["foregrounds"]))
    map_bytes = npix * 4 + 4 + 16
    sim_maps = maps_obs + len(fields) + ncomp * maps_obs + (maps_obs if "noise" in r["keep"] else 0)
    nell = 3 * nside
    per_sim = sim_maps * map_bytes + (6 * 8 + 4) + (4 * nell * 8 + 4) + 5
    files_per_sim = 5 + ("components" in r["keep"]) + ("noise" in r["keep"])
    total = sum(splits.values()) if pending is None else pending
    nsim_axis = max(max(splits.values()), 1)
    plan = Plan(what, sims=total, max_per_split=nsim_axis)
    plan.files = total * files_per_sim
    plan.store_bytes = total * per_sim
    # coordinates: sim (int64), cell_ids (uint64), ell, small ones; ~2 KB of JSON per array, the
    # root's consolidated copy of them all, and the recipe text kept in the attributes
    narrays = 20 + len(SPLITS)
    plan.metadata_bytes = 0 if pending is not None else (8 * nsim_axis + 8 * npix + 8 * nell + 4 * narrays * 1024
                                                         + 2 * len(recipe.text or "") + 65536)
    outputs = sim_maps * npix * 4
    sky = (nfg + 3) * 3 * sky_npix * 8 * 0.9
    if r["foregrounds"]["model"] == "pysm3":
        sky += len(r["foregrounds"]["presets"]) * 3 * sky_npix * 8 * 2
    plan.worker_bytes = int(PROCESS_BASE + 2 * outputs + sky)
    return plan


def worker_memory_limit(cluster: dict, scheduler=None, scheduler_file=None, workers=None):
    """(bytes, description) of one worker's memory limit, or (None, why unknown)."""
    from dask.utils import parse_bytes

    from cmbcube.compute.cluster import plan as cluster_plan
    try:
        p = cluster_plan(cluster, scheduler, scheduler_file, workers)
    except Exception:  # noqa: BLE001 - an unusable cluster section is reported by the stage itself
        return None, "unknown"
    total = machine_memory()
    if p["mode"] == "synchronous":
        return total, f"this machine's memory ({human(total)}, synchronous)"
    if p["mode"] == "local":
        limit = p["memory_limit"]
        if limit in ("auto", 0, None):
            return total // max(p["workers"], 1), f"{human(total)} / {p['workers']} local worker(s) (memory_limit auto)"
        return parse_bytes(limit), f"cluster.memory_limit {limit}"
    if p["mode"] == "slurm":
        mem = parse_bytes(cluster["slurm"]["memory"])
        return mem // max(p["processes"], 1), (f"cluster.slurm.memory {cluster['slurm']['memory']} / "
                                               f"{p['processes']} process(es)")
    return None, "an external scheduler's workers (not checked)"


def machine_memory() -> int:
    """Physical memory, or the cgroup's limit where that is lower (containers, SLURM steps)."""
    import psutil
    total = psutil.virtual_memory().total
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:
            total = int(text)
    return total


def free_disk(path: str) -> tuple[int | None, str]:
    """Free bytes on the file system that holds (or will hold) ``path``, and that folder."""
    if "://" in str(path):
        return None, str(path)
    folder = Path(os.path.abspath(path))
    while not os.path.isdir(folder) and folder != folder.parent:     # never raises (a name too long...)
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free, str(folder)
    except OSError:
        return None, str(folder)


# ----------------------------------------------------------------------------- checks

def problems(plan: Plan, store: str | None, memory: tuple) -> tuple[list[str], list[str]]:
    """(hard, soft) problems of a plan: hard ones cannot be forced."""
    hard, soft = [], []
    if plan.max_per_split > HARD_MAX_SIMS_PER_SPLIT:
        hard.append(f"{plan.max_per_split:,} sims in one split exceed the layout's limit of "
                    f"{HARD_MAX_SIMS_PER_SPLIT:,} (the sim axis and its done-flags are read whole by every stage)")
    elif plan.max_per_split > MAX_SIMS_PER_SPLIT:
        soft.append(f"{plan.max_per_split:,} sims in one split exceed the cap of {MAX_SIMS_PER_SPLIT:,}")
    if plan.files > MAX_FILES:
        soft.append(f"{plan.files:,} chunk files exceed the cap of {MAX_FILES:,}")
    if store is not None:
        free, folder = free_disk(store)
        if free is not None and plan.store_bytes + plan.metadata_bytes > free:
            soft.append(f"needs {human(plan.store_bytes + plan.metadata_bytes)} on disk but {folder} has "
                        f"{human(free)} free")
    limit, where = memory
    if limit is not None and plan.worker_bytes > limit:
        soft.append(f"one task needs ~{human(plan.worker_bytes)} of memory but a worker may use "
                    f"{human(limit)} ({where}); raise cluster.memory_limit or use fewer workers")
    return hard, soft


def check(plan: Plan, store: str | None, memory: tuple, force: bool = False) -> list[str]:
    """Raise LimitError if the plan does not fit; returns the soft problems forced past (warnings)."""
    hard, soft = problems(plan, store, memory)
    if hard or (soft and not force):
        figures = "\n".join(plan.lines())
        listed = "\n".join(f"  - {p}" for p in hard + soft)
        hint = "" if hard else f"; {FORCE_HINT}"
        raise LimitError(f"{plan.what} refused before creating anything{hint}:\n{listed}\n{figures}")
    return soft


def check_simulate(recipe, store: str | None, scheduler=None, scheduler_file=None, workers=None,
                   force: bool = False, pending: int | None = None, what: str = "simulate") -> tuple[Plan, list[str]]:
    """Plan and check a recipe (``store`` None: no disk check).  The store path is checked first: a name
    the file system cannot hold is refused; an existing store of this recipe (``pending`` given) must have
    intact metadata and no half-done run removal (read-only checks: a dry run writes nothing)."""
    if store is not None:
        from cmbcube.cube import health, location
        location.check_store_path(store)
        if pending is not None:
            health.check_metadata(store, what)
            health.refuse_interrupted_drop(read_attrs(store), store)
    plan = simulate_plan(recipe, pending, what)
    memory = worker_memory_limit(recipe["cluster"], scheduler, scheduler_file, workers)
    return plan, check(plan, store, memory, force)


def check_growth(store: str, what: str, store_bytes: int, files: int, worker_bytes: int, cluster=None,
                 scheduler=None, scheduler_file=None, workers=None, force: bool = False) -> list[str]:
    """A stage adding ``store_bytes`` in ``files`` chunk files to an existing store."""
    plan = Plan(what, files=files, store_bytes=store_bytes, worker_bytes=worker_bytes)
    memory = worker_memory_limit(cluster, scheduler, scheduler_file, workers) if cluster is not None else (None, "")
    return check(plan, store, memory, force)


def prediction_bytes(store: str, nsims: int, uncertainty: bool = False) -> tuple[int, int]:
    """(bytes, files) of ``nsims`` sims' predictions: pred (+ pred_sigma) shards and pred_done chunks."""
    from cmbcube import cube
    recipe = cube.store_recipe(store)
    npix = 12 * int(recipe["nside"]) ** 2
    maps = len(recipe["fields"]) * (2 if uncertainty else 1)
    return nsims * (maps * (npix * 4 + 20) + 5), nsims * (2 + uncertainty)


def check_ilc(store: str, run_name: str, splits, ndet: int, nfields: int, nscales: int, cluster,
              scheduler=None, scheduler_file=None, workers=None, force: bool = False) -> list[str]:
    """Disk for the run's predictions and memory of one ILC task: the sim's maps in float64 for
    each needlet scale plus a few working copies (rough: not calibrated)."""
    from cmbcube import cube
    nsims = cube.pending_predictions(store, run_name, splits)
    if nsims == 0:
        return []
    nbytes, files = prediction_bytes(store, nsims)
    npix = 12 * cube.nside(store) ** 2
    worker = PROCESS_BASE + 8 * npix * ndet * nfields * (nscales + 4)
    return check_growth(store, f"ilc {run_name}", nbytes, files, worker, cluster, scheduler, scheduler_file,
                        workers, force)
