"""CMB-ML interop: read a CMB-ML dataset tree into a cube, and write a cube back as one.

CMB-ML keeps one healpy FITS file per map (RING ordering, units in the TUNITn
header cards) in this tree::

    <root>/Simulation/{Train,Valid,Test}/sim{NNNN}/
        obs_{freq}_map.fits   observed sky of detector {freq} GHz: I (545, 857) or I, Q, U columns
        cmb_map_fid.fits      CMB truth (no beam)
        wmap_params.yaml      cosmological parameters, WMAP chain names (H0, omegabh2, omegach2,
                              ns002, tau, optionally a002 = 1e9 As, mnu, chain_idx)
        cmb_ps_fid.txt        CAMB's save_cmb_power_spectra text: '# L TT EE BB TE [PP PT PE]',
                              lensed D_ell = l(l+1) C_ell / 2 pi in uK_CMB^2

``wmap_params.yaml`` and ``cmb_ps_fid.txt`` may sit in the split folder instead
when one cosmology serves the whole split (CMB-ML's ``ps_fidu_fixed``).

Ingest builds a recipe that describes the tree (nside, splits, detectors,
fields, units, beams), creates the cube from it and runs one Dask task per sim
that reads the files (healpy, RING -> NESTED, units converted to the cube's)
and writes them through the cube layer, data first and done-flag last; a rerun
resumes.  Export writes the same tree from a cube's finished sims.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import re
import time
import uuid
from pathlib import Path

import numpy as np

from cmbcube import __version__, cube
from cmbcube.science import cosmology, instrument
from cmbcube.recipe import SPLITS, validate
from cmbcube.errors import InputError, MissingFileError

log = logging.getLogger("cmbcube")

SPLIT_DIRS = {"train": "Train", "valid": "Valid", "test": "Test"}
SIM_DIGITS = 4
CMB_FILE = "cmb_map_fid.fits"
PARAMS_FILE = "wmap_params.yaml"
SPECTRA_FILE = "cmb_ps_fid.txt"
OBS_RE = re.compile(r"^obs_(\d+)_map\.fits$")
SIM_RE = re.compile(r"^sim(\d+)$")

# FITS unit strings (TUNITn) -> the names cmbcube converts between; CMB-ML writes astropy's
# spelling (uK_CMB, K_CMB, MJy/sr) and reads Planck's (Kcmb, MJY/SR) too.
UNIT_ALIASES = {"uk_cmb": "uK_CMB", "ukcmb": "uK_CMB", "uk_cmb_th": "uK_CMB",
                "k_cmb": "K_CMB", "kcmb": "K_CMB",
                "mjy/sr": "MJy/sr", "mjy/sr^1": "MJy/sr", "mjysr-1": "MJy/sr", "mjy.sr-1": "MJy/sr",
                "uk_rj": "uK_RJ", "k_rj": "K_RJ"}
CMB_UNITS = ("uK_CMB", "K_CMB")
EXPORT_UNITS = ("uK_CMB", "K_CMB", "store")

# cube parameter -> names accepted in wmap_params.yaml (WMAP chain names first, then CAMB's)
PARAM_NAMES = {"H0": ("H0",), "ombh2": ("omegabh2", "ombh2"), "omch2": ("omegach2", "omch2"),
               "ns": ("ns002", "ns"), "tau": ("tau",)}
AMPLITUDE_NAMES = ("a002", "As", "logA")      # 1e9 As (WMAP chains), As, ln(1e10 As)
EXPORT_PARAM_NAMES = {"H0": "H0", "ombh2": "omegabh2", "omch2": "omegach2", "ns": "ns002", "tau": "tau"}


class CMBMLError(InputError):
    """The CMB-ML tree (or an export request) is not usable as given; the message says why."""


def sim_name(sim: int) -> str:
    return f"sim{sim:0{SIM_DIGITS}d}"


# ----------------------------------------------------------------------------- FITS headers
def _card_value(text: str):
    text = text.strip()
    if text.startswith("'"):
        out, i = [], 1
        while i < len(text):
            if text[i] == "'":
                if text[i + 1:i + 2] == "'":
                    out.append("'")
                    i += 2
                    continue
                break
            out.append(text[i])
            i += 1
        return "".join(out).rstrip()
    value = text.split("/", 1)[0].strip()
    if value in ("T", "F"):
        return value == "T"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def read_header(path) -> dict:
    """Header keywords of a healpy map file: the primary header updated by the first extension's.

    A small reader of the 80-character cards (astropy takes ~50x longer per file, which
    counts when a plan checks every file of a 1450-sim tree before anything is written).
    """
    merged: dict = {}
    with open(path, "rb") as f:
        for hdu in range(2):
            cards: dict = {}
            while True:
                block = f.read(2880)
                if len(block) < 2880:
                    raise CMBMLError(f"{path}: not a FITS file (header ends early)")
                if hdu == 0 and not cards and not block.startswith(b"SIMPLE  ="):
                    raise CMBMLError(f"{path}: not a FITS file (no SIMPLE card)")
                end = False
                for i in range(0, 2880, 80):
                    card = block[i:i + 80].decode("ascii", "replace")
                    key = card[:8].strip()
                    if key == "END":
                        end = True
                        break
                    if card[8:10] == "= " and key not in cards:
                        cards[key] = _card_value(card[10:])
                if end:
                    break
            merged.update(cards)
            if hdu == 0:
                naxis = [cards.get(f"NAXIS{k}", 0) for k in range(1, int(cards.get("NAXIS", 0)) + 1)]
                if naxis and int(np.prod(naxis)) > 0:
                    raise CMBMLError(f"{path}: the primary HDU holds an image; a healpy map is a binary table")
    return merged


def _field_of(name: str, index: int) -> str:
    name = str(name).strip().upper()
    if name.startswith(("I_", "T_", "TEMPERATURE", "I")) or name in ("T", "I"):
        return "I"
    if name.startswith("Q"):
        return "Q"
    if name.startswith("U"):
        return "U"
    return "IQU"[index] if index < 3 else f"column{index + 1}"


@dataclasses.dataclass
class MapInfo:
    nside: int
    ordering: str
    fields: list            # field of each column, in file order
    unit: str


def map_info(path) -> MapInfo:
    """nside, ordering, the Stokes field of each column and the unit of a map file (errors name the file)."""
    h = read_header(path)
    if "NSIDE" not in h:
        raise CMBMLError(f"{path}: no NSIDE in the header; not a HEALPix map")
    ordering = str(h.get("ORDERING", "")).upper()
    if ordering not in ("RING", "NESTED"):
        raise CMBMLError(f"{path}: ORDERING {h.get('ORDERING')!r}; allowed: RING, NESTED")
    ncol = int(h.get("TFIELDS", 0))
    if ncol < 1:
        raise CMBMLError(f"{path}: no columns (TFIELDS)")
    fields = [_field_of(h.get(f"TTYPE{k}", ""), k - 1) for k in range(1, ncol + 1)]
    units = set()
    for k in range(1, ncol + 1):
        raw = h.get(f"TUNIT{k}")
        if raw is None or str(raw).strip() == "":
            raise CMBMLError(f"{path}: column {k} has no unit (TUNIT{k}); CMB-ML writes the unit of every "
                             f"map; allowed units: uK_CMB, K_CMB, MJy/sr, uK_RJ, K_RJ")
        unit = UNIT_ALIASES.get(str(raw).strip().replace(" ", "").lower())
        if unit is None:
            raise CMBMLError(f"{path}: unknown unit {raw!r} (TUNIT{k}); allowed: uK_CMB, K_CMB (Kcmb), "
                             "MJy/sr, uK_RJ, K_RJ")
        units.add(unit)
    if len(units) > 1:
        raise CMBMLError(f"{path}: columns in different units {sorted(units)}; one unit per file is expected")
    return MapInfo(int(h["NSIDE"]), ordering, fields, units.pop())


# ----------------------------------------------------------------------------- params and spectra
def read_params(path) -> tuple[np.ndarray, list]:
    """(cube parameter vector in cosmology.PARAMS order, NaN where absent; keys not used)."""
    import yaml
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as err:
        raise CMBMLError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise CMBMLError(f"{path}: expected a mapping of parameter names to values")
    used = set()
    out = {}
    for name, keys in PARAM_NAMES.items():
        for key in keys:
            if key in raw:
                out[name] = float(raw[key])
                used.add(key)
                break
    if "a002" in raw:
        out["As"] = float(raw["a002"]) * 1e-9
        used.add("a002")
    elif "As" in raw:
        out["As"] = float(raw["As"])
        used.add("As")
    elif "logA" in raw:
        out["As"] = float(np.exp(float(raw["logA"])) * 1e-10)
        used.add("logA")
    vector = np.array([out.get(p, np.nan) for p in cosmology.PARAMS], dtype=np.float64)
    return vector, sorted(set(map(str, raw)) - used)


def write_params(path, params: np.ndarray) -> None:
    import yaml
    values = dict(zip(cosmology.PARAMS, map(float, params)))
    out = {EXPORT_PARAM_NAMES[p]: values[p] for p in EXPORT_PARAM_NAMES if np.isfinite(values[p])}
    if np.isfinite(values["As"]):
        out["a002"] = values["As"] * 1e9
    _atomic_write_text(path, yaml.safe_dump(out, sort_keys=False))


def read_spectra(path) -> np.ndarray:
    """(4, lmax + 1) lensed C_ell (TT, EE, BB, TE) in uK_CMB^2 from a CAMB-format D_ell text file."""
    path = Path(path)
    lines = path.read_text().splitlines()
    header = None
    for line in lines:
        if line.strip().startswith("#"):
            header = line.strip().lstrip("#").split()
            break
    try:
        data = np.loadtxt(path, comments="#", ndmin=2)
    except ValueError as err:
        raise CMBMLError(f"{path}: not a table of numbers: {err}") from None
    if data.size == 0:
        raise CMBMLError(f"{path}: no rows")
    names = header if header and len(header) == data.shape[1] else ["L", "TT", "EE", "BB", "TE", "PP", "PT", "PE"][
        :data.shape[1]]
    missing = [c for c in ("L", "TT") if c not in names]
    if missing:
        raise CMBMLError(f"{path}: columns {missing} missing; header has {names} (CAMB writes L TT EE BB TE ...)")
    ell = data[:, names.index("L")].astype(int)
    if (ell < 0).any():
        raise CMBMLError(f"{path}: negative multipoles")
    cls = np.full((4, int(ell.max()) + 1), np.nan)
    norm = np.zeros(ell.shape)
    good = ell >= 1
    norm[good] = 2 * np.pi / (ell[good] * (ell[good] + 1.0))
    for k, name in enumerate(cosmology.SPECTRA):
        if name in names:
            cls[k, ell] = data[:, names.index(name)] * norm
    cls[:, :2] = np.where(np.isnan(cls[:, :2]), np.nan, 0.0)       # monopole and dipole carry nothing
    return cls


def write_spectra(path, cls: np.ndarray) -> None:
    """CAMB's layout: '# L TT EE BB TE' then one row per multipole from 0, D_ell in uK_CMB^2."""
    finite = np.all(np.isfinite(cls), axis=0)
    n = int(np.argmin(finite)) if not finite.all() else cls.shape[1]
    ell = np.arange(n)
    dl = cls[:, :n] * ell * (ell + 1.0) / (2 * np.pi)
    rows = ["# L " + " ".join(f"{name:13s}" for name in cosmology.SPECTRA)]
    rows += [f"{l:4d} " + " ".join(f"{v:12.7e}" for v in dl[:, l]) for l in ell]
    _atomic_write_text(path, "\n".join(rows) + "\n")


