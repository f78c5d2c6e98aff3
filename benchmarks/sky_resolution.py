"""How the embedded Galaxy's published-figure statistics move with the sky model's resolution, and how
much two sims share with ``foregrounds.shared_structure`` 1, 0.5 and 0.

Run from the repository root::

    PYTHONPATH=. python benchmarks/sky_resolution.py            # ~1-2 min on 2 cores

For sky nside 64 and 128: 4 sims (seed 0, split train, the simulator's streams) of 353 GHz dust and
30 GHz synchrotron, the B-purified statistics of ``cmbcube.science.skystats`` on the faintest 71% of the
dust sky, mean (sd over sims).  Then, at nside 64, the correlation between sims 0 and 1 of the dust
intensity at ell >= 30 and of the synchrotron Q at 30 GHz, for three values of shared_structure.
The last line of stdout is one JSON object.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmbcube.science import skystats as ss
from cmbcube.science.validation import correlation

DUST = ("D80_EE", "alpha_EE", "alpha_BB", "BB_over_EE", "r_TE")
SYNC = ("D80_EE", "alpha_EE", "alpha_BB", "BB_over_EE")


def main() -> int:
    out = {"resolution": {}, "shared_structure": {}}
    for nside in (64, 128):
        dust, sync = [], []
        for sim in range(4):
            d = ss.component_maps("dust", nside, 0, sim)
            st = ss.dust_statistics(d)
            s = ss.synchrotron_statistics(ss.component_maps("synchrotron", nside, 0, sim, freq_ghz=30.0),
                                          ss.faint_mask(d[0], ss.PLANCK["f_sky"])[1])
            dust.append([st[k] for k in DUST])
            sync.append([s[k] for k in SYNC])
        row = {f"dust_{k}": (float(m), float(e)) for k, m, e in zip(DUST, np.mean(dust, 0), np.std(dust, 0, ddof=1))}
        row.update({f"sync_{k}": (float(m), float(e))
                    for k, m, e in zip(SYNC, np.mean(sync, 0), np.std(sync, 0, ddof=1))})
        out["resolution"][nside] = row
        print(f"sky nside {nside}, 4 sims: " + ", ".join(f"{k} {m:.3g} ({e:.2g})" for k, (m, e) in row.items()))
    for shared in (1.0, 0.5, 0.0):
        a, b = (ss.component_maps("dust", 64, 0, sim, shared_structure=shared) for sim in (0, 1))
        sa, sb = (ss.component_maps("synchrotron", 64, 0, sim, freq_ghz=30.0, shared_structure=shared)
                  for sim in (0, 1))
        r = {"dust_I_ell30": correlation(a[0], b[0], 30), "sync_Q": correlation(sa[1], sb[1])}
        out["shared_structure"][shared] = r
        print(f"shared_structure {shared}: correlation of sims 0 and 1, dust I (ell >= 30) {r['dust_I_ell30']:.3f}, "
              f"synchrotron Q {r['sync_Q']:.3f}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
