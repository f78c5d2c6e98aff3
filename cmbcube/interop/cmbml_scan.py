"""A CMB-ML tree checked file by file before anything is written (:func:`scan` -> :class:`Plan`),
and the recipe that describes it in a cube (:func:`recipe_for`, :func:`beam_sources`).

The tree's layout and file formats: :mod:`cmbcube.interop.cmbml_files`.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from cmbcube.errors import MissingFileError
from cmbcube.interop.cmbml_files import (
    CMB_FILE,
    CMB_UNITS,
    OBS_RE,
    PARAMS_FILE,
    SIM_DIGITS,
    SIM_RE,
    SPECTRA_FILE,
    SPLIT_DIRS,
    CMBMLError,
    map_info,
    read_header,
    read_params,
    sim_name,
)
from cmbcube.recipe import SPLITS, validate
from cmbcube.science import instrument


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


def _refuse(problems: list[str]) -> None:
    raise CMBMLError("\n  ".join(["the CMB-ML tree has problems:"] + problems[:20]
                                 + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])))


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
        _refuse(problems)
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
        _refuse(problems)
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
        _refuse(problems)

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
        _refuse(problems)
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