def _atomic_write_text(path, text: str) -> None:
    path = Path(path)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.partial"
    tmp.write_text(text)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- the plan
@dataclasses.dataclass
class Plan:
    """What a CMB-ML tree holds, checked before anything is written."""
    root: str                           # the Simulation folder
    counts: dict                        # split -> number of sims
    split_dirs: dict                    # split -> its folder
    digits: dict                        # split -> zero padding of its sim folders (CMB-ML: 4)
    detectors: list                     # GHz
    fields: list                        # cube fields
    nside: int
    source_units: dict                  # "obs_143" / "cmb" -> unit found in the first sim's files
    beams_from_headers: dict            # freq -> FWHM arcmin, where the files say (FWHM card)
    cmb_beam_arcmin: float
    pixel_window: bool
    ignored_param_keys: list
    n_files: int

    def sim_dir(self, split: str, sim: int) -> Path:
        return Path(self.split_dirs[split]) / f"sim{sim:0{self.digits[split]}d}"

    def side_file(self, split: str, sim: int, name: str) -> Path:
        """wmap_params.yaml / cmb_ps_fid.txt of a sim: its own, else the split's."""
        own = self.sim_dir(split, sim) / name
        return own if own.is_file() else Path(self.split_dirs[split]) / name


def _find_root(source_dir: Path) -> Path:
    if not source_dir.is_dir():
        raise MissingFileError(f"{source_dir}: no such directory (expected a CMB-ML dataset folder holding "
                                "Simulation/{Train,Valid,Test}/sim0000/...)")
    if (source_dir / "Simulation").is_dir():
        return source_dir / "Simulation"
    names = {p.name.lower() for p in source_dir.iterdir() if p.is_dir()}
    if names & set(SPLIT_DIRS):
        return source_dir
    raise CMBMLError(f"{source_dir}: no Simulation folder; a CMB-ML tree is "
                     "DIR/Simulation/{Train,Valid,Test}/sim0000/obs_{freq}_map.fits, cmb_map_fid.fits, "
                     "wmap_params.yaml, cmb_ps_fid.txt")


