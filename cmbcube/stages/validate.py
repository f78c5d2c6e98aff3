"""``cmbcube validate STORE``: the store's physics next to references outside cmbcube.

For a few finished sims: the stored lensed spectra against a high-accuracy CAMB run on the sim's own
parameters; the band-averaged unit conversions against Planck's published coefficients and pysm3;
the beams fitted to obs x cmb against the recorded FWHM; the sky-averaged noise depth against
Planck 2018 I Table 4; the CIB's power against Planck 2013 XXX and the radio sources beside WMAP's
catalogue; and, for the synthetic Galaxy, the dust (353 GHz) and synchrotron (30 GHz)
statistics of Planck 2018 XI/XII and Martire et al. 2022 measured with a decoupled, B-purified
estimator on an LR71-like mask, the alignment of the dust polarisation with the intensity structures,
and whether sims are independent.  The Galaxy statistics are measured on the sky model itself
(regenerated with the store's recipe and seeds at its sky nside, without beams), the others on the
stored maps.  Each row says pass, FAIL or info; the command exits 1 if any row fails.
"""
from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np

from cmbcube import cube
from cmbcube.compute.fanout import StageReport
from cmbcube.errors import InputError, param
from cmbcube.recipe import SPLITS
from cmbcube.science import instrument, validation as v

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ValidationReport(StageReport):
    store: str
    sims: list
    checks: list

    def __post_init__(self) -> None:
        self.failed = [c for c in self.checks if c.status == v.FAIL]        # the checks that failed

    def text(self) -> str:
        head = f"cmbcube validate {self.store}: sims {', '.join(f'{s}/{k}' for s, k in self.sims)}"
        tail = (f"{len(self.checks)} checks: {sum(c.status == v.PASS for c in self.checks)} pass, "
                f"{len(self.failed)} FAIL, {sum(c.status == v.INFO for c in self.checks)} info")
        return "\n".join([head, "", v.table(self.checks), "", tail])

    def to_json(self) -> str:
        return json.dumps({"store": self.store, "sims": self.sims,
                           "checks": [dataclasses.asdict(c) for c in self.checks]}, indent=1)


def finished_sims(store: str, count: int) -> list[tuple[str, int]]:
    """Up to ``count`` finished sims, test split first (then valid, train), lowest sim first."""
    done = cube.done_flags(store)
    order = [SPLITS.index(s) for s in ("test", "valid", "train")]
    out = [(SPLITS[i], int(k)) for i in order for k in np.nonzero(done[i])[0]]
    if not out:
        raise InputError(f"{store}: no finished sims to validate (simulate first)")
    return out[:count]


def to_uk_cmb(det: instrument.Detector, unit: str) -> float:
    return instrument.band_unit_factor(det, unit, "uK_CMB")


def ring(nest: np.ndarray) -> np.ndarray:
    import healpy as hp
    return hp.reorder(np.asarray(nest, dtype=np.float64), n2r=True)


def beam_and_noise(store: str, recipe, split: str, sim: int) -> list:
    """Beams fitted to the stored maps (obs less the stored foregrounds and noise, x the CMB truth) and the
    depth of the noise inside obs (stored, or regenerated from the simulator's seeds when not kept)."""
    from cmbcube.stages import simspec
    nside, fields = cube.nside(store), cube.fields(store)
    dets = {d.freq: d for d in recipe.detectors()}
    units = dict(zip(cube.detectors(store), cube.detector_units(store)))
    beams = cube.detector_beams(store)
    obs = cube.read_obs(store, split, sim)
    comps = cube.read_components(store, split, sim)
    stored_noise = cube.read_noise(store, split, sim)
    simulator = simspec.simulator(recipe) if stored_noise is None and recipe["noise"]["model"] != "none" else None

    def noise_map(k, freq, f):
        """The noise inside obs: stored, or regenerated with the simulator's own seeds (None: no noise)."""
        if stored_noise is not None:
            return stored_noise[k, fields.index(f)]
        return None if simulator is None else simulator.noise_realisation(split, sim, dets[freq], f)

    out = []
    if recipe["cmb"]["enabled"] and "I" in fields:
        i = fields.index("I")
        cmb = ring(cube.read_cmb(store, split, sim)[i]) * instrument.to_uk_cmb(cube.cmb_unit(store))
        truth = cube.truth_beam(store)
        for k, freq in enumerate(cube.detectors(store)):
            sky = obs[k, i].astype(np.float64)
            if comps is not None:
                sky = sky - comps[:, k, i].sum(axis=0)
            noise = noise_map(k, freq, "I")
            if noise is not None:
                sky = sky - noise
            recorded = float(np.sqrt(max(beams[freq] ** 2 - truth ** 2, 0.0)))
            out.append(v.beam_check(freq, recorded, ring(sky) * to_uk_cmb(dets[freq], units[freq]), cmb))
    if recipe["noise"]["model"] != "white":
        return out
    published = {(r["freq"], r["quantity"]): r for r in instrument.published_references()}
    for k, freq in enumerate(cube.detectors(store)):
        det = dets[freq]
        for f in ("I", "Q"):
            ref = published.get((freq, "depth_T" if f == "I" else "depth_P"))
            if f not in fields or ref is None or f not in det.fields:
                continue
            noise = noise_map(k, freq, f)
            # the table's unit: uK_CMB deg (30-353 GHz) or kJy/sr deg (545, 857)
            table_unit = "uK_CMB" if det.polarised else "MJy/sr"
            scale = instrument.band_unit_factor(det, units[freq], table_unit) * (1.0 if det.polarised else 1e3)
            depth = v.map_depth(noise, nside) * scale
            where = "stored noise" if stored_noise is not None else "noise regenerated from the recipe's seeds"
            out.append(v.noise_check(freq, f if f == "I" else "Q/U", depth, ref["reference"],
                                     f"{ref['unit']}, {where}", ref["source"], noise.size, stored_noise is None))
    return out


