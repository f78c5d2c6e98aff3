"""The recipe schema: every field, its type, default and check, and the checks themselves.

``SCHEMA`` mirrors a recipe's YAML: a mapping of sections whose leaves are ``F`` (types, default,
choices, a check ``check(path, value)`` raising RecipeError that names the dotted path and what is
allowed). ``validate_section`` applies a section; ``cmbcube.recipe.validate`` adds the rules between
fields. Fields whose allowed values come from a registry have one check function each
(``_foreground_components``, ``_ilc_methods``, ``_networks``). Nothing here imports torch, dask or
pysm3 at import time.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cmbcube.errors import InputError
from cmbcube.science import instrument

SPLITS = ("train", "valid", "test")
TRUTH_PRODUCTS = ("cmb", "components", "noise")


class RecipeError(InputError):
    """A recipe field is missing, mistyped or out of range; the message names it."""


def _bounded_repr():
    import reprlib
    r = reprlib.Repr()
    r.maxlevel, r.maxstring, r.maxother, r.maxlong = 3, 120, 120, 60
    r.maxlist = r.maxtuple = r.maxset = r.maxfrozenset = r.maxdict = r.maxdeque = r.maxarray = 8
    return r


_REPR = _bounded_repr()
SHOWN_MAX = 200                  # characters of a value echoed in an error message


def shown(value, limit: int = SHOWN_MAX) -> str:
    """``repr(value)`` for an error message, at most ``limit`` characters however large or deeply nested
    the value is (a YAML alias bomb's repr is exponential; reprlib stops at a few levels and items)."""
    try:
        text = _REPR.repr(value)
    except ValueError:               # an integer past Python's digit limit for str()
        text = f"<an integer of {value.bit_length()} bits>" if isinstance(value, int) else "<unprintable value>"
    return text if len(text) <= limit else text[:limit - 4] + " ..."


def shown_key(key, limit: int = 80) -> str:
    """A mapping key read from a recipe, for a dotted field path in a message (bounded)."""
    text = key if isinstance(key, str) else shown(key, limit)
    return text if len(text) <= limit else text[:limit - 4] + " ..."


@dataclasses.dataclass
class F:
    """One recipe field: expected type(s), default (or a function returning it) and an optional check."""
    types: tuple
    default: Any
    choices: tuple | None = None
    check: Callable[[str, Any], None] | None = None
    nullable: bool = False
    doc: str = ""


def _power_of_two(path, value):
    if value < 1 or value & (value - 1) or value > 8192:
        raise RecipeError(f"{path}: {shown(value)} is not allowed; use a power of two between 1 and 8192")


def _non_negative(path, value):
    if value < 0:
        raise RecipeError(f"{path}: {shown(value)} is negative; use a number >= 0")


MAX_BEAM_ARCMIN = 600.0        # 10 degrees: wider than any CMB instrument's beam


def _between(lo, hi, lo_open: bool = False):
    """A check that the value is finite and in [lo, hi] (or (lo, hi] when ``lo_open``): NaN and infinities
    fail every comparison, so they are refused with the range in the message."""
    def check(path, value):
        inside = (lo < value if lo_open else lo <= value) and value <= hi
        if not inside:
            what = "not a finite number" if value != value or value in (float("inf"), float("-inf")) else \
                "out of range"
            raise RecipeError(f"{path}: {shown(value)} is {what}; use a number from {lo}"
                              f"{' (excluded)' if lo_open else ''} "
                              f"to {hi}")
    return check


def _positive(path, value):
    if value <= 0:
        raise RecipeError(f"{path}: {shown(value)} must be > 0")


def _list_of(choices, unique=True, min_len=0):
    def check(path, value):
        for i, item in enumerate(value):
            if item not in choices:
                raise RecipeError(f"{path}[{i}]: {shown(item)} is not allowed; allowed values: "
                                  f"{', '.join(map(str, choices))}")
        if unique and len(set(value)) != len(value):
            raise RecipeError(f"{path}: repeated entries in {shown(value)}")
        if len(value) < min_len:
            raise RecipeError(f"{path}: needs at least {min_len} entr{'y' if min_len == 1 else 'ies'}")
    return check


def _splits(path, value):
    for key, count in value.items():
        if key not in SPLITS:
            raise RecipeError(f"{path}.{shown_key(key)}: unknown split; allowed: {', '.join(SPLITS)}")
        if isinstance(count, bool) or not isinstance(count, int):
            raise RecipeError(f"{path}.{shown_key(key)}: expected an integer sim count, got {shown(count)}")
        _non_negative(f"{path}.{key}", count)
    if not value or sum(value.values()) == 0:
        raise RecipeError(f"{path}: at least one split needs sims, e.g. {{train: 16, valid: 4, test: 4}}")


def _beam_overrides(path, value):
    for key, fwhm in value.items():
        if key not in instrument.FREQS:
            raise RecipeError(f"{path}.{shown_key(key)}: unknown detector; allowed: "
                              f"{', '.join(map(str, instrument.FREQS))}")
        if isinstance(fwhm, bool) or not isinstance(fwhm, (int, float)) or not 0 <= fwhm <= MAX_BEAM_ARCMIN:
            raise RecipeError(f"{path}.{key}: beam FWHM must be a finite number of arcmin from 0 to "
                              f"{MAX_BEAM_ARCMIN:g}, got {shown(fwhm)}")


def _pysm_presets(path, value):
    known = known_pysm_presets()
    for i, item in enumerate(value):
        if item not in known:
            raise RecipeError(f"{path}[{i}]: unknown pysm3 preset {shown(item)}; allowed: {', '.join(known)}")


# Fields whose allowed values come from a registry (one function each; a registry is imported inside
# its function so that importing the recipe stays cheap).

def _default_sky() -> list[str]:
    """The default foregrounds.components: the built-in components (foregrounds.DEFAULT_SKY)."""
    from cmbcube.science.foregrounds import DEFAULT_SKY
    return list(DEFAULT_SKY)


def _foreground_components(path, value):
    """foregrounds.components: names in cmbcube.science.foregrounds.COMPONENTS."""
    from cmbcube.science.foregrounds import COMPONENTS
    _list_of(COMPONENTS.names())(path, value)


def _ilc_methods(path, value):
    """pipeline.ilc: names in cmbcube.science.ilc.METHODS."""
    from cmbcube.science.ilc import METHODS
    _list_of(METHODS.names())(path, value)


def _default_networks() -> list[str]:
    from cmbcube.networks import DEFAULT
    return [DEFAULT]


def _networks(path, value):
    """pipeline.models: names in cmbcube.networks.NETWORKS (the names load without torch)."""
    from cmbcube.networks import NETWORKS
    _list_of(NETWORKS.names())(path, value)


CLUSTER_KINDS = ("local", "address", "slurm", "synchronous")


def _memory_size(path, value):
    from dask.utils import parse_bytes
    try:
        nbytes = parse_bytes(value)
    except (ValueError, TypeError):
        nbytes = 0
    if nbytes <= 0:
        raise RecipeError(f"{path}: {shown(value)} is not a memory size; use e.g. 4GB, 500MiB, 64GB")


def _memory_or_auto(path, value):
    if value != "auto" and not (isinstance(value, int) and value == 0):
        _memory_size(path, value)


def _walltime(path, value):
    import re
    if not re.fullmatch(r"\d+(:\d{2}){0,2}|\d+-\d+(:\d{2}){0,2}", value):
        raise RecipeError(f"{path}: {shown(value)} is not a SLURM time; use MINUTES, HH:MM:SS or DAYS-HH:MM:SS, "
                          "e.g. 02:00:00")


def _strings(path, value):
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise RecipeError(f"{path}[{i}]: expected a string, got {shown(item)}")


def _scheduler_address(path, value):
    if "://" not in value and ":" not in value:
        raise RecipeError(f"{path}: {shown(value)} is not a scheduler address; use tcp://host:port")


def known_pysm_presets() -> list[str]:
    import configparser
    import importlib.util
    # found without importing pysm3 (~2 s of numba, healpy, scipy): recipe checks stay fast
    spec = importlib.util.find_spec("pysm3")
    text = (Path(list(spec.submodule_search_locations)[0]) / "data" / "presets.cfg").read_text()
    parser = configparser.ConfigParser(strict=False)
    try:
        parser.read_string(text)
        return [s for s in parser.sections() if "." not in s]
    except configparser.Error:
        import re
        return re.findall(r"^\[([a-z]+[0-9]+)\]", text, flags=re.M)


SCHEMA: dict = {
    "name": F((str,), None, nullable=True, doc="dataset name (required)"),
    "description": F((str,), "", doc="free text"),
    "seed": F((int,), 0, check=_between(0, 2 ** 63 - 1), doc="master seed"),
    "nside": F((int,), 32, check=_power_of_two, doc="output HEALPix nside"),
    "sky_nside": F((int,), None, nullable=True, check=_power_of_two,
                   doc="nside of the sky model (default 2 x nside; must be >= 2 x nside)"),
    "splits": F((dict,), {"train": 16, "valid": 4, "test": 4}, check=_splits),
    "detectors": F((list,), list(instrument.FREQS), check=_list_of(instrument.FREQS, min_len=1)),
    "fields": F((list,), list(instrument.FIELDS), check=_list_of(instrument.FIELDS, min_len=1)),
    "units": F((str,), "uK_CMB", choices=("uK_CMB", "K_CMB", "native"),
               doc="uK_CMB everywhere (CMB-ML), K_CMB everywhere, or native (K_CMB to 353 GHz, MJy/sr at 545/857)"),
    "instrument": {
        "beams": F((str,), "cmb-ml", choices=tuple(instrument.BEAM_PRESETS)),
        "beam_overrides": F((dict,), {}, check=_beam_overrides, doc="{freq: FWHM arcmin}"),
        "pixel_window": F((bool,), True, doc="multiply sky maps by the output pixel window"),
        "map2alm_iterations": F((int,), 1, check=_between(0, 20),
                                doc="Jacobi iterations of the sky-model analysis (0 is not accurate enough)"),
        "analysis_lmax": F((str,), "pysm3", choices=("pysm3", "sky"),
                           doc="band limit of the sky-model analysis: pysm3's 1.5 x sky_nside, or 3 x sky_nside - 1"),
        "bandpass": F((str,), "tophat", choices=instrument.BANDPASS_CHOICES,
                      doc="tophat (0.2 LFI / 0.33 HFI fractional width) or delta (centre frequency, as CMB-ML)"),
    },
    "cmb": {
        "enabled": F((bool,), True),
        "prior": F((str,), "planck2018", choices=("planck2018", "wmap9", "chain", "fixed")),
        "prior_width": F((int, float), 1.0, check=_between(0, 10),
                         doc="multiplies the published 1-sigma widths"),
        "chain_file": F((str,), None, nullable=True),
        "lensing": F((str,), "corrected", choices=("corrected", "direct"),
                     doc="lensed spectra accurate in BB: corrected (fast CAMB per sim plus a correction "
                         "computed once from CAMB at lmax 3000) or direct (CAMB at lmax 3000 per sim, +~2.5 s)"),
        "lens_potential_accuracy": F((int,), 1, check=_between(1, 8),
                                     doc="CAMB's lens_potential_accuracy of the reference run (1-8)"),
        "target_beam_arcmin": F((int, float), 0.0, check=_between(0, MAX_BEAM_ARCMIN),
                                doc="beam of the CMB truth map (0: no beam, CMB-ML's target)"),
    },
    "foregrounds": {
        "model": F((str,), "synthetic", choices=("synthetic", "synthetic-gaussian", "pysm3", "none"),
                   doc="synthetic: the filamentary Galaxy (default); synthetic-gaussian: the earlier "
                       "Gaussian-template Galaxy; pysm3: presets from local templates; none"),
        "components": F((list,), _default_sky, check=_foreground_components,
                        doc="synthetic components (foregrounds.COMPONENTS); default: the built-in ones"),
        "presets": F((list,), ["d9", "s4", "f1", "a1", "cib1", "ksz1", "tsz1", "rg1"], check=_pysm_presets),
        "data_dir": F((str,), None, nullable=True, doc="directory of pysm3 templates (else $PYSM_LOCAL_DATA)"),
        "vary": F((str,), "per_sim", choices=("per_sim", "fixed")),
        "shared_structure": F((int, float), 1.0, check=_between(0, 1),
                              doc="synthetic skies: how much of the Galaxy's large-scale geometry (disk, ordered "
                                  "magnetic field, Loop I) sims share: 1 = the real Galaxy's place in every sim, "
                                  "0 = a randomly oriented Galaxy per sim (independent skies)"),
    },
    "noise": {
        "model": F((str,), "white", choices=("white", "variance_maps", "none")),
        "scale": F((int, float), 1.0, check=_between(0, 1000), doc="multiplies the noise rms (0-1000)"),
        "hits": F((str,), "scan", choices=("scan", "uniform")),
        "variance_dir": F((str,), None, nullable=True,
                          doc="directory of {freq}.fits variance maps (II, QQ, UU in native unit^2)"),
    },
    "keep": F((list,), ["cmb"], check=_list_of(TRUTH_PRODUCTS), doc="truth products to store"),
    "storage": {
        "compression": F((str,), "none", choices=("none", "zstd", "blosc-lz4")),
        "level": F((int,), 3, check=_non_negative, doc="compression level: zstd 0-22, blosc-lz4 0-9"),
        "checksum": F((bool,), True, doc="crc32c on every chunk (detects corruption)"),
    },
    "pipeline": {
        "ilc": F((list,), ["nilc", "hilc"], check=_ilc_methods, doc="ILC methods `cmbcube run` applies"),
        "models": F((list,), _default_networks, check=_networks, doc="networks `cmbcube run` trains"),
        "epochs": F((int,), 30, check=_between(1, 100000)),
        "f_sky": F((int, float), 0.8, check=_between(0, 1, lo_open=True), doc="analysis mask sky fraction (0-1]"),
        "splits": F((list,), ["test"], check=_list_of(SPLITS, min_len=1), doc="splits predicted and scored"),
    },
    "cluster": {
        "kind": F((str,), "local", choices=CLUSTER_KINDS,
                  doc="local: a cluster on this machine; address: an existing scheduler; slurm: dask-jobqueue; "
                      "synchronous: no Dask, one process"),
        "workers": F((int,), 2, check=_positive, doc="local: worker processes"),
        "threads_per_worker": F((int,), 1, check=_positive,
                                doc="local and slurm: threads per worker (numpy/numba pools are pinned to it)"),
        "memory_limit": F((str, int), "auto", check=_memory_or_auto, doc="local: per worker, e.g. 4GB, or auto"),
        "address": F((str,), None, nullable=True, check=_scheduler_address, doc="address: tcp://host:port"),
        "scheduler_file": F((str,), None, nullable=True,
                            doc="address: file written by dask scheduler --scheduler-file"),
        "slurm": {
            "queue": F((str,), None, nullable=True, doc="partition (#SBATCH -p)"),
            "account": F((str,), None, nullable=True, doc="account charged (#SBATCH -A)"),
            "cores": F((int,), 8, check=_positive, doc="cores per job (--cpus-per-task)"),
            "processes": F((int,), None, nullable=True, check=_positive,
                           doc="worker processes per job (default: cores / threads_per_worker)"),
            "memory": F((str,), "32GB", check=_memory_size, doc="memory per job (--mem), shared by its workers"),
            "walltime": F((str,), "01:00:00", check=_walltime, doc="per job (-t), e.g. 02:00:00 or 1-00:00:00"),
            "jobs": F((int,), 1, check=_positive, doc="jobs submitted (sbatch) when the stage starts"),
            "job_extra_directives": F((list,), [], check=_strings,
                                      doc="extra #SBATCH options, e.g. [--qos=normal, --exclusive]"),
            "job_script_prologue": F((list,), [], check=_strings,
                                     doc="shell lines before the worker starts (module load, source venv)"),
            "job_name": F((str,), "cmbcube"),
            "local_directory": F((str,), None, nullable=True, doc="node-local scratch for the workers"),
            "log_directory": F((str,), None, nullable=True, doc="where SLURM writes the job logs"),
            "interface": F((str,), None, nullable=True, doc="network interface of scheduler and workers, e.g. ib0"),
            "python": F((str,), None, nullable=True, doc="python on the compute nodes (default: this one)"),
        },
    },
}


def type_name(types):
    return " or ".join({int: "integer", float: "number", str: "string", bool: "true/false",
                        list: "list", dict: "mapping"}[t] for t in types)


def validate_section(raw: dict, schema: dict, prefix: str) -> dict:
    """``raw`` checked against ``schema`` (SCHEMA or one of its sections) with the defaults filled in;
    errors name the field as ``prefix.key``."""
    if not isinstance(raw, dict):
        raise RecipeError(f"{prefix or 'recipe'}: expected a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(schema), key=str)      # keys of mixed types (1, foo) sort as text
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise RecipeError(f"{where}{shown_key(unknown[0])}: unknown key; allowed keys"
                          f"{' in ' + prefix if prefix else ''}: "
                          f"{', '.join(schema)}")
    out = {}
    for key, spec in schema.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(spec, dict):
            out[key] = validate_section(raw.get(key) or {}, spec, path)
            continue
        value = raw[key] if key in raw else spec.default() if callable(spec.default) else copy.deepcopy(spec.default)
        if value is None:
            if spec.nullable:
                out[key] = None
                continue
            raise RecipeError(f"{path}: required; expected {type_name(spec.types)}")
        ok = isinstance(value, spec.types) and not (isinstance(value, bool) and bool not in spec.types)
        if not ok:
            raise RecipeError(f"{path}: expected {type_name(spec.types)}, got {shown(value)}")
        if spec.choices is not None and value not in spec.choices:
            raise RecipeError(f"{path}: {shown(value)} is not allowed; allowed values: {', '.join(spec.choices)}")
        if spec.check is not None:
            spec.check(path, value)          # the range checks refuse NaN and infinities, naming the range
        if isinstance(value, float) and not math.isfinite(value):
            raise RecipeError(f"{path}: {shown(value)} is not a finite number")
        out[key] = value
    return out


def check_cluster(c: dict, prefix: str) -> None:
    """The rules between the fields of a validated ``cluster`` section."""
    kind = c["kind"]
    if kind == "address" and not (c["address"] or c["scheduler_file"]):
        raise RecipeError(f"{prefix}.address: required when {prefix}.kind is 'address' (or set "
                          f"{prefix}.scheduler_file)")
    if kind != "address":
        for key in ("address", "scheduler_file"):
            if c[key]:
                raise RecipeError(f"{prefix}.{key}: only used when {prefix}.kind is 'address' (kind is {kind!r}); "
                                  f"set kind: address or remove {key}")
    sl = c["slurm"]
    if kind == "slurm":
        threads = c["threads_per_worker"]
        if sl["processes"] is None and threads > sl["cores"]:
            raise RecipeError(f"{prefix}.threads_per_worker: {threads} exceeds {prefix}.slurm.cores "
                              f"({sl['cores']}); allowed: 1 to {sl['cores']}")
        if sl["processes"] is not None and sl["processes"] > sl["cores"]:
            raise RecipeError(f"{prefix}.slurm.processes: {sl['processes']} exceeds {prefix}.slurm.cores "
                              f"({sl['cores']}); allowed: 1 to {sl['cores']}")