def scan(source_dir) -> Plan:
    """Check a CMB-ML tree file by file (names, headers) and describe it; nothing is written.

    Raises CMBMLError / FileNotFoundError listing every problem found (up to 20).
    """
    root = _find_root(Path(source_dir).resolve())
    problems: list[str] = []
    split_paths = {}
    for child in sorted(root.iterdir()):
        if not child.is_dir():
            continue
        split = child.name.lower()
        if split not in SPLIT_DIRS:
            problems.append(f"{child}: unknown split folder; allowed: {', '.join(SPLIT_DIRS.values())}")
            continue
        if split in split_paths:
            problems.append(f"{child}: split {split!r} appears twice ({split_paths[split].name}, {child.name})")
            continue
        split_paths[split] = child
    if problems:
        raise CMBMLError("\n  ".join(["the CMB-ML tree has problems:"] + problems[:20]))
    sim_dirs, counts, digits = {}, {}, {}
    for split in SPLITS:
        if split not in split_paths:
            counts[split], sim_dirs[split], digits[split] = 0, [], SIM_DIGITS
            continue
        found = {}
        for child in sorted(split_paths[split].iterdir()):
            if not child.is_dir():
                continue
            m = SIM_RE.match(child.name)
            if not m:
                problems.append(f"{child}: unexpected folder; sim folders are named sim0000, sim0001, ...")
                continue
            number = int(m.group(1))
            if number in found:
                problems.append(f"{child}: sim {number} appears twice ({found[number].name}, {child.name})")
            found[number] = child
        missing = sorted(set(range(len(found))) - set(found))
        if missing:
            problems.append(f"{split_paths[split]}: sims must be numbered 0..N-1; missing "
                            f"{', '.join(sim_name(m) for m in missing[:10])}")
            continue
        counts[split] = len(found)
        sim_dirs[split] = [found[i] for i in range(len(found))]
        if not found:
            continue                    # an empty split folder: no sims of that split
        widths = {len(d.name) - 3 for d in sim_dirs[split]}
        if not all(d.name == f"sim{i:0{min(widths)}d}" for i, d in enumerate(sim_dirs[split])):
            problems.append(f"{split_paths[split]}: sim folders mix zero paddings "
                            f"({', '.join(sorted(d.name for d in sim_dirs[split])[:4])}, ...); use one, e.g. sim0000")
            continue
        digits[split] = min(widths)
        for name in (PARAMS_FILE, SPECTRA_FILE):
            shared = split_paths[split] / name
            for d in sim_dirs[split]:
                if not (d / name).is_file() and not shared.is_file():
                    problems.append(f"{d / name}: missing (nor is there a {name} for the whole split in "
                                    f"{split_paths[split]})")
    if problems:
        raise CMBMLError("\n  ".join(["the CMB-ML tree has problems:"] + problems[:20]
                                     + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])))
    if not sum(counts.values()):
        raise CMBMLError(f"{root}: no sims (expected Train/sim0000, ...)")

    # file names: every sim holds the same detectors and the CMB map
    first_split = next(s for s in SPLITS if counts[s])
    first = sim_dirs[first_split][0]
    detectors = sorted(int(OBS_RE.match(p.name).group(1)) for p in first.iterdir() if OBS_RE.match(p.name))
    if not detectors:
        raise CMBMLError(f"{first}: no obs_{{freq}}_map.fits files")
    unknown = [d for d in detectors if d not in instrument.FREQS]
    if unknown:
        raise CMBMLError(f"{first}: obs maps of unknown detectors {unknown}; allowed: "
                         f"{', '.join(map(str, instrument.FREQS))} GHz")
    expected = {f"obs_{d}_map.fits" for d in detectors} | {CMB_FILE}
    for split in SPLITS:
        for d in sim_dirs[split]:
            present = {p.name for p in d.iterdir() if p.is_file()}
            for name in sorted(expected - present):
                problems.append(f"{d / name}: missing")
            extra = sorted(n for n in present if OBS_RE.match(n) and n not in expected)
            if extra:
                problems.append(f"{d}: {', '.join(extra)} not in {first} (every sim must hold the same detectors)")
    if problems:
        raise CMBMLError("\n  ".join(["the CMB-ML tree has problems:"] + problems[:20]
                                     + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])))

    # headers of every map: one nside, consistent fields, known units
    dets = [instrument.detector(d) for d in detectors]
    info0 = {d.freq: map_info(first / f"obs_{d.freq}_map.fits") for d in dets}
    cmb0 = map_info(first / CMB_FILE)
    nside = cmb0.nside
    pol_fields = [tuple(f for f in info0[d.freq].fields if f in instrument.FIELDS) for d in dets if d.polarised]
    if pol_fields and len(set(pol_fields)) > 1:
        raise CMBMLError(f"{first}: the polarised detectors' maps hold different fields: "
                         + ", ".join(f"{d.freq} GHz {''.join(info0[d.freq].fields)}" for d in dets if d.polarised))
    obs_fields = set(pol_fields[0]) if pol_fields else {"I"}
    if "I" not in obs_fields:
        raise CMBMLError(f"{first}: observed maps without an I column ({sorted(obs_fields)})")
    if not obs_fields <= set(cmb0.fields):
        raise CMBMLError(f"{first / CMB_FILE}: holds {''.join(cmb0.fields)} but the observed maps hold "
                         f"{''.join(f for f in instrument.FIELDS if f in obs_fields)}")
    if cmb0.unit not in CMB_UNITS:
        raise CMBMLError(f"{first / CMB_FILE}: unit {cmb0.unit}; a CMB map must be in uK_CMB or K_CMB")
    fields = [f for f in instrument.FIELDS if f in obs_fields]
    n_files = 0
    for split in SPLITS:
        for d in sim_dirs[split]:
            for name in [f"obs_{det.freq}_map.fits" for det in dets] + [CMB_FILE]:
                path = d / name
                n_files += 1
                try:
                    info = map_info(path)
                except CMBMLError as err:
                    problems.append(str(err))
                    continue
                if info.nside != nside:
                    problems.append(f"{path}: nside {info.nside}, but {first / CMB_FILE} has nside {nside} "
                                    "(every map of a dataset must share one nside)")
                det = next((x for x in dets if name == f"obs_{x.freq}_map.fits"), None)
                wanted = fields if (det is None or det.polarised) else ["I"]
                absent = [f for f in wanted if f not in info.fields]
                if absent:
                    problems.append(f"{path}: lacks field(s) {', '.join(absent)} (holds {''.join(info.fields)})")
                if name == CMB_FILE and info.unit not in CMB_UNITS:
                    problems.append(f"{path}: unit {info.unit}; a CMB map must be in uK_CMB or K_CMB")
                if len(problems) > 50:
                    break
    if problems:
        raise CMBMLError("\n  ".join(["the CMB-ML tree has problems:"] + problems[:20]
                                     + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])))
    headers = {d.freq: read_header(first / f"obs_{d.freq}_map.fits") for d in dets}
    beams = {f: float(h["FWHM"]) for f, h in headers.items() if isinstance(h.get("FWHM"), (int, float))}
    cmb_header = read_header(first / CMB_FILE)
    cmb_beam = float(cmb_header["FWHM"]) if isinstance(cmb_header.get("FWHM"), (int, float)) else 0.0
    pixwin = cmb_header.get("PIXWIN")
    plan = Plan(str(root), counts, {s: str(p) for s, p in split_paths.items()}, digits,
                detectors, fields, nside,
                {**{f"obs_{f}": info0[f].unit for f in detectors}, "cmb": cmb0.unit},
                beams, cmb_beam, bool(pixwin) if isinstance(pixwin, bool) else False, [],
                n_files + 2 * sum(counts.values()))
    _, plan.ignored_param_keys = read_params(plan.side_file(first_split, 0, PARAMS_FILE))
    return plan