DUST_STATS = (("dust_D80_EE", "D80_EE", "D_80^EE (uK_CMB^2)"), ("dust_alpha_EE", "alpha_EE", "alpha_EE"),
              ("dust_alpha_BB", "alpha_BB", "alpha_BB"), ("dust_BB_over_EE", "BB_over_EE", "BB/EE"),
              ("dust_r_TE", "r_TE", "r_TE"), ("dust_p_median", "p_median", "p median, |b| > 30"),
              ("dust_p_max", "p_max", "p max, |b| > 30"))
SYNC_STATS = (("sync_BB_over_EE", "BB_over_EE", "BB/EE"), ("sync_alpha_EE", "alpha_EE", "alpha_EE"),
              ("sync_alpha_BB", "alpha_BB", "alpha_BB"), ("sync_p_median", "p_median", "p median, |b| > 30"),
              ("sync_p_p90", "p_p90", "p 90th percentile, |b| > 30"))


def sky_maps(recipe, name: str, split: str, sim: int, freq_ghz: float, unit: str = "uK_CMB") -> np.ndarray:
    """(3, npix) RING I, Q, U of one synthetic component as the simulator builds it for (split, sim) at the
    store's sky nside, at ``freq_ghz`` (delta bandpass, no beam)."""
    from cmbcube.science import skystats as ss
    fg = recipe["foregrounds"]
    return ss.component_maps(name, recipe["sky_nside"], recipe["seed"], sim, fg["model"], freq_ghz, unit, split,
                             fg["shared_structure"], fg["vary"])


def galaxy_checks(recipe, sims: list) -> list:
    """Dust and synchrotron statistics, alignment and independence of the synthetic Galaxy of ``sims``.

    Each statistic is averaged over the sims and compared with its reference range widened by twice the
    standard error of that mean (the ranges are for the sky's expectation; one sim of a non-Gaussian
    Galaxy on 71% of the sky scatters by ~15% in D_80^EE and ~0.04 in the slopes)."""
    from cmbcube.science import foregrounds, skystats as ss
    fg = recipe["foregrounds"]
    if fg["model"] not in foregrounds.SKY_MODELS:
        return []
    names = set(fg["components"])
    nside, shared = recipe["sky_nside"], fg["shared_structure"]
    values: dict[str, list] = {}
    dust_i = []
    if "dust" not in names:
        return [v.Check("galaxy", "dust and synchrotron statistics", float("nan"), None, "-",
                        "need the dust (its faint 71% is the mask)", v.INFO, True)]
    for split, sim in sims:
        d353 = sky_maps(recipe, "dust", split, sim, 353.0)
        dust_i.append(d353[0])
        st = ss.dust_statistics(d353)
        for key, stat, _ in DUST_STATS:
            values.setdefault(key, []).append(st[stat])
        values.setdefault("alignment_V", []).append(ss.alignment(d353)["V"])
        if "synchrotron" in names:
            mask = ss.faint_mask(d353[0], ss.PLANCK["f_sky"])[1]
            s30 = sky_maps(recipe, "synchrotron", split, sim, 30.0)
            st = ss.synchrotron_statistics(s30, mask)
            for key, stat, _ in SYNC_STATS:
                values.setdefault(key, []).append(st[stat])
    labels = {key: f"dust 353 GHz {label}" for key, _, label in DUST_STATS}
    labels.update({key: f"synchrotron 30 GHz {label}" for key, _, label in SYNC_STATS})
    labels["alignment_V"] = "dust field || intensity structures: mean cos 2phi, |b| > 20"
    out = []
    for key, xs in values.items():
        ref, n = ss.REFERENCES[key], len(xs)
        mean = float(np.mean(xs))
        sd = float(np.std(xs, ddof=1)) if n > 1 else 0.0
        margin = 2 * sd / np.sqrt(n)
        out.append(v.Check("galaxy", f"{labels[key]}: mean of {n} sim(s) (sd {sd:.3g}), sky nside {nside}", mean,
                           ref["value"], f"[{ref['lo']:g}, {ref['hi']:g}] +- {margin:.2g}", ref["source"],
                           v.within(mean, ref["lo"] - margin, ref["hi"] + margin), True))
    if len(dust_i) >= 2 and fg["vary"] == "per_sim":
        r = v.correlation(dust_i[0], dust_i[1], ell_min=30)
        ok = v.INFO if shared > 0 else v.verdict(abs(r) < 0.15)
        out.append(v.Check("independence", f"dust I correlation between two sims, ell >= 30 "
                           f"(foregrounds.shared_structure {shared:g})", r, 0.0,
                           "|r| < 0.15 when shared_structure = 0", "independent skies: 0", ok, True))
    return out


