"""The cube: one Zarr v3 store holding every product, indexed by
(split, sim, detector, field, pixel).  The only module that knows the layout;
store_layout.md describes it for people who never read this code.

Writing rules (measured: two writers in one shard lose data):
- only the driver writes metadata (template creation, consolidation);
- a task owns whole shards: everything of one (split, sim) for a product;
- a per-sim done-flag (its own unsharded chunk) is written after the data.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import shutil
import uuid
from pathlib import Path

import numpy as np

from cmbcube import __version__
from cmbcube.science import cosmology, instrument
from cmbcube.recipe import SPLITS, Recipe, from_store_attrs
from cmbcube.errors import InputError

LAYOUT_VERSION = 1
SIM_PRODUCTS = ("obs", "cmb", "components", "noise", "cosmo_params", "cl_theory")


class StoreError(InputError, RuntimeError):
    """The store path cannot be used as asked (exists with another recipe, unreadable...)."""


def package_versions() -> dict[str, str]:
    import importlib.metadata as md
    out = {"cmbcube": __version__}
    for name in ("numpy", "healpy", "ducc0", "pysm3", "camb", "zarr", "xarray", "dask", "distributed"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def is_remote(path: str) -> bool:
    return "://" in str(path)


def _codecs(storage: dict):
    import zarr.codecs as zc
    compressors = []
    if storage["compression"] == "zstd":
        compressors.append(zc.ZstdCodec(level=storage["level"]))
    elif storage["compression"] == "blosc-lz4":
        compressors.append(zc.BloscCodec(cname="lz4", clevel=storage["level"], shuffle="shuffle"))
    if storage["checksum"]:
        compressors.append(zc.Crc32cCodec())
    return compressors or None


def _template(recipe: Recipe):
    """The lazy xarray Dataset whose metadata defines an empty store, with encodings."""
    import dask.array as da
    import xarray as xr

    from cmbcube.science.sky import cmb_unit, component_names
    r = recipe.data
    nside = r["nside"]
    npix = 12 * nside * nside
    dets = recipe.detectors()
    fields = r["fields"]
    splits = recipe.splits
    nsim = max(max(splits.values()), 1)
    comps = component_names(recipe) if "components" in r["keep"] else []
    nell = 3 * r["nside"]          # theory spectra to the output band limit (the CMB is band-limited there)
    shape5 = (len(SPLITS), nsim, len(dets), len(fields), npix)
    compressors = _codecs(r["storage"])

    shards = {}

    def empty(shape, dtype, chunks):
        # one Dask chunk for the whole array: the template only carries metadata (it is written with
        # compute=False), and a chunk per sim would make a graph over millions of keys for big recipes
        shards[len(shards)] = chunks
        return da.empty(shape, dtype=dtype, chunks=shape)

    units = [instrument.resolve_unit(r["units"], d) for d in dets]
    has_field = np.array([[f in d.fields for f in fields] for d in dets])
    coords = {
        "split": ("split", np.array(SPLITS, dtype=object)),
        "sim": ("sim", np.arange(nsim)),
        "detector": ("detector", np.array([d.freq for d in dets])),
        "field": ("field", np.array(fields, dtype=object)),
        "cell_ids": ("pixel", np.arange(npix, dtype=np.uint64),
                     {"grid_name": "healpix", "level": int(np.log2(nside)), "indexing_scheme": "nested"}),
        "unit": ("detector", np.array(units, dtype=object)),
        "beam_fwhm_arcmin": ("detector", np.array([d.fwhm_arcmin for d in dets])),
        "center_frequency_ghz": ("detector", np.array([d.centre_ghz for d in dets])),
        "has_field": (("detector", "field"), has_field),
        "n_sims": ("split", np.array([splits[s] for s in SPLITS])),
        "param": ("param", np.array(cosmology.PARAMS, dtype=object)),
        "spectrum": ("spectrum", np.array(cosmology.SPECTRA, dtype=object)),
        "ell": ("ell", np.arange(nell)),
    }
    map_attrs = {"healpix_nside": nside, "healpix_order": "nested"}
    data = {
        "obs": (("split", "sim", "detector", "field", "pixel"), empty(shape5, np.float32, (1, 1, len(dets), len(fields), npix)),
                {**map_attrs, "long_name": "observed sky: CMB + foregrounds + noise, beam-convolved",
                 "units": "per detector: see the 'unit' coordinate"}),
        "cmb": (("split", "sim", "field", "pixel"), empty(shape5[:2] + (len(fields), npix), np.float32, (1, 1, len(fields), npix)),
                {**map_attrs, "long_name": "CMB truth (target)", "units": cmb_unit(r["units"]),
                 "beam_fwhm_arcmin": float(r["cmb"]["target_beam_arcmin"])}),
        "cosmo_params": (("split", "sim", "param"), empty(shape5[:2] + (len(cosmology.PARAMS),), np.float64, (1, 1, len(cosmology.PARAMS))),
                         {"long_name": "cosmological parameters drawn for the sim (As dimensionless, H0 km/s/Mpc)"}),
        "cl_theory": (("split", "sim", "spectrum", "ell"), empty(shape5[:2] + (4, nell), np.float64, (1, 1, 4, nell)),
                      {"long_name": "lensed theory C_ell (CAMB) of the sim's cosmology", "units": "uK_CMB^2"}),
        "sim_done": (("split", "sim"), empty(shape5[:2], np.uint8, (1, 1)),
                     {"long_name": "1 once every product of the sim is written (written last)"}),
    }
    if comps:
        data["components"] = (("split", "sim", "component", "detector", "field", "pixel"),
                              empty(shape5[:2] + (len(comps), len(dets), len(fields), npix), np.float32,
                                    (1, 1, len(comps), len(dets), len(fields), npix)),
                              {**map_attrs, "long_name": "per-component sky at each detector, beam-convolved",
                               "units": "per detector: see the 'unit' coordinate"})
        coords["component"] = ("component", np.array(comps, dtype=object))
    if "noise" in r["keep"]:
        data["noise"] = (("split", "sim", "detector", "field", "pixel"), empty(shape5, np.float32, (1, 1, len(dets), len(fields), npix)),
                         {**map_attrs, "long_name": "noise realisation included in obs",
                          "units": "per detector: see the 'unit' coordinate"})
    shard_of = {name: shards[k] for k, name in enumerate(data)}
    ds = xr.Dataset({k: xr.Variable(*v) for k, v in data.items()}, coords=coords)
    encoding = {}
    for name, var in ds.data_vars.items():
        shard = shard_of[name]
        if name in ("obs", "cmb", "components", "noise"):
            inner = (1,) * (var.ndim - 1) + (npix,)
            encoding[name] = {"chunks": inner, "shards": shard, "compressors": compressors, "fill_value": np.nan}
        else:
            encoding[name] = {"chunks": shard, "compressors": compressors,
                              "fill_value": 0 if name == "sim_done" else np.nan}
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    ds.attrs = {
        "title": f"cmbcube dataset {recipe.name}",
        "cmbcube_layout_version": LAYOUT_VERSION,
        "recipe_name": recipe.name,
        "recipe_hash": recipe.hash,
        "recipe_text": recipe.text,
        "recipe_source": recipe.source,
        "recipe_overrides": list(recipe.overrides),
        "recipe_normalized": json.dumps(recipe.data, sort_keys=True),
        "package_versions": json.dumps(package_versions()),
        "created": now,
        "nside": nside,
        "sky_nside": r["sky_nside"],
        "healpix_order": "nested",
        "coordinate_system": "galactic",
        "cmb_unit": cmb_unit(r["units"]),
        "units_choice": r["units"],
        "pixel_window_applied": bool(r["instrument"]["pixel_window"]),
        "seed": r["seed"],
        **foreground_model_attrs(r["foregrounds"]),
    }
    return ds, encoding


def foreground_model_attrs(fg: dict) -> dict:
    from cmbcube.science.foregrounds import model_attrs
    return model_attrs(fg)


def _atomic_create(path: Path, build) -> None:
    """Build a store in a sibling temp dir and rename it into place: all or nothing."""
    tmp = path.parent / f".{path.name}.creating-{uuid.uuid4().hex[:8]}"
    try:
        build(str(tmp))
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def create_or_check(path: str, recipe: Recipe) -> str:
    """Create the store for ``recipe``; if it exists with the same recipe, reuse it.

    Returns "created" or "existing".  A store made from another recipe is refused
    (StoreError) and left untouched.
    """
    if is_remote(path):
        raise StoreError(f"simulate writes local stores; {path} is a URL (copy or mount it)")
    target = Path(path)
    if target.exists():
        attrs = read_attrs(path)
        if attrs.get("recipe_hash") != recipe.hash:
            raise StoreError(_recipe_mismatch(path, attrs, recipe))
        version = foreground_model_attrs(recipe["foregrounds"])["foreground_model_version"]
        if recipe["foregrounds"]["model"].startswith("synthetic") and \
                attrs.get("foreground_model_version", "1.0") != version:
            raise StoreError(f"{path} was simulated with version {attrs.get('foreground_model_version', '1.0')} "
                             f"of the {recipe['foregrounds']['model']!r} sky and this cmbcube has version {version}; "
                             "refusing to mix skies. Use a new --store path (the earlier Gaussian sky is "
                             "foregrounds.model: synthetic-gaussian)")
        gone = [d["product"] for d in json.loads(attrs.get(DROPPED_ATTR, "[]")) if d["product"] in ("obs", "cmb")]
        if gone and pending(path):
            raise StoreError(f"{path}: {' and '.join(gone)} were dropped from this store (cmbcube drop), so its "
                             "remaining sims cannot be simulated into it; simulate into a new --store path")
        return "existing"
    if not target.parent.exists():
        raise StoreError(f"--store {path}: parent directory {target.parent} does not exist")
    if not os.access(target.parent, os.W_OK):
        raise StoreError(f"--store {path}: no permission to write in {target.parent} ({os.strerror(13)}); "
                         "nothing was created")
    ds, encoding = _template(recipe)

    def build(tmp):
        ds.to_zarr(tmp, mode="w-", compute=False, encoding=encoding, zarr_format=3, consolidated=False)
        consolidate(tmp)

    try:
        _atomic_create(target, build)
    except OSError as err:
        import errno
        if err.errno in (errno.ENOTEMPTY, errno.EEXIST) and target.exists():
            return create_or_check(path, recipe)     # another process created it meanwhile: check it as existing
        raise StoreError(os_error_message(path, err, "create the store") + "; nothing was created") from err
    return "created"


@contextlib.contextmanager
def sims_lock(path: str, stage: str):
    """Held by the driver of a stage that writes sims (simulate, ingest-cmbml) for its whole run:
    a second such process on the same store is refused at once (StoreError, exit 2) instead of
    computing and writing the same sims again.  An exclusive, non-blocking flock on the store's
    ``sim_done`` directory (never replaced, so the lock is not lost), released by the kernel when the
    process ends, even by SIGKILL.  Independent of :func:`store_lock`: stages writing other products
    (ilc, train, analyze) are not held up.  A no-op where the file system refuses directory locks."""
    import fcntl
    try:
        fd = os.open(os.path.join(path, "sim_done"), os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(f"{path}: another process (cmbcube simulate or ingest-cmbml) is writing sims into this "
                             f"store right now; {stage} refuses to run beside it so that no sim is computed or written "
                             "twice. Wait for it to finish (or stop it), then rerun: it resumes where that one "
                             "stopped") from None
        except OSError:
            pass                                     # no directory locks here (some network file systems)
        yield
    finally:
        os.close(fd)                                 # releases the lock


def _recipe_mismatch(path, attrs, recipe) -> str:
    if "recipe_hash" not in attrs:
        return f"{path} exists and is not a cmbcube store; choose another --store path"
    old = from_store_attrs(attrs)
    diffs = []

    def walk(a, b, prefix):
        for key in sorted(set(a) | set(b)):
            va, vb = a.get(key), b.get(key)
            where = f"{prefix}{key}"
            if isinstance(va, dict) and isinstance(vb, dict):
                walk(va, vb, where + ".")
            elif va != vb:
                diffs.append(f"{where}: store has {va!r}, recipe has {vb!r}")
    walk(json.loads(json.dumps(old.hashed)), json.loads(json.dumps(recipe.hashed)), "")
    return (f"{path} was made from a different recipe ({attrs.get('recipe_name')!r}, hash "
            f"{attrs['recipe_hash'][:12]}); refusing to mix datasets. Differences:\n  " + "\n  ".join(diffs[:20])
            + "\nUse a new --store path, or the store's own recipe (cmbcube info shows it).")


def read_attrs(path: str) -> dict:
    import zarr
    try:
        group = zarr.open_group(zarr_store(path), mode="r", zarr_format=3)
    except Exception as err:  # noqa: BLE001 - zarr raises several types for "not a store"
        raise StoreError(f"{path}: not a readable Zarr store ({type(err).__name__}: {err})") from None
    return dict(group.attrs)


def local_store_attrs(path: str, verb: str) -> dict:
    """Attributes of a cmbcube store that ``verb`` (e.g. "verify reads") needs as local files;
    StoreError for a URL, a missing path or a Zarr store that is not a cmbcube store."""
    if is_remote(path):
        raise StoreError(f"{path}: {verb} a local store's files; run it where the store lives")
    if not Path(path).is_dir():
        raise StoreError(f"{path}: no such store")
    attrs = read_attrs(path)
    if "recipe_hash" not in attrs:
        raise StoreError(f"{path} is a Zarr store but not a cmbcube store")
    return attrs


def update_attrs(path: str, attrs: dict) -> None:
    """Driver-side: add or replace global attributes (provenance), then consolidate; all or nothing,
    under the store's lock (see metadata_transaction)."""
    with metadata_transaction(path, "write the store's attributes"):
        _group(path, "r+").attrs.update(attrs)
        consolidate(path)