def _choose_units(plan: Plan) -> str:
    obs = {f: plan.source_units[f"obs_{f}"] for f in plan.detectors}
    values = set(obs.values())
    if values == {"uK_CMB"}:
        return "uK_CMB"
    if values == {"K_CMB"}:
        return "K_CMB"
    native = {d.freq: d.native_unit for d in map(instrument.detector, plan.detectors)}
    if obs == native:
        return "native"
    return "uK_CMB"


def beam_sources(plan: Plan, beams: str = "cmb-ml") -> list[tuple[int, float, str]]:
    """(detector, FWHM arcmin, where it comes from) for each detector the store will record:
    the file's FWHM card, else the ``beams`` preset (CMB-ML's instrument table for ``cmb-ml``)."""
    preset = instrument.BEAM_PRESETS.get(beams)
    if preset is None:
        raise CMBMLError(f"beams {beams!r}: allowed: {', '.join(instrument.BEAM_PRESETS)}")
    out = []
    for f in plan.detectors:
        if f in plan.beams_from_headers:
            out.append((f, float(plan.beams_from_headers[f]), "FWHM card"))
        else:
            out.append((f, float(preset[f]), f"no FWHM card: {beams} preset"))
    return out


def recipe_for(plan: Plan, name: str | None = None, units: str | None = None, beams: str = "cmb-ml"):
    """The recipe describing an ingested tree (its hash ties the store to the tree's folder)."""
    import yaml
    units = units or _choose_units(plan)
    preset = instrument.BEAM_PRESETS.get(beams)
    if preset is None:
        raise CMBMLError(f"beams {beams!r}: allowed: {', '.join(instrument.BEAM_PRESETS)}")
    overrides = {f: w for f, w in plan.beams_from_headers.items() if w != preset[f]}
    raw = {
        "name": name or f"cmbml-{Path(plan.root).parent.name or 'dataset'}",
        "description": (f"ingested from the CMB-ML tree {plan.root}: CMB, foregrounds and noise come from its "
                        "files; the cmb, foregrounds and noise sections describe nothing that was simulated"),
        "seed": 0,
        "nside": plan.nside,
        "splits": dict(plan.counts),
        "detectors": list(plan.detectors),
        "fields": list(plan.fields),
        "units": units,
        # CMB-ML's datasets are made with delta bandpasses at the band centres (its cmb-ml_deltabandpass
        # table), and the files' unit conversions below are delta ones: recorded as such, so the ILC's
        # SEDs and every later conversion match the data
        "instrument": {"beams": beams, "beam_overrides": overrides, "pixel_window": plan.pixel_window,
                       "bandpass": "delta"},
        "cmb": {"prior": "fixed", "prior_width": 0.0, "target_beam_arcmin": plan.cmb_beam_arcmin},
        "foregrounds": {"model": "none"},
        "noise": {"model": "none"},
        "keep": ["cmb"],
    }
    text = ("# written by cmbcube ingest-cmbml: this recipe describes ingested data and cannot re-create it\n"
            + yaml.safe_dump(raw, sort_keys=False))
    return validate(raw, text=text, source=f"cmb-ml:{plan.root}")


