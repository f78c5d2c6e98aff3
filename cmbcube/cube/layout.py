"""The store layout: one table of stored products (``PRODUCTS``), and the template built from it.

A stored product is what a stage writes and ``cmbcube drop`` removes: its arrays with their
dimensions, how they are chunked (one shard per unit of work with one inner chunk per map, or
one chunk per unit), the done-flag of the unit that writes them, which maps a finished unit
must hold, and the stage that writes them.  The store template (what ``simulate`` creates),
the run arrays, ``verify``, ``drop`` and the read guard all read this table; store_layout.md
describes the same layout for people.

Adding a product is one ``PRODUCTS.register(name, Product(...))`` line here (plus the typed
read/write functions of the stage that writes it).
"""
from __future__ import annotations

import dataclasses
import datetime
import json

import numpy as np

from cmbcube import __version__
from cmbcube.recipe import SPLITS, Recipe
from cmbcube.registry import Registry

LAYOUT_VERSION = 1

MAP_ATTRS = ("healpix_nside", "healpix_order")          # carried by every map array (nside, "nested")
PER_DETECTOR_UNITS = "per detector: see the 'unit' coordinate"


@dataclasses.dataclass(frozen=True)
class Array:
    """One stored array of a product."""

    dims: tuple
    dtype: str
    long_name: str = ""
    units: str | None = None        # a fixed unit text; None: no units attribute (or set by the template)
    maps: bool = False              # sharded: one shard per unit, one inner chunk per (1-D) map
    fill: object = np.nan


@dataclasses.dataclass(frozen=True)
class Product:
    """A stored product: what one stage writes and ``cmbcube drop`` removes as a whole."""

    description: str                   # what ``cmbcube drop PRODUCT`` removes
    stage: str                          # the command that writes it
    arrays: dict                        # name -> Array (or None: created by its stage, dims unknown here)
    coords: tuple = ()                  # coordinate arrays that exist only with it (dropped with it)
    flag: str | None = None             # done-flag of its unit of work: sim_done, pred_done, analysis_done
    required: str = "none"              # maps a finished unit must hold: "all", "has_field" or "none"
    optional: tuple = ()                # arrays whose chunks may be absent for a finished unit
    droppable: bool = True              # a name ``cmbcube drop`` accepts
    keep: str | None = None             # the recipe's ``keep`` entry that asks for it (optional products)

    @property
    def main(self) -> str:
        return next(iter(self.arrays))

    @property
    def run_axis(self) -> bool:
        """Whether its arrays lie along the run axis (they grow with every new run)."""
        spec = self.arrays[self.main]
        return spec is not None and spec.dims[:1] == ("run",)

    def unit_arrays(self) -> list[str]:
        """Its arrays written unit by unit and flagged (what verify and the guard check)."""
        if self.flag is None:
            return []
        lead = FLAGS[self.flag].dims
        return [n for n, a in self.arrays.items() if a is not None and a.dims[:len(lead)] == lead]


# done-flags: one unsharded chunk per unit, written after the unit's data
FLAGS = {
    "sim_done": Array(("split", "sim"), "u1", "1 once every product of the sim is written (written last)", fill=0),
    "pred_done": Array(("run", "split", "sim"), "u1", "1 once the run's prediction of the sim is written", fill=0),
    "analysis_done": Array(("run", "split", "sim"), "u1", fill=0),     # created by analyze, without attributes
}
FLAG_STAGE = {"sim_done": "cmbcube simulate", "pred_done": "cmbcube ilc / predict for the run",
              "analysis_done": "cmbcube analyze"}

MAP5 = ("split", "sim", "detector", "field", "pixel")
RUN_MAP = ("run", "split", "sim", "field", "pixel")

PRODUCTS = Registry("stored product", "product")
PRODUCTS.register("obs", Product(
    "observed maps", "cmbcube simulate",
    {"obs": Array(MAP5, "f4", "observed sky: CMB + foregrounds + noise, beam-convolved", PER_DETECTOR_UNITS, True)},
    flag="sim_done", required="has_field"))
