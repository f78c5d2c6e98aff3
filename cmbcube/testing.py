"""Test fixtures: what only tests and benchmarks ask for; no module of cmbcube imports this one.

- ``make_example_tree(dir, ...)``: a small dataset tree in CMB-ML's exact layout.

The fault-drill hooks production code calls (``hold``, ``fail_if_injected``: off unless their
environment variables are set) are :mod:`cmbcube.drills`.
"""
from __future__ import annotations

from pathlib import Path


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
    import numpy as np
    import yaml

    from cmbcube.errors import InputError
    from cmbcube.interop.cmbml_files import CMB_FILE, PARAMS_FILE, SPECTRA_FILE, SPLIT_DIRS, sim_name
    from cmbcube.science import instrument
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
        rows += [f"{multipole:4d} " + " ".join(f"{c[multipole]:12.7e}" for c in cols) for multipole in ell]
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