def store_recipe(path: str) -> Recipe:
    return from_store_attrs(read_attrs(path))


def _group(path: str, mode: str = "r"):
    import zarr
    if mode == "r":
        group = zarr.open_group(zarr_store(path), mode="r", zarr_format=3)
        check_bounds(group, path)
        return group
    return zarr.open_group(path, mode=mode, use_consolidated=False)


# ----------------------------------------------------------------------------- beams
# The one place that says which beam a map of the store carries.  Every stage that
# deconvolves, re-beams or writes a beam (ilc, analysis, train, export) asks here;
# none of them may fall back on an instrument preset: the store records what the
# simulator used (preset + recipe overrides) or what the ingested files' FWHM cards said.
def _beam_source(source):
    """A path (opened read-only), or an already open zarr group / xarray Dataset of the cube."""
    return _group(str(source)) if isinstance(source, (str, os.PathLike)) else source


def detector_beams(source, detectors=None) -> dict[int, float]:
    """{detector GHz: Gaussian beam FWHM in arcmin} as the store records it (``beam_fwhm_arcmin``).

    ``detectors``: the ones wanted (default all, in store order); one the store lacks is an error.
    """
    src = _beam_source(source)
    try:
        have = [int(d) for d in np.asarray(src["detector"][...])]
        fwhm = np.asarray(src["beam_fwhm_arcmin"][...], dtype=float)
    except KeyError:
        raise StoreError("the store has no 'beam_fwhm_arcmin' coordinate: it cannot say which beam its "
                         "maps carry") from None
    beams = dict(zip(have, (float(x) for x in fwhm)))
    wanted = have if detectors is None else [int(d) for d in detectors]
    missing = [d for d in wanted if d not in beams]
    if missing:
        raise StoreError(f"detectors {missing} are not in the store; it holds {', '.join(map(str, have))}")
    bad = [d for d in wanted if not (np.isfinite(beams[d]) and beams[d] >= 0)]
    if bad:
        raise StoreError(f"beam_fwhm_arcmin of detector(s) {bad} is not a FWHM >= 0 arcmin")
    return {d: beams[d] for d in wanted}