PRODUCTS.register("cmb", Product(
    "CMB truth maps", "cmbcube simulate",
    {"cmb": Array(("split", "sim", "field", "pixel"), "f4", "CMB truth (target)", maps=True)},
    flag="sim_done", required="all"))
PRODUCTS.register("components", Product(
    "per-component foreground maps", "cmbcube simulate",
    {"components": Array(("split", "sim", "component", "detector", "field", "pixel"), "f4",
                         "per-component sky at each detector, beam-convolved", PER_DETECTOR_UNITS, True)},
    coords=("component",), flag="sim_done", required="has_field", keep="components"))
PRODUCTS.register("noise", Product(
    "noise realisations", "cmbcube simulate",
    {"noise": Array(MAP5, "f4", "noise realisation included in obs", PER_DETECTOR_UNITS, True)},
    flag="sim_done", required="has_field", keep="noise"))
PRODUCTS.register("cosmology", Product(
    "cosmological parameters and theory spectra of each sim", "cmbcube simulate",
    {"cosmo_params": Array(("split", "sim", "param"), "f8",
                           "cosmological parameters drawn for the sim (As dimensionless, H0 km/s/Mpc)"),
     "cl_theory": Array(("split", "sim", "spectrum", "ell"), "f8", "lensed theory C_ell (CAMB) of the sim's cosmology",
                        "uK_CMB^2")},
    flag="sim_done", droppable=False))
PRODUCTS.register("stats", Product(
    "normalisation statistics (stats_obs, stats_cmb)", "cmbcube preprocess",
    {"stats_obs": Array(("stat", "detector", "field"), "f8"), "stats_cmb": Array(("stat", "field"), "f8")},
    coords=("stat",)))
PRODUCTS.register("pred", Product(
    "predictions of every run, or of --run NAME (their analysis too); runs stay defined", "cmbcube ilc / predict",
    {"pred": Array(RUN_MAP, "f4", "predicted CMB", maps=True),
     "pred_sigma": Array(RUN_MAP, "f4", "per-pixel 1-sigma uncertainty of the prediction", maps=True)},
    flag="pred_done", optional=("pred_sigma",)))
PRODUCTS.register("analysis", Product(
    "metrics, spectra and analysis masks, or one --run's metrics and spectra", "cmbcube analyze",
    {"metrics": Array(("run", "split", "sim", "beam", "field", "metric"), "f8"),
     "spectra": Array(("run", "split", "sim", "kind", "spectrum", "ell_bin"), "f8"),
     "mask": Array(("pixel",), "u1"), "mask_apodized": Array(("pixel",), "f4"),
     "spectra_window": Array(("spectrum", "ell_bin", "spectrum_in", "ell"), "f8")},
    coords=("beam_fwhm", "metric", "kind", "ell_bin"), flag="analysis_done"))
PRODUCTS.register("run", Product(
    "whole runs, or --run NAME: settings, predictions, losses, analysis and checkpoints", "every predicting stage",
    {"run": Array(("run",), "str", fill=""), "run_method": Array(("run",), "str", fill=""),
     "run_config": Array(("run",), "str", fill=""),
     "run_beam_fwhm_arcmin": Array(("run",), "f8", "beam FWHM of the run's output maps (arcmin)"),
     "run_epoch": Array(("run",), "i8", "training epoch of the checkpoint that made the predictions "
                                        "(-1: not a trained model)", fill=-1),
     "loss_train": Array(("run", "epoch"), "f8", "mean training loss per epoch"),
     "loss_valid": Array(("run", "epoch"), "f8", "mean validation loss per epoch (valid split)"),
     "train_sims": Array(("run",), "i8", "training skies (train-split sims) the run was trained on "
                                         "(-1: not recorded)", fill=-1)}))


def product_arrays(name: str) -> tuple:
    """Every array of product ``name``: its data arrays, its done-flag where it owns the flag's axis
    (pred_done, analysis_done) and its own coordinates (what ``drop`` removes with it)."""
    p = PRODUCTS.get(name)
    flag = (p.flag,) if p.flag and p.flag != "sim_done" else ()
    return tuple(p.arrays) + flag + tuple(p.coords)