# ----------------------------------------------------------------------------- ingest
@dataclasses.dataclass
class IngestReport:
    store: str
    source: str
    status: str                        # created / existing
    planned: int
    already_done: int
    written: list = dataclasses.field(default_factory=list)
    failed: list = dataclasses.field(default_factory=list)   # (split, sim, message)
    seconds: float = 0.0
    files: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed


def _read_maps(path, fields: list, nside: int, destination_unit: str, centre_ghz: float) -> np.ndarray:
    """(len(fields), npix) float32 NESTED in ``destination_unit``."""
    import healpy as hp
    info = map_info(path)
    if info.nside != nside:
        raise CMBMLError(f"{path}: nside {info.nside}, the dataset's is {nside}")
    columns = []
    for f in fields:
        if f not in info.fields:
            raise CMBMLError(f"{path}: lacks field {f} (holds {''.join(info.fields)})")
        columns.append(info.fields.index(f))
    maps = hp.read_map(str(path), field=tuple(columns), nest=True, dtype=np.float64)
    maps = np.atleast_2d(maps)
    maps[maps == hp.UNSEEN] = np.nan
    if info.unit != destination_unit:
        maps *= instrument.unit_factor(centre_ghz, info.unit, destination_unit)
    return maps.astype(np.float32)


def ingest_one(store: str, plan: Plan, cube_units: dict, cmb_unit: str, split: str, sim: int) -> dict:
    """Task body: read one sim's files and write them into the cube (data first, done-flag last)."""
    from cmbcube.science.sky import SimResult
    t0 = time.perf_counter()
    sim_dir = plan.sim_dir(split, sim)
    npix = 12 * plan.nside ** 2
    obs = np.full((len(plan.detectors), len(plan.fields), npix), np.nan, dtype=np.float32)
    for i, freq in enumerate(plan.detectors):
        det = instrument.detector(freq)
        wanted = [f for f in plan.fields if f in det.fields]
        maps = _read_maps(sim_dir / f"obs_{freq}_map.fits", wanted, plan.nside, cube_units[freq], det.centre_ghz)
        for k, f in enumerate(wanted):
            obs[i, plan.fields.index(f)] = maps[k]
    cmb = _read_maps(sim_dir / CMB_FILE, plan.fields, plan.nside, cmb_unit, 143.0)
    params, _ = read_params(plan.side_file(split, sim, PARAMS_FILE))
    cls = read_spectra(plan.side_file(split, sim, SPECTRA_FILE))
    t1 = time.perf_counter()
    cube.write_sim(store, split, sim, SimResult(obs, cmb, params, cls))
    return {"read": t1 - t0, "write": time.perf_counter() - t1}