def truth_beam(source) -> float:
    """FWHM (arcmin) of the CMB truth maps (0: no beam)."""
    return float(_beam_source(source)["cmb"].attrs.get("beam_fwhm_arcmin", 0.0))


def run_beam(source, run: int) -> float:
    """FWHM (arcmin) of run ``run``'s output maps."""
    return float(np.asarray(_beam_source(source)["run_beam_fwhm_arcmin"][run]))


def done_flags(path: str) -> np.ndarray:
    """(split, sim) bool: sims whose every product is written."""
    return np.asarray(_group(path)["sim_done"][...]) == 1


def planned(path: str) -> np.ndarray:
    group = _group(path)
    n = np.asarray(group["n_sims"][...])
    nsim = group["sim"].shape[0]
    return np.arange(nsim)[None, :] < n[:, None]


def pending(path: str) -> list[tuple[str, int]]:
    todo = planned(path) & ~done_flags(path)
    return [(SPLITS[i], int(j)) for i, j in zip(*np.nonzero(todo))]


def write_sim(path: str, split: str, sim: int, result) -> None:
    """Write one sim's products (whole shards), then its done-flag."""
    group = _group(path, "r+")
    isplit = SPLITS.index(split)
    group["obs"][isplit, sim] = result.obs
    group["cmb"][isplit, sim] = result.cmb
    group["cosmo_params"][isplit, sim] = result.params
    cls = group["cl_theory"]
    block = np.full(cls.shape[2:], np.nan)
    block[:, : result.cls.shape[1]] = result.cls[:, : block.shape[1]]
    cls[isplit, sim] = block
    if "components" in group and result.components is not None:
        group["components"][isplit, sim] = result.components
    if "noise" in group and result.noise is not None:
        group["noise"][isplit, sim] = result.noise
    group["sim_done"][isplit, sim] = 1


# ----------------------------------------------------------------------------- runs (predictions)
RUN_ARRAYS = ("run", "run_method", "run_config", "run_beam_fwhm_arcmin", "run_epoch", "pred", "pred_done")


class RunMismatch(StoreError):
    """A run name exists with other settings."""


_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")


def check_run_name(name, field: str = "--run") -> str:
    """A run name is also a folder name (``<store>.runs/<name>``, report files): 1-100 letters, digits,
    '.', '_', '-', '+', starting with a letter or digit, so no '/', '..' or absolute path can lead a
    write or a deletion outside the store and its runs folder.  ValueError (exit 2) names the field."""
    if not isinstance(name, str) or not _RUN_NAME.fullmatch(name):
        raise InputError(f"{field} {name!r}: not allowed as a run name (it becomes the folder <store>.runs/<name>); "
                         "use 1-100 letters, digits, '.', '_', '-', '+', starting with a letter or digit "
                         "(no '/', no '..', no absolute path)")
    return name


