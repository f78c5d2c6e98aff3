"""The analysis' reads and writes of the cube: masks, the analysis arrays, one (run, sim)'s inputs and results,
NaMaster's bandpower windows and the coupling matrices shared next to the store (``<store>.namaster/<key>/``).

The layout (names, dims, chunks, attributes) is store_layout.md's; the numbers come from
:mod:`cmbcube.science.metrics` and :mod:`cmbcube.science.spectra`.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from cmbcube import cube
from cmbcube.cube import facts
from cmbcube.cube.opener import open_group
from cmbcube.recipe import SPLITS
from cmbcube.science import instrument
from cmbcube.science.metrics import BEAMS, MASK_DETECTORS, METRICS
from cmbcube.science.spectra import (
    BIN_WIDTH,
    KINDS,
    SPECTRA,
    NamasterSpectra,
    eb_leakage_attrs,
    ell_bins,
    namaster_key,
    require_namaster,
    spectra_attrs,
)

ANALYSIS_ARRAYS = ("metrics", "spectra", "analysis_done")         # written per (run, split, sim)
EB_LEAKAGE_FILE = "eb_leakage.npy"      # beside the coupling matrices: NamasterSpectra.eb_leakage


# ----------------------------------------------------------------------------- what the store holds
def _estimator_of(group) -> str | None:
    keys = set(group.array_keys())
    if "spectra" not in keys or "analysis_done" not in keys or not np.any(np.asarray(group["analysis_done"][...])):
        return None
    return str(group["spectra"].attrs.get("estimator", "pseudo-fast"))


def stored_estimator(store: str) -> str | None:
    """The estimator of the spectra a store already holds (stores analysed before NaMaster: pseudo-fast),
    or None when no (run, sim) has been analysed."""
    return _estimator_of(open_group(store))


def run_names(store: str) -> list[str]:
    """The runs on the store's run axis; StoreError when there is none yet."""
    group = open_group(store)
    if "run" not in set(group.array_keys()):
        raise cube.StoreError(f"{store}: no predictions to analyse yet (run cmbcube ilc or cmbcube predict)")
    return [str(r) for r in group["run"][...]]


def analysis_todo(store: str, runs: list[int], splits) -> tuple[list[tuple[int, str, int]], int]:
    """((run index, split, sim) predicted but not analysed yet, number of (run, sim) of ``runs`` analysed)."""
    group = open_group(store)
    pred_done = np.asarray(group["pred_done"][...]) == 1
    done = np.asarray(group["analysis_done"][...]) == 1
    todo = [(r, s, int(k)) for r in runs for s in splits
            for k in np.nonzero(pred_done[r, SPLITS.index(s)] & ~done[r, SPLITS.index(s)])[0]]
    return todo, int(sum(done[r].sum() for r in runs))


def analysis_bytes_per_sim(store: str) -> int:
    """Uncompressed bytes of one (run, sim)'s metrics and spectra."""
    group = open_group(store)
    out = 0
    for name in ("metrics", "spectra"):
        arr = group[name]
        out += arr.nbytes // max(arr.shape[0] * arr.shape[1] * arr.shape[2], 1)
    return out


# ----------------------------------------------------------------------------- masks
def mask_state(store: str) -> tuple[int, dict | None, str | None]:
    """(nside, the stored mask's attributes or None, the stored spectra's estimator or None)."""
    group = cube.read_group(store)      # damaged finished units raise
    existing = group["mask"].attrs.asdict() if "mask" in set(group.array_keys()) else None
    return facts.nside(group), existing, _estimator_of(group)