def ingest(source_dir, store, scheduler: str | None = None, scheduler_file: str | None = None,
           workers: int | None = None, progress: bool | None = None, name: str | None = None,
           units: str | None = None, beams: str = "cmb-ml", force_size: bool = False) -> IngestReport:
    """Read a CMB-ML tree into the cube at ``store`` (created, or resumed when it holds the same tree).

    Every file is checked (names, nside, fields, units) before the store is touched; a store
    made from anything else is refused and left as it is.  One Dask task per sim.
    """

    from cmbcube.stages.cluster import client_for, run_tasks
    from cmbcube.science.sky import cmb_unit as cmb_unit_of
    if units is not None and units not in ("uK_CMB", "K_CMB", "native"):
        raise CMBMLError(f"units {units!r}: allowed: uK_CMB, K_CMB, native")
    store = str(store)
    plan = scan(source_dir)
    recipe = recipe_for(plan, name, units, beams)
    from cmbcube.stages import limits                # store size and sim caps (no sky model: memory is not checked)
    pending = None
    if os.path.isdir(store) and cube.read_attrs(store).get("recipe_hash") == recipe.hash:
        pending = len(cube.pending(store))
    limits.check(limits.simulate_plan(recipe, pending, "ingest-cmbml"), store, (None, ""), force_size)
    status = cube.create_or_check(store, recipe)
    with cube.sims_lock(store, "ingest-cmbml"):      # one sim writer per store
        r = recipe.data
        cube_units = {d.freq: instrument.resolve_unit(r["units"], d) for d in recipe.detectors()}
        cmb_unit = cmb_unit_of(r["units"])
        planned = cube.planned(store)
        todo = cube.pending(store)
        report = IngestReport(store, plan.root, status, int(planned.sum()), int(planned.sum()) - len(todo),
                              files=plan.n_files)
        if not todo:
            return report                   # nothing to do: the store is not written at all
        cube.update_attrs(store, {
            "source_format": "cmb-ml",
            "source_dir": plan.root,
            "source_units": json.dumps(plan.source_units),
            "source_beams": json.dumps({str(f): f"{w:g} ({src})" for f, w, src in beam_sources(plan, beams)}),
            "source_params_ignored": json.dumps(plan.ignored_param_keys),
            "ingested": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "ingested_by": f"cmbcube {__version__}",
        })
        t_start = time.perf_counter()
        from cmbcube.progress import bar as progress_bar
        bar = progress_bar(len(todo), "ingest", progress=progress, items=todo, where=store)

        def on_done(item, _result, error):
            if error is None:
                report.written.append(item)
            else:
                report.failed.append((*item, f"{type(error).__name__}: {error}"))
                log.warning("sim %s/%d failed: %s", item[0], item[1], error)
            bar.update(1, failed=error is not None)

        try:
            with client_for(r["cluster"], scheduler, scheduler_file, workers) as client:
                run_tasks(client, ingest_one, (store, plan, cube_units, cmb_unit), todo, "ingest", on_done)
        finally:
            bar.close()
            cube.consolidate(store)
            report.seconds = time.perf_counter() - t_start
        return report


# ----------------------------------------------------------------------------- export
@dataclasses.dataclass
class ExportReport:
    destination: str
    written: list = dataclasses.field(default_factory=list)
    skipped: list = dataclasses.field(default_factory=list)    # already complete in the destination
    failed: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def _sim_files(detectors) -> list[str]:
    return [f"obs_{d}_map.fits" for d in detectors] + [CMB_FILE, PARAMS_FILE, SPECTRA_FILE]