def safe_name(text) -> str:
    """``text`` usable as one file-name component: characters other than letters, digits, '.', '_',
    '-', '+' become '_', and a leading '.' too (for names read from a store, which may be hostile)."""
    out = re.sub(r"[^A-Za-z0-9._+-]", "_", str(text)) or "_"
    return "_" + out[1:] if out[0] == "." else out


def ensure_run(path: str, name: str, method: str, config: dict, beam_fwhm_arcmin: float,
               uncertainty: bool = False) -> int:
    """Driver-side: the index of run ``name``, created if needed (see _ensure_run); all or nothing."""
    check_run_name(name)
    if DROP_JOURNAL_ATTR in read_attrs(path):
        raise StoreError(f"{path}: removing a run was interrupted; finish it first (cmbcube drop {path} run "
                         f"--run {json.loads(read_attrs(path)[DROP_JOURNAL_ATTR])['run']})")
    with metadata_transaction(path, f"add run {name!r}"):
        return _ensure_run(path, name, method, config, beam_fwhm_arcmin, uncertainty)


def _ensure_run(path: str, name: str, method: str, config: dict, beam_fwhm_arcmin: float,
                uncertainty: bool = False) -> int:
    """Driver-side: the index of run ``name`` along the ``run`` axis, creating it if needed.

    A run is one method with one configuration; asking for an existing name with
    another configuration is refused (RunMismatch).  New runs grow the run axis
    of every run-indexed array (metadata only; no data is rewritten).
    """
    group = _group(path, "r+")
    names = set(group.array_keys())
    config_json = json.dumps(config, sort_keys=True)
    if "run" in names:
        runs = [str(r) for r in group["run"][...]]
        if name in runs:
            i = runs.index(name)
            old = str(group["run_config"][i])
            if old != config_json:
                raise RunMismatch(f"run {name!r} already exists in {path} with other settings:\n  stored: {old}\n"
                                  f"  asked:  {config_json}\nchoose another --run name (or drop the run)")
            if uncertainty and "pred_sigma" not in names:
                _create_run_array(group, "pred_sigma", len(runs))
            return i
        index = len(runs)
        # every run-indexed array grows with the run axis (predictions, losses, metrics...)
        for key in names:
            arr = group[key]
            dims = getattr(arr.metadata, "dimension_names", None) or ()
            if not dims or dims[0] != "run" or arr.shape[0] != index:
                continue
            arr.resize((index + 1,) + arr.shape[1:])
    else:
        index = 0
        for key in RUN_ARRAYS:
            _create_run_array(group, key, 1)
    if uncertainty and "pred_sigma" not in set(group.array_keys()):
        _create_run_array(group, "pred_sigma", index + 1)
    group["run"][index] = name
    group["run_method"][index] = method
    group["run_config"][index] = config_json
    group["run_beam_fwhm_arcmin"][index] = float(beam_fwhm_arcmin)
    consolidate(path)
    return index


def create_array(path: str, name: str, shape, dims, dtype="f4", chunks=None, shards=None, fill_value=np.nan,
                 attrs=None, overwrite=False):
    """Driver-side: a new array with named dimensions (xarray-readable), codecs from the recipe."""
    group = _group(path, "r+")
    if name in set(group.array_keys()) and not overwrite:
        return group[name]
    recipe = from_store_attrs(dict(group.attrs))
    kwargs = dict(shape=tuple(shape), dtype=dtype, chunks=tuple(chunks or shape), fill_value=fill_value,
                  dimension_names=list(dims), attributes=attrs or {}, overwrite=overwrite)
    if shards is not None:
        kwargs["shards"] = tuple(shards)
    if np.dtype(dtype).kind == "f":
        kwargs["compressors"] = _codecs(recipe["storage"])
    return group.create_array(name, **kwargs)


def _create_run_array(group, key: str, nrun: int) -> None:
    nsplit, nsim = group["sim_done"].shape
    nfield = group["field"].shape[0]
    npix = group["cell_ids"].shape[0]
    recipe = from_store_attrs(dict(group.attrs))
    compressors = _codecs(recipe["storage"])
    attrs = {"healpix_nside": int(group.attrs["nside"]), "healpix_order": "nested"}
    if key in ("run", "run_method", "run_config"):
        group.create_array(key, shape=(nrun,), dtype=str, chunks=(1,), dimension_names=["run"], fill_value="")
    elif key == "run_epoch":
        group.create_array(key, shape=(nrun,), dtype="i8", chunks=(1,), dimension_names=["run"], fill_value=-1,
                           attributes={"long_name": "training epoch of the checkpoint that made the predictions "
                                                    "(-1: not a trained model)"})
    elif key == "run_beam_fwhm_arcmin":
        group.create_array(key, shape=(nrun,), dtype="f8", chunks=(1,), dimension_names=["run"], fill_value=np.nan,
                           attributes={"long_name": "beam FWHM of the run's output maps (arcmin)"})
    elif key in ("pred", "pred_sigma"):
        long = "predicted CMB" if key == "pred" else "per-pixel 1-sigma uncertainty of the prediction"
        group.create_array(key, shape=(nrun, nsplit, nsim, nfield, npix), dtype="f4",
                           chunks=(1, 1, 1, 1, npix), shards=(1, 1, 1, nfield, npix), fill_value=np.nan,
                           compressors=compressors, dimension_names=["run", "split", "sim", "field", "pixel"],
                           attributes={**attrs, "long_name": long, "units": group.attrs["cmb_unit"]})
    elif key == "pred_done":
        group.create_array(key, shape=(nrun, nsplit, nsim), dtype="u1", chunks=(1, 1, 1), fill_value=0,
                           dimension_names=["run", "split", "sim"],
                           attributes={"long_name": "1 once the run's prediction of the sim is written"})


def pred_done_count(path: str, run: int, splits=SPLITS) -> int:
    """How many sims of ``splits`` hold the run's prediction."""
    done = np.asarray(_group(path)["pred_done"][run])
    return int(sum(done[SPLITS.index(s)].sum() for s in splits))


def run_epoch(path: str, run: int) -> int:
    return int(np.asarray(_group(path)["run_epoch"][run]))


