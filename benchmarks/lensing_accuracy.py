"""How accurate the simulator's lensed spectra are over a prior's range (cmb.lensing: corrected).

Run from the repository root::

    PYTHONPATH=. python benchmarks/lensing_accuracy.py        # ~3-5 min on 2 cores

For each prior (Planck 2018, WMAP9, Planck 2018 widened 3x) at nside 32 (lmax 95) and 128 (lmax 383):
the correction's one-time cost, then for N draws from the prior the largest relative error over
2 <= ell <= lmax of the corrected TT, EE, BB (and of TE relative to sqrt(TT EE)) against CAMB run here
at lmax 4000 with lens_potential_accuracy 2, beside the error of the uncorrected CAMB-to-the-band-limit
call that the simulator made up to e4cd77c.  The last line of stdout is one JSON object.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmbcube.science import cosmology
from cmbcube.science.validation import camb_reference

CASES = (("planck2018", 1.0), ("wmap9", 1.0), ("planck2018", 3.0))


def errors(cls, ref):
    ell = slice(2, None)
    out = [float(np.max(np.abs(cls[k, ell] / ref[k, ell] - 1))) for k in range(3)]
    out.append(float(np.max(np.abs(cls[3, ell] - ref[3, ell]) / np.sqrt(ref[0, ell] * ref[1, ell]))))
    return out


def main(draws: int = 3) -> int:
    results = []
    for nside in (32, 128):
        lmax = 3 * nside - 1
        for prior, width in CASES:
            expansion = cosmology.expansion_point(prior, width)
            t0 = time.perf_counter()
            correction = cosmology.lensing_correction(*expansion, lmax, 1)
            setup = time.perf_counter() - t0
            rng = np.random.default_rng(2026)
            worst, worst_old = np.zeros(4), np.zeros(4)
            for _ in range(draws):
                params = cosmology.draw_params(rng, prior, width)
                ref = camb_reference(params, lmax)
                new = cosmology.lensed_spectra(params, lmax, 1, "corrected", expansion, correction)
                worst = np.maximum(worst, errors(new, ref))
                worst_old = np.maximum(worst_old, errors(cosmology.camb_lensed(params, lmax, 0), ref))
            row = {"nside": nside, "prior": prior, "width": width, "draws": draws, "setup_s": round(setup, 1),
                   "corrected_max_err": dict(zip(("TT", "EE", "BB", "TE"), worst.round(5).tolist())),
                   "band_limit_max_err": dict(zip(("TT", "EE", "BB", "TE"), worst_old.round(5).tolist()))}
            results.append(row)
            print(f"nside {nside:4d} {prior:>10} x{width:g}: setup {setup:5.1f} s; corrected max error TT/EE/BB/TE "
                  + " / ".join(f"{x:.4f}" for x in worst) + "; band-limit CAMB "
                  + " / ".join(f"{x:.4f}" for x in worst_old), flush=True)
    print(json.dumps({"lensing_accuracy": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