def _write_map(path: Path, nested: np.ndarray, fields: list, unit: str, extra: list) -> None:
    import healpy as hp
    nside = hp.npix2nside(nested.shape[-1])
    ring = nested[:, hp.ring2nest(nside, np.arange(nested.shape[-1]))].astype(np.float32)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.partial"
    try:
        hp.write_map(str(tmp), ring[0] if len(fields) == 1 else list(ring), nest=False, coord="G",
                     column_names=[f"{f}_STOKES" for f in fields], column_units=[unit] * len(fields),
                     dtype=np.float32, extra_header=extra, overwrite=True)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def export_one(store: str, destination: str, units: str, overwrite: bool, split: str, sim: int) -> str:
    """Task body: one finished sim of the cube -> its CMB-ML folder.  Returns 'written' or 'skipped'."""
    ds = cube.open_dataset(store, chunks=None)
    detectors = [int(d) for d in ds.detector.values]
    sim_dir = Path(destination) / "Simulation" / SPLIT_DIRS[split] / sim_name(sim)
    if not overwrite and all((sim_dir / n).is_file() for n in _sim_files(detectors)):
        return "skipped"
    sim_dir.mkdir(parents=True, exist_ok=True)
    fields = [str(f) for f in ds.field.values]
    isplit = SPLITS.index(split)
    obs = np.asarray(ds.obs[isplit, sim].values, dtype=np.float64)
    pixwin = bool(ds.attrs.get("pixel_window_applied", False))
    beams = cube.detector_beams(ds)
    from cmbcube.recipe import from_store_attrs
    bands = {d.freq: d for d in from_store_attrs(ds.attrs).detectors()}     # the store's bandpasses
    for i, freq in enumerate(detectors):
        det = instrument.detector(freq)
        have = [f for k, f in enumerate(fields) if bool(ds.has_field.values[i, k])]
        source_unit = str(ds.unit.values[i])
        unit = source_unit if units == "store" else units
        maps = obs[i, [fields.index(f) for f in have]]
        if unit != source_unit:
            maps = maps * instrument.band_unit_factor(bands[freq], source_unit, unit)    # over the store's band
        extra = [("FWHM", beams[freq], "[arcmin] Gaussian beam FWHM"),
                 ("FREQ", det.freq, "[GHz] detector"), ("PIXWIN", pixwin, "pixel window applied"),
                 ("CREATOR", f"cmbcube {__version__}", "")]
        _write_map(sim_dir / f"obs_{freq}_map.fits", maps, have, unit, extra)
    cmb_unit = str(ds.cmb.attrs.get("units", ds.attrs.get("cmb_unit", "uK_CMB")))
    unit = cmb_unit if units == "store" else units
    cmb = np.asarray(ds.cmb[isplit, sim].values, dtype=np.float64)
    if unit != cmb_unit:
        cmb = cmb * instrument.unit_factor(143.0, cmb_unit, unit)
    extra = [("FWHM", cube.truth_beam(ds), "[arcmin] beam of the CMB truth (0: none)"),
             ("PIXWIN", pixwin, "pixel window applied"), ("CREATOR", f"cmbcube {__version__}", "")]
    _write_map(sim_dir / CMB_FILE, cmb, fields, unit, extra)
    write_params(sim_dir / PARAMS_FILE, np.asarray(ds.cosmo_params[isplit, sim].values))
    write_spectra(sim_dir / SPECTRA_FILE, np.asarray(ds.cl_theory[isplit, sim].values))
    return "written"


def export(store, destination_dir, splits=None, units: str = "uK_CMB", overwrite: bool = False,
           scheduler: str | None = None, scheduler_file: str | None = None, workers: int | None = None,
           progress: bool | None = None) -> ExportReport:
    """Write the finished sims of ``splits`` (default: all) as a CMB-ML tree under ``destination_dir``.

    Maps go out RING-ordered with their unit in TUNITn (``units``: uK_CMB as CMB-ML's datasets,
    K_CMB, or ``store`` for the cube's own) and the beam in a FWHM card; parameters with WMAP chain
    names; spectra as CAMB writes them.  Sims whose files are all present are skipped unless
    ``overwrite``; each file is written to a temporary name and renamed, so none is ever half-written.
    """

    from cmbcube.stages.cluster import client_for, run_tasks
    store = str(store)
    attrs = cube.read_attrs(store)
    if "recipe_hash" not in attrs:
        raise cube.StoreError(f"{store} is a Zarr store but not a cmbcube store")
    if units not in EXPORT_UNITS:
        raise CMBMLError(f"units {units!r}: allowed: {', '.join(EXPORT_UNITS)}")
    splits = list(splits or SPLITS)
    bad = [s for s in splits if s not in SPLITS]
    if bad:
        raise CMBMLError(f"--split {bad[0]!r}: allowed: {', '.join(SPLITS)}")
    destination = Path(destination_dir)
    if destination.exists() and not destination.is_dir():
        raise CMBMLError(f"{destination}: exists and is not a directory")
    if not destination.parent.exists():
        raise MissingFileError(f"{destination}: parent directory {destination.parent} does not exist")
    done = cube.done_flags(store) & cube.planned(store)
    todo = [(s, int(k)) for s in splits for k in np.nonzero(done[SPLITS.index(s)])[0]]
    report = ExportReport(str(destination))
    if not todo:
        raise CMBMLError(f"{store}: no finished sims in {', '.join(splits)} to export")
    destination.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    recipe = cube.store_recipe(store)
    from cmbcube.progress import bar as progress_bar
    bar = progress_bar(len(todo), "export", progress=progress, items=todo, where=f"{destination}/Simulation")

    def on_done(item, result, error):
        if error is not None:
            report.failed.append((*item, f"{type(error).__name__}: {error}"))
        elif result == "skipped":
            report.skipped.append(item)
        else:
            report.written.append(item)
        bar.update(1, failed=error is not None)

    try:
        with client_for(recipe["cluster"], scheduler, scheduler_file, workers) as client:
            run_tasks(client, export_one, (store, str(destination), units, overwrite), todo, "export", on_done)
    finally:
        bar.close()
        report.seconds = time.perf_counter() - t0
    import yaml
    _atomic_write_text(destination / "cmbcube_export.yaml", yaml.safe_dump({
        "exported_from": str(Path(store).resolve()) if not cube.is_remote(store) else store,
        "recipe_name": attrs.get("recipe_name"), "recipe_hash": attrs.get("recipe_hash"),
        "units": units, "exported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "exported_by": f"cmbcube {__version__}",
        "sims": {s: int(sum(1 for x in todo if x[0] == s)) for s in splits},
    }, sort_keys=False))
    return report