def extragalactic_checks(recipe, split: str, sim: int) -> list:
    """The CIB's power at 545 GHz and the radio sources at 30 GHz of one sim of a synthetic sky
    (``validation.cib_check``, ``validation.radio_check``)."""
    from cmbcube.science import foregrounds
    fg = recipe["foregrounds"]
    if fg["model"] not in foregrounds.SKY_MODELS:
        return []
    names, out = set(fg["components"]), []
    if "cib" in names:
        out.append(v.cib_check(f"{split}/{sim}", sky_maps(recipe, "cib", split, sim, 545.0, "MJy/sr")[0]))
    if "radio" in names:
        out.append(v.radio_check(f"{split}/{sim}", sky_maps(recipe, "radio", split, sim, 30.0, "MJy/sr")[0]))
    return out


def cmb_independence(store: str, recipe, sims: list) -> list:
    fields = cube.fields(store)
    if len(sims) < 2 or "I" not in fields or not recipe["cmb"]["enabled"]:
        return []
    a, b = (ring(cube.read_cmb(store, s, k)[fields.index("I")]) for s, k in sims[:2])
    r = v.correlation(a, b, ell_min=10)
    status = v.verdict(abs(r) < 0.15) if np.isfinite(r) else v.INFO        # NaN: a map without signal
    return [v.Check("independence", "CMB I correlation between two sims, ell >= 10", r, 0.0, "|r| < 0.15",
                    "independent Gaussian realisations: 0", status)]


def run(store: str, sims: int = 4, galaxy: bool = True) -> ValidationReport:
    """Every check for up to ``sims`` finished sims of ``store`` (see the module docstring)."""
    if sims < 1:
        raise InputError(f"{param('sims')} {sims}: use 1 or more")
    if cube.is_remote(store):                              # Icechunk or object storage: read through the cube
        if "recipe_hash" not in cube.read_attrs(store):
            raise cube.StoreError(f"{store}: not a cmbcube store")
    else:
        cube.local_store_attrs(store, "validate reads")      # a missing path: "no such store", exit 2
    recipe = cube.store_recipe(store)
    chosen = finished_sims(store, sims)
    checks = []
    if recipe["cmb"]["enabled"]:
        for split, sim in chosen:
            params, cls = cube.read_theory(store, split, sim)
            if not all(np.isfinite(x) for x in params.values()) or not np.all(np.isfinite(cls[:, 2:])):
                checks.append(v.Check("lensed CMB", f"{split}/{sim}: no cosmological parameters or theory in "
                                      "the store (an ingested dataset without them)", float("nan"), None, "-",
                                      "-", v.INFO))
                continue
            checks += v.lensing_checks(f"{split}/{sim}", params, cls)
    checks += v.unit_checks(recipe.detectors())
    regenerated = []
    regenerated += beam_and_noise(store, recipe, *chosen[0])
    if galaxy:
        regenerated += galaxy_checks(recipe, chosen)
        regenerated += extragalactic_checks(recipe, *chosen[0])
    checks += demote_if_other_code(store, recipe, regenerated)
    checks += cmb_independence(store, recipe, chosen)
    return ValidationReport(store, [list(c) for c in chosen], checks)


def demote_if_other_code(store: str, recipe, checks: list) -> list:
    """Rows measured on data regenerated from the recipe (noise not kept, the Galaxy, the extragalactic
    sky) describe today's code; for a store made by other code (before 2026-12-07, or another version
    of its synthetic sky) they say nothing about the store: kept as info, saying why."""
    from cmbcube.recipe import LEGACY_LENSING
    from cmbcube.science import foregrounds
    fg = recipe["foregrounds"]
    why = ""
    if recipe["cmb"]["lensing"] == LEGACY_LENSING:
        why = "store made before 2026-12-07"
    elif fg["model"] in foregrounds.SKY_MODELS:
        have = cube.read_attrs(store).get("foreground_model_version", "1.0")
        now = foregrounds.model_attrs(fg)["foreground_model_version"]
        if have != now:
            why = f"store's sky is version {have}, this cmbcube's {now}"
    if not why:
        return checks
    out = []
    for c in checks:
        if c.regenerated:
            c = dataclasses.replace(c, status=v.INFO, tolerance=f"{c.tolerance} (not applied: {why}; "
                                    "regenerated with today's code)")
        out.append(c)
    return out