def run_axis_arrays_of(name: str) -> tuple:
    """The arrays of product ``name`` along the run axis, its done-flag included (what clearing one run's
    ``pred`` or ``analysis`` deletes chunk by chunk)."""
    return tuple(a for a in product_arrays(name) if array_dims_of(a)[:1] == ("run",))


def array_dims_of(name: str) -> tuple:
    """The table's dimensions of array ``name`` (() for coordinates and arrays it does not describe)."""
    try:
        return array_spec(name).dims
    except KeyError:
        return ()


def droppable() -> tuple:
    """List the names of the products ``cmbcube drop`` may remove."""
    return tuple(n for n, p in PRODUCTS.items() if p.droppable)


def unit_products(flag: str | None = None) -> tuple:
    """The arrays written unit by unit and flagged by ``flag`` (all flags when None), in table order:
    what ``verify`` checks and the guard guards."""
    return tuple(a for _, p in PRODUCTS.items() if flag in (None, p.flag) for a in p.unit_arrays())


def product_of(array: str):
    """The Product holding ``array`` (None for coordinates, flags and unknown names)."""
    for _, p in PRODUCTS.items():
        if array in p.arrays:
            return p
    return None


SIM_PRODUCTS = unit_products("sim_done")                 # obs, cmb, components, noise, cosmo_params, cl_theory
RUN_ARRAYS = ("run", "run_method", "run_config", "run_beam_fwhm_arcmin", "run_epoch", "pred", "pred_done")


def array_spec(name: str) -> Array:
    """The table's description of one array (a done-flag included)."""
    if name in FLAGS:
        return FLAGS[name]
    p = product_of(name)
    if p is None or p.arrays[name] is None:
        raise KeyError(name)
    return p.arrays[name]


def required_maps(name: str, dims, grid, has_field) -> np.ndarray | None:
    """(inner chunks of one shard,) bool, C order over ``grid`` (the shard's inner grid along ``dims``):
    the maps a finished unit of array ``name`` must hold; None when nothing can be said (an unknown
    array, or a (detector, field) grid that does not match ``has_field``).  ``cmb``: every map;
    ``obs``, ``noise``, ``components``: the (detector, field) pairs that exist (``has_field``)."""
    p = product_of(name)
    rule = p.required if p is not None else "none"
    if rule == "all":
        return np.ones(int(np.prod(grid)), dtype=bool)
    if rule != "has_field" or has_field is None or not {"detector", "field"} <= set(dims):
        return None
    size = dict(zip(dims, grid))
    if size["detector"] != has_field.shape[0] or size["field"] != has_field.shape[1]:
        return None
    shape = [g if d in ("detector", "field") else 1 for d, g in zip(dims, grid)]
    hf = has_field if list(dims).index("detector") < list(dims).index("field") else has_field.T
    return (np.ones(grid, dtype=bool) & hf.reshape(shape)).reshape(-1)


def optional_arrays(cmb_enabled: bool = True) -> tuple:
    """Arrays whose chunk may be absent for a finished unit: a product's optional arrays
    (``pred_sigma``: only methods with an uncertainty write it), and ``cosmo_params`` of a store
    without a CMB (all NaN, the fill value, which zarr never writes)."""
    out = tuple(a for _, p in PRODUCTS.items() for a in p.optional)
    return out if cmb_enabled else out + ("cosmo_params",)


