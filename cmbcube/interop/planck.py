"""Reading the Planck-style input files a recipe may name: per-pixel noise variance maps
(``noise.variance_dir``) and cosmological-parameter chains (``cmb.chain_file``).

The science layer takes the arrays (:mod:`cmbcube.science.noise`, :mod:`cmbcube.science.cosmology`);
the files are read here.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from cmbcube.errors import InputError, MissingFileError
from cmbcube.science.cosmology import PARAMS


def read_variance_map(variance_dir: str, freq: int, nside: int, field: str) -> np.ndarray:
    """Per-pixel variance (native unit^2) at ``nside`` NESTED from ``{variance_dir}/{freq}.fits``.

    The file holds II[, QQ, UU] columns (as Planck's II_COV, QQ_COV, UU_COV), in
    the ordering its header states.  Changing resolution keeps the noise per
    unit area: variance scales with the number of pixels averaged.
    """
    import healpy as hp
    path = Path(variance_dir) / f"{freq}.fits"
    if not path.is_file():
        raise MissingFileError(f"noise.variance_dir: {path} does not exist (one file per detector, {{freq}}.fits)")
    column = {"I": 0, "Q": 1, "U": 2}[field]
    var = hp.read_map(str(path), field=column, nest=True)
    nside_in = hp.npix2nside(var.size)
    if nside_in != nside:
        var = hp.ud_grade(var, nside, order_in="NESTED", order_out="NESTED") * (nside / nside_in) ** 2
    return var


@functools.lru_cache(maxsize=4)
def read_chain(path: str) -> dict[str, np.ndarray]:
    """Read a whitespace or comma separated chain with a header naming columns.

    Needs H0, ombh2, omch2, ns, tau and either As or logA (= ln 10^10 As).
    Lines starting with '#' are comments except a first '#'-prefixed header.
    Returns {parameter: column} for :data:`cmbcube.science.cosmology.PARAMS`.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"cmb.chain_file: {path} does not exist")
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    header = lines[0].lstrip("#").replace(",", " ").split()
    rows = [ln.replace(",", " ").split() for ln in lines[1:] if not ln.lstrip().startswith("#")]
    data = np.array(rows, dtype=float)
    cols = {name: data[:, i] for i, name in enumerate(header)}
    if "As" not in cols and "logA" in cols:
        cols["As"] = np.exp(cols["logA"]) * 1e-10
    missing = [p for p in PARAMS if p not in cols]
    if missing:
        raise InputError(f"cmb.chain_file {path}: missing columns {missing}; header has {header}")
    return {p: cols[p] for p in PARAMS}