# ----------------------------------------------------------------------------- example trees
def make_example_tree(directory, nside: int = 16, splits: dict | None = None, seed: int = 0,
                      detectors=None, fields: str = "IQU", units: str = "uK_CMB", shared_cosmology=(),
                      fwhm_cards: dict | None = None) -> Path:
    """Write a small tree in CMB-ML's exact layout (for tests and benchmarks); returns its root.

    Maps are Gaussian noise with CMB-like amplitudes (not a physical sky), RING-ordered float32
    with CMB-ML's column names and units; ``units='native'`` writes K_CMB up to 353 GHz and MJy/sr
    at 545/857 instead of uK_CMB everywhere.  Splits listed in ``shared_cosmology`` keep one
    wmap_params.yaml and cmb_ps_fid.txt in the split folder, as CMB-ML does for fixed spectra.
    ``fwhm_cards``: {freq: arcmin} written as FWHM cards in those detectors' files (the maps are
    not smoothed: the cards only exercise the beam bookkeeping).
    """
    import healpy as hp
    import yaml
    splits = {"train": 2, "valid": 1, "test": 1} if splits is None else dict(splits)
    detectors = list(instrument.FREQS if detectors is None else detectors)
    if units not in ("uK_CMB", "native"):
        raise InputError(f"units {units!r}: allowed: uK_CMB, native")
    rng = np.random.default_rng(seed)
    npix = 12 * nside * nside
    root = Path(directory)
    sim_root = root / "Simulation"
    lmax = 6 * nside + 50
    ell = np.arange(lmax + 1)

    def spectra_text(scale):
        shape = np.exp(-((ell / (2.0 * nside + 10)) ** 2))
        cols = [5000 * scale * shape, 40 * scale * shape, 0.05 * scale * shape, 100 * scale * shape,
                1e-7 * shape, 1e-5 * shape, 1e-6 * shape]
        cols = [np.where(ell < 2, 0.0, c) for c in cols]
        rows = ["# L " + " ".join(f"{n:13s}" for n in "TT EE BB TE PP PT PE".split())]
        rows += [f"{l:4d} " + " ".join(f"{c[l]:12.7e}" for c in cols) for l in ell]
        return "\n".join(rows) + "\n"

    def params():
        return {"H0": float(rng.normal(70, 2)), "omegach2": float(rng.normal(0.114, 0.004)),
                "omegabh2": float(rng.normal(0.0226, 0.0005)), "ns002": float(rng.normal(0.97, 0.01)),
                "tau": float(rng.normal(0.089, 0.01)), "chain_idx": int(rng.integers(1, 603936))}

    cards = {int(k): float(v) for k, v in (fwhm_cards or {}).items()}

    def write(path, maps, names, unit, extra=()):
        hp.write_map(str(path), maps[0] if len(names) == 1 else list(maps), nest=False, dtype=np.float32,
                     column_names=names, column_units=[unit] * len(names), overwrite=True,
                     extra_header=list(extra))

    for split, count in splits.items():
        if split not in SPLIT_DIRS:
            raise InputError(f"split {split!r}: allowed: {', '.join(SPLIT_DIRS)}")
        split_dir = sim_root / SPLIT_DIRS[split]
        split_dir.mkdir(parents=True, exist_ok=True)
        if split in shared_cosmology:
            (split_dir / PARAMS_FILE).write_text(yaml.safe_dump(params(), sort_keys=False))
            (split_dir / SPECTRA_FILE).write_text(spectra_text(1.0))
        for sim in range(count):
            d = split_dir / sim_name(sim)
            d.mkdir(exist_ok=True)
            if split not in shared_cosmology:
                (d / PARAMS_FILE).write_text(yaml.safe_dump(params(), sort_keys=False))
                (d / SPECTRA_FILE).write_text(spectra_text(float(rng.uniform(0.9, 1.1))))
            cmb = rng.normal(0.0, [[70.0], [3.0], [3.0]], (3, npix))[["IQU".index(f) for f in fields]]
            write(d / CMB_FILE, cmb, [f"{f}_STOKES" for f in fields], "uK_CMB")
            for freq in detectors:
                det = instrument.detector(freq)
                own = [f for f in fields if f in det.fields]
                maps = cmb[[fields.index(f) for f in own]] + rng.normal(0.0, 20.0 + freq / 10.0, (len(own), npix))
                unit = "uK_CMB"
                if units == "native":
                    unit = det.native_unit
                    maps = maps * instrument.unit_factor(det.centre_ghz, "uK_CMB", unit)
                extra = [("FWHM", cards[freq], "[arcmin] Gaussian beam FWHM")] if freq in cards else []
                write(d / f"obs_{freq}_map.fits", maps, [f"{f}_STOKES" for f in own], unit, extra)
    return root