# ----------------------------------------------------------------------------- codecs and the template
def package_versions() -> dict[str, str]:
    """Return the versions of cmbcube and of the packages that shape the stored data."""
    import importlib.metadata as md
    out = {"cmbcube": __version__}
    for name in ("numpy", "healpy", "ducc0", "pysm3", "camb", "zarr", "xarray", "dask", "distributed"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def codecs(storage: dict):
    """The compressors (and crc32c) of the recipe's ``storage`` section for float arrays."""
    import zarr.codecs as zc
    compressors = []
    if storage["compression"] == "zstd":
        compressors.append(zc.ZstdCodec(level=storage["level"]))
    elif storage["compression"] == "blosc-lz4":
        compressors.append(zc.BloscCodec(cname="lz4", clevel=storage["level"], shuffle="shuffle"))
    if storage["checksum"]:
        compressors.append(zc.Crc32cCodec())
    return compressors or None


def foreground_model_attrs(fg: dict) -> dict:
    """Return the store attributes that describe the foreground model ``fg``."""
    from cmbcube.science.foregrounds import model_attrs
    return model_attrs(fg)


def unit_chunks(spec: Array, shape: tuple) -> tuple:
    """The chunk (or shard, for map arrays) of one unit: 1 along the flag's axes, whole along the rest."""
    unit = ("run", "split", "sim") if spec.dims[:1] == ("run",) else ("split", "sim")
    lead = next((k for k, (a, b) in enumerate(zip(spec.dims, unit)) if a != b), min(len(spec.dims), len(unit)))
    return (1,) * lead + tuple(shape[lead:])


def map_chunks(shape: tuple) -> tuple:
    """The inner chunk of a map array: one map."""
    return (1,) * (len(shape) - 1) + (shape[-1],)


def template(recipe: Recipe):
    """The lazy xarray Dataset whose metadata defines an empty store, with encodings: the sim
    products of the table (``cmbcube simulate``'s, optional ones as the recipe's ``keep`` says)."""
    import dask.array as da
    import xarray as xr

    from cmbcube.science import cosmology, instrument
    from cmbcube.science.foregrounds import component_names
    from cmbcube.science.instrument import cmb_unit
    r = recipe.data
    nside = r["nside"]
    npix = 12 * nside * nside
    dets = recipe.detectors()
    fields = r["fields"]
    splits = recipe.splits
    nsim = max(max(splits.values()), 1)
    comps = component_names(r["foregrounds"]) if "components" in r["keep"] else []
    nell = 3 * r["nside"]          # theory spectra to the output band limit (the CMB is band-limited there)
    compressors = codecs(r["storage"])
    size = {"split": len(SPLITS), "sim": nsim, "detector": len(dets), "field": len(fields), "pixel": npix,
            "component": len(comps), "param": len(cosmology.PARAMS), "spectrum": len(cosmology.SPECTRA),
            "ell": nell}

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
    extra = {"cmb": {"units": cmb_unit(r["units"]), "beam_fwhm_arcmin": float(r["cmb"]["target_beam_arcmin"])}}
    specs = {}
    for name, product in PRODUCTS.items():
        if product.flag != "sim_done" or (product.keep and product.keep not in r["keep"]):
            continue
        if name == "components" and not comps:
            continue
        specs.update(product.arrays)
    specs["sim_done"] = FLAGS["sim_done"]
    if "components" in specs:
        coords["component"] = ("component", np.array(comps, dtype=object))

    data, encoding = {}, {}
    for name, spec in specs.items():
        shape = tuple(size[d] for d in spec.dims)
        unit = unit_chunks(spec, shape)
        attrs = {"healpix_nside": nside, "healpix_order": "nested"} if spec.maps else {}
        attrs["long_name"] = spec.long_name
        if spec.units is not None:
            attrs["units"] = spec.units
        attrs.update(extra.get(name, {}))
        # one Dask chunk for the whole array: the template only carries metadata (it is written with
        # compute=False), and a chunk per sim would make a graph over millions of keys for big recipes
        data[name] = xr.Variable(spec.dims, da.empty(shape, dtype=np.dtype(spec.dtype), chunks=shape), attrs)
        if spec.maps:
            encoding[name] = {"chunks": map_chunks(shape), "shards": unit, "compressors": compressors,
                              "fill_value": spec.fill}
        else:
            encoding[name] = {"chunks": unit, "compressors": compressors, "fill_value": spec.fill}
    ds = xr.Dataset(data, coords=coords)
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
        # Stokes Q/U with respect to (e_theta, e_phi): HEALPix's convention (FITS POLCCONV = COSMO); IAU has -U
        "polarization_convention": "COSMO",
        "cmb_unit": cmb_unit(r["units"]),
        "units_choice": r["units"],
        "pixel_window_applied": bool(r["instrument"]["pixel_window"]),
        "seed": r["seed"],
        **foreground_model_attrs(r["foregrounds"]),
    }
    return ds, encoding