def fields(path: str) -> list[str]:
    return [str(f) for f in _group(path)["field"][...]]


def set_run_epoch(path: str, run: int, epoch: int) -> None:
    _group(path, "r+")["run_epoch"][run] = int(epoch)


def run_config(path: str, run: int) -> dict:
    return json.loads(str(_group(path)["run_config"][run]))


def write_losses(path: str, run: int, train: list, valid: list, train_sims: int | None = None) -> None:
    """Driver-side (the training process): per-epoch losses of a run, (run, epoch) arrays, and the
    number of training skies it saw (``train_sims``, (run,))."""
    with metadata_transaction(path, "write the training losses"):
        _write_losses(path, run, train, valid, train_sims)


def _write_losses(path: str, run: int, train: list, valid: list, train_sims: int | None = None) -> None:
    group = _group(path, "r+")
    names = set(group.array_keys())
    nrun = group["run"].shape[0]
    need = max(len(train), 1)
    for key, values, long in (("loss_train", train, "mean training loss per epoch"),
                              ("loss_valid", valid, "mean validation loss per epoch (valid split)")):
        if key not in names:
            group.create_array(key, shape=(nrun, need), dtype="f8", chunks=(1, need), fill_value=np.nan,
                               dimension_names=["run", "epoch"], attributes={"long_name": long})
        arr = group[key]
        if arr.shape[0] < nrun or arr.shape[1] < need:
            arr.resize((max(arr.shape[0], nrun), max(arr.shape[1], need)))
        row = np.full(arr.shape[1], np.nan)
        row[: len(values)] = values
        arr[run] = row
    if train_sims is not None:
        if "train_sims" not in names:
            group.create_array("train_sims", shape=(nrun,), dtype="i8", chunks=(1,), fill_value=-1,
                               dimension_names=["run"],
                               attributes={"long_name": "training skies (train-split sims) the run was trained on "
                                                        "(-1: not recorded)"})
        arr = group["train_sims"]
        if arr.shape[0] < nrun:
            arr.resize((nrun,))
        arr[run] = int(train_sims)
    consolidate(path)


def run_index(path: str, name: str) -> int:
    group = _group(path)
    runs = [str(r) for r in group["run"][...]] if "run" in set(group.array_keys()) else []
    if name not in runs:
        raise StoreError(f"{path}: no run {name!r}; runs present: {', '.join(runs) or 'none'}")
    return runs.index(name)


def run_pending(path: str, run: int, splits) -> list[tuple[str, int]]:
    group = _group(path)
    sim_done = np.asarray(group["sim_done"][...]) == 1
    pred_done = np.asarray(group["pred_done"][run]) == 1
    out = []
    for split in splits:
        i = SPLITS.index(split)
        out += [(split, int(s)) for s in np.nonzero(sim_done[i] & ~pred_done[i])[0]]
    return out


def write_prediction(path: str, run: int, split: str, sim: int, maps: np.ndarray,
                     sigma: np.ndarray | None = None) -> None:
    """Worker-side: one sim's prediction (field, pixel) NESTED (+ optional sigma), then its flag."""
    group = _group(path, "r+")
    isplit = SPLITS.index(split)
    group["pred"][run, isplit, sim] = maps
    if sigma is not None:
        group["pred_sigma"][run, isplit, sim] = sigma
    group["pred_done"][run, isplit, sim] = 1


def clear_done(path: str, split: str, sim: int) -> None:
    _group(path, "r+")["sim_done"][SPLITS.index(split), sim] = 0


# ----------------------------------------------------------------------------- housekeeping (verify, drop)
DROPPED_ATTR = "cmbcube_dropped"            # JSON list of products removed by `cmbcube drop`
DROP_JOURNAL_ATTR = "cmbcube_dropping_run"  # set while a run is being removed from the run axis


def fresh_group(path: str, mode: str = "r"):
    """The root group read from every array's own metadata (not the consolidated copy)."""
    import zarr
    return zarr.open_group(path, mode=mode, use_consolidated=False)


def array_dims(arr) -> tuple:
    return tuple(getattr(arr.metadata, "dimension_names", None) or ())


def outer_chunks(arr) -> tuple:
    """Shape of the array's storage units: the shard shape for sharded arrays, else the chunk shape."""
    return tuple(arr.metadata.chunk_grid.chunk_shape)


