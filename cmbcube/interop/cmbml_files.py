"""CMB-ML's files: names, healpy FITS maps (headers, reading, writing), parameters and spectra.

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

The rest of the interop: :mod:`cmbcube.interop.cmbml_scan` checks a whole tree and plans its
store, :mod:`cmbcube.stages.ingest` reads a tree into a cube, :mod:`cmbcube.stages.export`
writes a cube back as a tree.
"""
from __future__ import annotations

import dataclasses
import os
import re
import uuid
from pathlib import Path

import numpy as np

from cmbcube.errors import InputError
from cmbcube.science import cosmology, instrument

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


# Stokes Q/U convention (FITS POLCCONV): cmbcube's maps are HEALPix/COSMO; IAU files have U of the
# opposite sign and are flipped on reading.  A file without the card is taken as COSMO (healpy's default).
POLARIZATION_CONVENTION = "COSMO"
POLCCONV_CHOICES = ("COSMO", "IAU")


@dataclasses.dataclass
class MapInfo:
    nside: int
    ordering: str
    fields: list            # field of each column, in file order
    unit: str
    polconv: str = POLARIZATION_CONVENTION


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
    polconv = str(h.get("POLCCONV", POLARIZATION_CONVENTION)).strip().upper()
    if polconv not in POLCCONV_CHOICES:
        raise CMBMLError(f"{path}: POLCCONV {h.get('POLCCONV')!r}; allowed: {', '.join(POLCCONV_CHOICES)}")
    return MapInfo(int(h["NSIDE"]), ordering, fields, units.pop(), polconv)


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
    atomic_write_text(path, yaml.safe_dump(out, sort_keys=False))


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
    rows += [f"{multipole:4d} " + " ".join(f"{v:12.7e}" for v in dl[:, multipole]) for multipole in ell]
    atomic_write_text(path, "\n".join(rows) + "\n")


def atomic_write_text(path, text: str) -> None:
    """Write through a temporary name and rename: the file is complete or absent, never half-written."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.partial"
    tmp.write_text(text)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- maps
def read_maps(path, fields: list, nside: int, destination_unit: str, centre_ghz: float) -> np.ndarray:
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
    if info.polconv == "IAU" and "U" in fields:
        maps[fields.index("U")] *= -1           # IAU -> COSMO
    if info.unit != destination_unit:
        maps *= instrument.unit_factor(centre_ghz, info.unit, destination_unit)
    return maps.astype(np.float32)


def sim_files(detectors) -> list[str]:
    """The files of one sim folder holding ``detectors``."""
    return [f"obs_{d}_map.fits" for d in detectors] + [CMB_FILE, PARAMS_FILE, SPECTRA_FILE]


def write_map(path: Path, nested: np.ndarray, fields: list, unit: str, extra: list) -> None:
    """(field, npix) NESTED maps -> a RING float32 healpy file (``extra``: header cards), atomically."""
    import healpy as hp
    nside = hp.npix2nside(nested.shape[-1])
    ring = nested[:, hp.ring2nest(nside, np.arange(nested.shape[-1]))].astype(np.float32)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.partial"
    try:
        hp.write_map(str(tmp), ring[0] if len(fields) == 1 else list(ring), nest=False, coord="G",
                     column_names=[f"{f}_STOKES" for f in fields], column_units=[unit] * len(fields),
                     dtype=np.float32, extra_header=list(extra) + [("POLCCONV", POLARIZATION_CONVENTION)],
                     overwrite=True)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