def read_mask_maps(store: str) -> tuple[dict, np.ndarray, np.ndarray]:
    """Intensity maps of the first finished sim to find the foregrounds in: ({GHz: obs in uK_CMB} of the
    MASK_DETECTORS stored in a CMB unit, the CMB truth in uK_CMB, the first detector's obs as stored)."""
    group = cube.read_group(store)
    dets = facts.detectors(group)
    done = np.nonzero(np.asarray(group["sim_done"][...]).ravel() == 1)[0]
    if not done.size:
        raise cube.StoreError(f"{store}: no finished sims to build a mask from")
    isplit, isim = divmod(int(done[0]), group["sim_done"].shape[1])
    units = facts.detector_units(group)
    obs_uk = {}
    cmb_uk = None
    for freq in MASK_DETECTORS:
        if freq in dets and units[dets.index(freq)] in ("uK_CMB", "K_CMB"):
            # both maps in uK_CMB before subtracting (stores may hold K_CMB)
            to_uk = instrument.to_uk_cmb(units[dets.index(freq)])
            obs_uk[freq] = np.asarray(group["obs"][isplit, isim, dets.index(freq), 0], dtype=np.float64) * to_uk
            if cmb_uk is None:
                cmb = np.asarray(group["cmb"][isplit, isim, 0], dtype=np.float64)
                cmb_uk = cmb * instrument.to_uk_cmb(facts.cmb_unit(group))
    first = np.asarray(group["obs"][isplit, isim, 0, 0], dtype=np.float64)
    return obs_uk, cmb_uk, first


def write_masks(store: str, mask: np.ndarray, apod: np.ndarray, attrs: dict) -> None:
    """The binary analysis mask (``mask``, uint8) and its apodised version (``mask_apodized``), replacing any."""
    npix = mask.size
    cube.create_array(store, "mask", (npix,), ("pixel",), dtype="u1", fill_value=0,
                      attrs=attrs, overwrite=True)[...] = mask.astype(np.uint8)
    cube.create_array(store, "mask_apodized", (npix,), ("pixel",), dtype="f4", fill_value=0.0,
                      attrs={**attrs, "long_name": "apodised analysis mask for spectra"}, overwrite=True)[...] = apod
    cube.consolidate(store)