def unit_files(path: str, arr, name: str, leading: tuple) -> list[tuple[str, str]]:
    """(key, local file) of every chunk file (the shard, for sharded arrays) holding
    ``arr[leading]``: what one unit of work writes, e.g. (split, sim) or (run, split, sim)."""
    import itertools
    outer = outer_chunks(arr)
    grid = [-(-s // c) for s, c in zip(arr.shape, outer)]
    lead = [int(i) // c for i, c in zip(leading, outer)]
    out = []
    for rest in itertools.product(*[range(g) for g in grid[len(lead):]]):
        key = arr.metadata.encode_chunk_key(tuple(lead) + tuple(rest))
        out.append((key, os.path.join(str(path), name, *key.split("/"))))
    return out


def clear_run_done(path: str, run: int, split: str, sim: int, analysis_only: bool = False) -> None:
    """Forget that run ``run`` predicted (and analysed) a sim, so `cmbcube ilc`/`predict` and
    `cmbcube analyze` redo exactly it; ``analysis_only`` keeps the prediction's flag."""
    group = _group(path, "r+")
    isplit = SPLITS.index(split)
    names = set(group.array_keys())
    if not analysis_only and "pred_done" in names:
        group["pred_done"][run, isplit, sim] = 0
    if "analysis_done" in names and group["analysis_done"].shape[0] > run:
        group["analysis_done"][run, isplit, sim] = 0


def dropped_products(path: str) -> list[str]:
    return [d["product"] for d in json.loads(read_attrs(path).get(DROPPED_ATTR, "[]"))]


def record_dropped(path: str, product: str) -> None:
    group = fresh_group(path, "r+")
    entries = json.loads(group.attrs.get(DROPPED_ATTR, "[]"))
    entries = [e for e in entries if e["product"] != product]
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    group.attrs[DROPPED_ATTR] = json.dumps(entries + [{"product": product, "dropped": now}])


def delete_arrays(path: str, names) -> list[str]:
    """Remove whole arrays (data and metadata); returns those that existed.  Consolidate after."""
    gone = []
    for name in names:
        where = Path(path) / name
        if (where / "zarr.json").exists():
            shutil.rmtree(where)
            gone.append(name)
    return gone


def run_axis_arrays(path: str) -> list[str]:
    group = fresh_group(path)
    return sorted(k for k in group.array_keys() if array_dims(group[k])[:1] == ("run",))


def _check_run_chunking(path: str, names) -> None:
    """Run-axis housekeeping moves whole chunk directories: one chunk (or shard) per run index."""
    group = fresh_group(path)
    for name in names:
        arr = group[name]
        enc = arr.metadata.chunk_key_encoding
        if outer_chunks(arr)[0] != 1 or getattr(enc, "separator", "/") != "/" or getattr(enc, "name", "default") != "default":
            raise StoreError(f"{path}: array {name} is not stored one chunk per run (chunks {outer_chunks(arr)}, "
                             f"key encoding {enc}); cmbcube drop cannot edit its run axis")


def delete_run_chunks(path: str, names, run: int | None) -> None:
    """Delete the data of run index ``run`` (every run when None) from run-axis arrays; the
    arrays and the run axis stay (missing chunks read as the fill value: NaN, or 0 for flags)."""
    _check_run_chunking(path, names)
    for name in names:
        base = Path(path) / name / "c"
        target = base if run is None else base / str(run)
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def remove_run(path: str, name: str) -> int:
    """Remove run ``name`` from the run axis: its chunks are deleted, later runs move down one
    index (chunk files renamed, never rewritten) and every run-axis array shrinks by one.

    Crash-safe: the root attribute ``cmbcube_dropping_run`` records the operation and the arrays
    already done; calling again with the same name finishes it.  Returns the removed index.
    """
    group = fresh_group(path, "r+")
    journal = json.loads(group.attrs.get(DROP_JOURNAL_ATTR, "null") or "null")
    if journal is not None and journal["run"] != name:
        raise StoreError(f"{path}: removing run {journal['run']!r} was interrupted; finish it first "
                         f"(cmbcube drop {path} run --run {journal['run']})")
    names = run_axis_arrays(path)
    if journal is None:
        runs = [str(r) for r in group["run"][...]] if "run" in names else []
        if name not in runs:
            raise StoreError(f"{path}: no run {name!r}; runs present: {', '.join(runs) or 'none'}")
        _check_run_chunking(path, names)
        shapes = {key: fresh_group(path)[key].shape[0] for key in names}
        journal = {"run": name, "index": runs.index(name), "nrun": len(runs), "shapes": shapes}
        group.attrs[DROP_JOURNAL_ATTR] = json.dumps(journal)
    index, nrun = journal["index"], journal["nrun"]
    if nrun == 1:
        delete_arrays(path, names)
    else:
        for key in names:
            arr = fresh_group(path, "r+")[key]
            before = journal["shapes"].get(key, arr.shape[0])
            if arr.shape[0] != before or before <= index:
                continue                    # already shrunk (an interrupted drop), or no slot to remove
            _remove_run_slot(Path(path) / key, index)
            arr.resize((before - 1,) + tuple(arr.shape[1:]))
    del group.attrs[DROP_JOURNAL_ATTR]
    consolidate(path)
    return index


def _remove_run_slot(array_dir: Path, index: int) -> None:
    """c/<index> deleted, c/<k> -> c/<k-1> for k > index, through c.dropping so an interrupted
    pass can be finished (each entry's destination depends only on its own index)."""
    chunks, staging = array_dir / "c", array_dir / "c.dropping"
    if chunks.exists():
        staging.mkdir(exist_ok=True)
        for entry in sorted(chunks.iterdir()):
            try:
                k = int(entry.name)
            except ValueError:              # a stray temporary (*.partial) key
                k = index
            if k == index and entry.is_dir():
                shutil.rmtree(entry)
            elif k == index:
                entry.unlink()
            else:
                os.rename(entry, staging / str(k if k < index else k - 1))
        chunks.rmdir()
    if staging.exists():
        os.rename(staging, chunks)


_HELD_LOCKS: dict[str, int] = {}        # this process's holds: real store path -> depth


@contextlib.contextmanager
def store_lock(path: str):
    """Exclusive inter-process lock (flock on the store's directory) around driver-side metadata
    changes: stages running at once in different processes, each writing its own products, take
    turns to grow the run axis, add arrays and consolidate (measured: without it, two processes
    adding runs at once crash or overwrite each other's run).  Re-entrant within a process (one
    driver thread); a no-op for URLs and where the file system refuses directory locks."""
    if is_remote(str(path)):
        yield
        return
    key = os.path.realpath(path)
    if _HELD_LOCKS.get(key):
        _HELD_LOCKS[key] += 1
        try:
            yield
        finally:
            _HELD_LOCKS[key] -= 1
        return
    import fcntl
    try:
        fd = os.open(key, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        fd = None
    try:
        if fd is not None:
            _HELD_LOCKS[key] = 1
        yield
    finally:
        if fd is not None:
            _HELD_LOCKS.pop(key, None)
            os.close(fd)                 # releases the lock


class metadata_transaction:
    """Driver-side metadata changes made all or nothing on a local store (under :func:`store_lock`).

    On an OS error (disk full, permission denied, read-only file system) every array metadata
    file and the root's are put back as they were, arrays created meanwhile are removed, and a
    StoreError names the path and the error.  Data chunks of existing arrays are not restored.
    """

    def __init__(self, path: str, action: str):
        self.path, self.action = str(path), action

    def __enter__(self):
        self._lock = store_lock(self.path)
        self._lock.__enter__()
        root = Path(self.path)
        self.before = {}
        if not is_remote(self.path) and root.is_dir():
            for meta in [root / "zarr.json", *root.glob("*/zarr.json")]:
                try:
                    self.before[meta] = meta.read_bytes()
                except OSError:
                    pass
        return self

    def __exit__(self, kind, err, tb):
        try:
            return self._restore(err)
        finally:
            self._lock.__exit__(None, None, None)

    def _restore(self, err):
        cause = err.__cause__ if isinstance(err, StoreError) else err
        if not isinstance(cause, OSError) or isinstance(cause, FileNotFoundError) or not self.before:
            return False
        root = Path(self.path)
        for meta in root.glob("*/zarr.json"):
            if meta not in self.before:
                shutil.rmtree(meta.parent, ignore_errors=True)
        for meta, blob in self.before.items():
            try:
                if not meta.exists() or meta.read_bytes() != blob:
                    tmp = meta.with_name(f".zarr.json.restore-{uuid.uuid4().hex[:8]}")
                    tmp.write_bytes(blob)
                    os.replace(tmp, meta)
            except OSError:
                pass                        # an unwritten file still holds its old bytes (atomic writes)
        raise StoreError(os_error_message(self.path, cause, self.action)
                         + "; the store's metadata was left as it was") from cause


def os_error_message(path: str, err: OSError, action: str) -> str:
    """'<store>: could not <action>: <file>: <OS error> (<what to do>)' for StoreError."""
    where = err.filename or path
    reason = err.strerror or str(err)
    hint = {28: "free some space (cmbcube drop removes products) or use another --store path",
            122: "the disk quota is exhausted: free some space or use another --store path",
            13: "check the permissions of the store directory", 1: "check the permissions of the store directory",
            30: "the file system is read-only: use another --store path"}.get(err.errno, "")
    return f"{path}: could not {action}: {where}: {reason}" + (f" ({hint})" if hint else "")


def write_variables(path: str, ds) -> None:
    """Driver-side: add or replace small whole variables (statistics, tables), then consolidate."""
    import warnings
    if is_remote(path):
        raise StoreError(f"{path}: writing needs a local store")
    ds = ds.copy()
    ds.attrs = read_attrs(path)          # to_zarr(mode="a") replaces the group's attributes
    with metadata_transaction(path, f"write {', '.join(map(str, ds.data_vars))}"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        ds.to_zarr(path, mode="a", zarr_format=3, consolidated=False)
        consolidate(path)


def consolidate(path: str) -> None:
    """Rewrite the consolidated metadata (driver only, at the end of a stage)."""
    import warnings

    import zarr
    with store_lock(path), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        try:
            zarr.consolidate_metadata(path)
        except OSError as err:
            if isinstance(err, FileNotFoundError):
                raise
            raise StoreError(os_error_message(path, err, "write the consolidated metadata")) from err


def open_dataset(path: str, chunks="auto-inner", guard: bool = True, **storage_options):
    """Lazy xarray view of a store (local path or fsspec URL); nothing is read until asked.

    Reads go through the guard (:mod:`cmbcube.cube.guard`): a finished unit whose chunk is missing or
    corrupted raises DamagedUnitError naming it; units not done yet read as NaN (fill).
    Metadata declaring sizes no cmbcube store has is refused first (:func:`check_bounds`)."""
    import warnings

    import xarray as xr
    import zarr
    if not is_remote(path) and not Path(path).exists():
        raise StoreError(f"{path}: no such store")
    import zarr.errors
    store = zarr_store(path, storage_options, guard)
    if is_remote(path):
        store = _metadata_memo()(store)          # the bounds check and xarray share one metadata request
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        try:
            check_bounds(zarr.open_group(store, mode="r", zarr_format=3), path)
            ds = xr.open_zarr(store, chunks={} if chunks == "auto-inner" else chunks, zarr_format=3)
        except (OSError, zarr.errors.BaseZarrError) as err:      # missing, unreachable, not a store
            raise StoreError(f"{path}: cannot open a cube there ({type(err).__name__}: {err})") from None
    return ds


MAX_NSIDE = 8192                        # the recipe's limit
MAX_PIXELS = 12 * MAX_NSIDE ** 2        # the pixel axis, and the largest chunk (one map) any stage writes
MAX_AXIS = 10_000_000                   # every other axis (sims, runs, detectors, epochs...)


def check_bounds(group, path: str) -> None:
    """Refuse a store whose metadata declares sizes no cmbcube store has (a hostile or damaged
    zarr.json), before anything is allocated: every axis at most MAX_AXIS long (``pixel``:
    12 x 8192^2), at most 8 dimensions, chunks and shards no larger than their array, and no chunk
    larger than one map at nside 8192 (what a read allocates at once).  Reads only the metadata
    zarr already holds (the consolidated copy).  StoreError names the array and the figures."""
    for name, arr in group.arrays():
        shape = tuple(int(n) for n in arr.shape)
        dims = tuple(getattr(arr.metadata, "dimension_names", None) or ()) or (None,) * len(shape)
        problem = None
        if len(shape) > 8:
            problem = f"{len(shape)} dimensions (at most 8)"
        for dim, n in zip(dims, shape):
            cap = MAX_PIXELS if dim in ("pixel", None) else MAX_AXIS
            if problem is None and n > cap:
                problem = f"dimension {dim or '?'} of length {n} (at most {cap})"
        for what, grid in (("chunk", arr.chunks), ("shard", getattr(arr, "shards", None))):
            grid = tuple(int(c) for c in grid) if grid else ()
            if problem is None and grid and any(c > max(n, 1) for c, n in zip(grid, shape)):
                problem = f"{what} shape {grid} larger than the array {shape}"
        chunk = int(np.prod([int(c) for c in arr.chunks], dtype=object)) if arr.chunks else 1
        if problem is None and chunk > MAX_PIXELS:
            problem = f"chunks of {chunk} elements (at most {MAX_PIXELS}, one map at nside {MAX_NSIDE})"
        if problem:
            raise StoreError(f"{path}: array {name!r} declares {problem}: no cmbcube store has that; refusing to "
                             "read it (damaged or hostile metadata; nothing was allocated)")


def _metadata_memo():
    """A zarr store wrapper that fetches each metadata document (zarr.json) once."""
    from zarr.storage import WrapperStore

    class MetadataMemo(WrapperStore):
        def __init__(self, store):
            super().__init__(store)
            self._memo = {}

        async def get(self, key, prototype, byte_range=None):
            if byte_range is not None or not key.endswith("zarr.json"):
                return await self._store.get(key, prototype, byte_range)
            if key not in self._memo:
                self._memo[key] = await self._store.get(key, prototype, byte_range)
            return self._memo[key]

    return MetadataMemo


def zarr_store(path: str, storage_options: dict | None = None, guard: bool = True):
    """What zarr opens for ``path``, read-only: a local path as a LocalStore; a URL as an fsspec
    store (``storage_options`` go to fsspec, e.g. ``anon=True`` or ``key=/secret=`` for s3://).
    With ``guard`` (the default) wrapped in :class:`cmbcube.cube.guard.GuardedStore`: a finished unit
    whose chunk is missing or corrupted raises DamagedUnitError instead of reading as fill values.

    http(s) stores are read through a filesystem that also copes with servers that ignore
    Range requests (``python -m http.server``): fsspec would hand zarr the whole file for a
    byte range and the read would fail its checksum; here the range is cut out locally.
    """
    path = str(path)
    if not is_remote(path):
        if not guard:
            return path
        from zarr.storage import LocalStore
        inner = LocalStore(path, read_only=True)
    else:
        from zarr.storage import FsspecStore
        if path.startswith(("http://", "https://")):
            fs = _range_tolerant_http()(asynchronous=True, **(storage_options or {}))
            inner = FsspecStore(fs, path=path.rstrip("/"), read_only=True)
        else:
            inner = FsspecStore.from_url(path, storage_options=storage_options or None, read_only=True)
    if not guard:
        return inner
    from cmbcube.cube.guard import GuardedStore
    return GuardedStore(inner, path)


def read_group(path: str, storage_options: dict | None = None):
    """The store's root group for reading through the guard (stages' input reads)."""
    import zarr
    return zarr.open_group(zarr_store(str(path), storage_options), mode="r")


_RANGE_WARNED: set = set()


def _range_tolerant_http():
    import logging
    from urllib.parse import urlsplit

    from fsspec.implementations.http import HTTPFileSystem

    class RangeTolerantHTTP(HTTPFileSystem):
        async def set_session(self):
            # fsspec closes the sessions of synchronous instances only; close ours too (at exit at the
            # latest) instead of leaving aiohttp's 'Unclosed client session' warnings behind
            if self._session is None:
                import asyncio
                import weakref
                session = await super().set_session()
                weakref.finalize(self, self.close_session, asyncio.get_running_loop(), session)
            return self._session

        async def _cat_file(self, url, start=None, end=None, **kwargs):
            if start is None and end is None:
                return await super()._cat_file(url, **kwargs)
            if start == end:
                return b""
            kw = self.kwargs.copy()
            kw.update(kwargs)
            headers = kw.pop("headers", {}).copy()
            headers["Range"] = await self._process_limits(url, start, end)
            session = await self.set_session()
            async with session.get(self.encode_url(url), headers=headers, **kw) as r:
                out = await r.read()
                self._raise_not_found_for_status(r, url)
                partial = r.status == 206
            if partial:
                return out
            host = urlsplit(url).netloc
            if host not in _RANGE_WARNED:
                _RANGE_WARNED.add(host)
                logging.getLogger("cmbcube").warning(
                    "%s ignores HTTP Range requests: every read downloads whole shard files "
                    "(serve the store with a server that supports ranges, e.g. nginx or an object store)", host)
            return out[slice(start, end)]

    return RangeTolerantHTTP


def disk_size(path: str) -> int | None:
    if is_remote(path):
        return None
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def _human(nbytes: float) -> str:
    """A size for people (one formatter: :func:`cmbcube.stages.limits.human`)."""
    from cmbcube.stages.limits import human
    return human(nbytes)


def summary(path: str) -> str:
    """Human summary for ``cmbcube info``."""
    attrs = read_attrs(path)
    if "recipe_hash" not in attrs:
        raise StoreError(f"{path} is a Zarr store but not a cmbcube store")
    ds = open_dataset(path)
    done = done_flags(path)
    plan = planned(path)
    lines = [f"cmbcube store {path}",
             f"  recipe      {attrs['recipe_name']} (hash {attrs['recipe_hash'][:12]}, created {attrs['created']})"]
    if attrs.get("recipe_overrides"):
        lines.append(f"  overrides   {' '.join(attrs['recipe_overrides'])}")
    lines.append(f"  grid        HEALPix nside {attrs['nside']} ({12 * attrs['nside'] ** 2} pixels, "
                 f"{attrs['healpix_order'].upper()}), sky model nside {attrs['sky_nside']}, "
                 f"{attrs['coordinate_system']} coordinates, pixel window {'applied' if attrs['pixel_window_applied'] else 'not applied'}")
    lines.append("  splits      " + ", ".join(
        f"{s} {int((done & plan)[i].sum())}/{int(plan[i].sum())} done" for i, s in enumerate(SPLITS)))
    lines.append(f"  fields      {', '.join(map(str, ds.field.values))}")
    lines.append("  detectors   freq  centre GHz  beam'   unit    fields")
    for k, det in enumerate(ds.detector.values):
        fields = "".join(f for f, ok in zip(ds.field.values, ds.has_field.values[k]) if ok)
        lines.append(f"              {int(det):4d}  {float(ds.center_frequency_ghz[k]):9.3f}  "
                     f"{float(ds.beam_fwhm_arcmin[k]):5.2f}  {str(ds.unit.values[k]):7s} {fields}")
    if "cmb" in ds:
        lines.append(f"  CMB truth   unit {attrs['cmb_unit']}, beam {ds.cmb.attrs.get('beam_fwhm_arcmin', 0)}' (0 = none)")
    products = [name for name in ds.data_vars if name not in ("sim_done", "pred_done")]
    lines.append(f"  products    {', '.join(products)}")
    gone = json.loads(attrs.get(DROPPED_ATTR, "[]"))
    if gone:
        lines.append("  dropped     " + ", ".join(f"{d['product']} ({d['dropped']})" for d in gone))
    if "run" in ds.coords:
        for k, run in enumerate(ds.run.values):
            cnt = ds.pred_done.isel(run=k).sum("sim").values
            lines.append(f"  run         {run}: {ds.run_method.values[k]}, beam {float(ds.run_beam_fwhm_arcmin[k]):.1f}', "
                         + ", ".join(f"{s} {int(c)}" for s, c in zip(SPLITS, cnt)) + " sims predicted")
    if "component" in ds.coords:
        lines.append(f"  components  {', '.join(map(str, ds.component.values))}")
    size = disk_size(path)
    if size is not None:
        lines.append(f"  on disk     {_human(size)}")
    versions = json.loads(attrs.get("package_versions", "{}"))
    lines.append("  versions    " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return "\n".join(lines)