def read_masks(store: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """(binary mask as bool, apodised mask as float64, the mask's attributes)."""
    group = cube.read_group(store)
    return (np.asarray(group["mask"][...]) > 0, np.asarray(group["mask_apodized"][...], dtype=np.float64),
            dict(group["mask"].attrs))


# ----------------------------------------------------------------------------- the analysis arrays
def ensure_analysis_arrays(store: str, nbins: int, estimator: str = "namaster") -> None:
    """Driver-side: the analysis coordinates and the arrays every (run, sim) writes one chunk of (created
    once; a store analysed with an older metric list is upgraded first)."""
    group = open_group(store)
    nrun = group["run"].shape[0]
    nsplit, nsim = group["sim_done"].shape
    nfield = group["field"].shape[0]
    nside_ = facts.nside(group)
    cube.create_array(store, "beam_fwhm", (len(BEAMS),), ("beam",), dtype="f8", fill_value=np.nan)[...] = BEAMS
    existing = set(group.array_keys())
    if "metric" in existing and [str(m) for m in group["metric"][...]] != list(METRICS):
        _upgrade_metrics(store, [str(m) for m in group["metric"][...]])
        existing = set(open_group(store).array_keys())
    for name, values in zip(("metric", "kind", "spectrum"), (METRICS, KINDS, SPECTRA)):
        if name not in existing:
            arr = cube.create_array(store, name, (len(values),), (name,), dtype=str, fill_value="")
            arr[...] = np.array(values, dtype=object)
    bins = cube.create_array(store, "ell_bin", (nbins,), ("ell_bin",), dtype="i8", fill_value=-1,
                             attrs={"long_name": "first multipole of the bin", "bin_width": BIN_WIDTH})
    bins[...] = ell_bins(nside_)[:-1]
    cube.create_array(store, "metrics", (nrun, nsplit, nsim, len(BEAMS), nfield, len(METRICS)),
                      ("run", "split", "sim", "beam", "field", "metric"), dtype="f8",
                      chunks=(1, 1, 1, len(BEAMS), nfield, len(METRICS)),
                      attrs={"long_name": "pixel metrics on unmasked pixels after common beam, mask and "
                                          "monopole/dipole removal (beam coordinate: beam_fwhm arcmin)"})
    spectra = cube.create_array(store, "spectra", (nrun, nsplit, nsim, len(KINDS), len(SPECTRA), nbins),
                                ("run", "split", "sim", "kind", "spectrum", "ell_bin"), dtype="f8",
                                chunks=(1, 1, 1, len(KINDS), len(SPECTRA), nbins),
                                attrs=spectra_attrs(estimator, nside_))
    if spectra.attrs.get("estimator") != estimator:     # analyze checked that no sim holds another estimator's
        spectra.attrs.update(spectra_attrs(estimator, nside_))
    cube.create_array(store, "analysis_done", (nrun, nsplit, nsim), ("run", "split", "sim"), dtype="u1",
                      chunks=(1, 1, 1), fill_value=0)
    cube.consolidate(store)


def _upgrade_metrics(store: str, old: list) -> None:
    """A store analysed with an older metric list: extend it in place when the old list is a prefix of
    METRICS (new metrics read NaN for pairs analysed before), else drop the old metrics and analysis flags."""
    group = open_group(store, "r+")
    if old == list(METRICS[: len(old)]) and "metrics" in set(group.array_keys()):
        arr = group["metrics"]
        arr.resize(arr.shape[:-1] + (len(METRICS),))
        coord = group["metric"]
        coord.resize((len(METRICS),))
        coord[...] = np.array(METRICS, dtype=object)
    else:
        for key in ("metrics", "metric", "analysis_done"):
            if key in set(group.array_keys()):
                del group[key]
    cube.consolidate(store)


@dataclasses.dataclass
class AnalysisInputs:
    """What one (run, sim) is scored on; maps (field, pixel) NESTED float64 in uK_CMB."""

    nside: int
    fields: list            # the store's fields
    truth: np.ndarray
    pred: np.ndarray
    sigma: np.ndarray | None        # the run's per-pixel uncertainty, when it has one
    mask: np.ndarray                # bool
    apod: np.ndarray
    beam_truth: float
    beam_pred: float
    pixel_window: bool              # the maps carry the pixel window
    cl_theory: np.ndarray           # (spectrum, ell) of the sim


def read_analysis_inputs(store: str, run: int, split: str, sim: int) -> AnalysisInputs:
    """Worker-side: truth, prediction (and sigma), masks, beams and theory of one (run, sim)."""
    group = cube.read_group(store)      # damaged finished units raise
    isplit = SPLITS.index(split)
    scale = instrument.to_uk_cmb(facts.cmb_unit(group))
    sigma = None
    if "pred_sigma" in set(group.array_keys()) and run < group["pred_sigma"].shape[0]:
        sigma = np.asarray(group["pred_sigma"][run, isplit, sim], dtype=np.float64) * scale
    return AnalysisInputs(
        nside=facts.nside(group), fields=facts.fields(group),
        truth=np.asarray(group["cmb"][isplit, sim], dtype=np.float64) * scale,
        pred=np.asarray(group["pred"][run, isplit, sim], dtype=np.float64) * scale, sigma=sigma,
        mask=np.asarray(group["mask"][...]) > 0, apod=np.asarray(group["mask_apodized"][...], dtype=np.float64),
        beam_truth=facts.truth_beam(group), beam_pred=facts.run_beam(group, run),
        pixel_window=bool(group.attrs.get("pixel_window_applied", False)),
        cl_theory=np.asarray(group["cl_theory"][isplit, sim], dtype=np.float64))


def write_analysis(store: str, run: int, split: str, sim: int, metrics: np.ndarray, spectra: np.ndarray) -> None:
    """Worker-side: one (run, sim)'s metrics and spectra (one chunk each), then its flag."""
    out = open_group(store, "r+")
    isplit = SPLITS.index(split)
    out["metrics"][run, isplit, sim] = metrics
    out["spectra"][run, isplit, sim] = spectra
    out["analysis_done"][run, isplit, sim] = 1


# ----------------------------------------------------------------------------- NaMaster's matrices and windows
def windows_current(store: str, mask_attrs: dict) -> bool:
    """Whether the stored bandpower windows (``spectra_window``) belong to the mask with these attributes and
    hold the E-to-B leakage measured as now (windows written before it was measured are recomputed)."""
    group = open_group(store)
    if "spectra_window" not in set(group.array_keys()):
        return False
    attrs = group["spectra_window"].attrs
    return attrs.get("mask") == mask_attrs and attrs.get("eb_leakage") == eb_leakage_attrs()


def write_windows(store: str, windows: np.ndarray, mask_attrs: dict) -> None:
    """NaMaster's bandpower windows (spectrum, ell_bin, spectrum_in, ell) of the mask with ``mask_attrs``."""
    cube.create_array(store, "spectra_window", windows.shape, ("spectrum", "ell_bin", "spectrum_in", "ell"),
                      dtype="f8", fill_value=np.nan, overwrite=True,
                      attrs={"long_name": "NaMaster bandpower windows (unit beams): expectation of spectra[..., s, b] "
                                          "= sum over spectrum_in s', ell of W[s, b, s', ell] C_s'(ell); spectrum_in "
                                          "in the order of spectrum (TT, EE, BB, TE)", "mask": mask_attrs,
                             "eb_leakage": eb_leakage_attrs()})[...] = windows
    cube.consolidate(store)


def namaster_dir(store) -> str:
    """The folder beside a store sharing NaMaster's coupling matrices between workers: ``<store>.namaster``
    (the name cut and hashed where the file system's name limit leaves no room for the suffix)."""
    from cmbcube.cube.location import sibling_name
    return sibling_name(store, ".namaster")


def cached_namaster(nside: int, apod_nest: np.ndarray, mask_nest: np.ndarray, nbins: int,
                    cache_dir: str | None = None) -> NamasterSpectra:
    """NamasterSpectra whose coupling matrices and measured E-to-B leakage are read from ``cache_dir``
    (w00/w02/w22.fits, eb_leakage.npy) when all are there, else computed and written there (each file
    atomically: readers see whole files only)."""
    paths = [os.path.join(cache_dir, f"{n}.fits") for n in NamasterSpectra.NAMES] if cache_dir else []
    leak_path = os.path.join(cache_dir, EB_LEAKAGE_FILE) if cache_dir else None
    if paths and all(os.path.exists(p) for p in paths + [leak_path]):
        nmt = require_namaster()
        return NamasterSpectra(nside, apod_nest, mask_nest, nbins, [nmt.NmtWorkspace.from_file(p) for p in paths],
                               eb_leakage=np.load(leak_path))
    out = NamasterSpectra(nside, apod_nest, mask_nest, nbins)
    if paths:
        os.makedirs(cache_dir, exist_ok=True)
        for wsp, path in zip(out.workspaces, paths):
            tmp = f"{path}.{os.getpid()}.tmp.fits"
            wsp.write_to(tmp)
            os.replace(tmp, path)
        tmp = f"{leak_path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as fh:
            np.save(fh, out.eb_leakage)
        os.replace(tmp, leak_path)
    return out


_NAMASTER_MEMO: dict = {}


def namaster_for(nside: int, apod_nest: np.ndarray, mask_nest: np.ndarray, nbins: int,
                 store: str | None = None) -> NamasterSpectra:
    """One NamasterSpectra per (mask, nside) and process: workers reuse the coupling matrices across sims,
    and, for a store on a local disk, share them through ``<store>.namaster/<key>/`` (computed once: the
    matrices cost ~lmax^3, 3.1 s at nside 128 on a quiet core, minutes at 512)."""
    key = namaster_key(nside, apod_nest, mask_nest, nbins)
    cache = os.path.join(namaster_dir(store), key) if store and os.path.isdir(store) else None
    if (key, cache) not in _NAMASTER_MEMO:
        _NAMASTER_MEMO.clear()
        _NAMASTER_MEMO[(key, cache)] = cached_namaster(nside, apod_nest, mask_nest, nbins, cache)
    return _NAMASTER_MEMO[(key, cache)]


def forget_namaster() -> None:
    """Drop this process's NamasterSpectra (benchmarks timing the coupling matrices)."""
    _NAMASTER_MEMO.clear()
