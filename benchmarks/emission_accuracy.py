"""What the tabulated band integration costs in accuracy: observed maps vs the pixel-by-pixel path.

Run from the repository root::

    python benchmarks/emission_accuracy.py              # nside 256 (sky model 512), 2 sims, ~2 min
    python benchmarks/emission_accuracy.py --nside 128 --sims 1

The default recipe's shape (recipes/cmb-ml-512.yaml at the asked nside: 9 detectors, I/Q/U, every
synthetic foreground, top-hat bands), without CMB and noise, is simulated twice per sim by the same
Simulator: once as cmbcube does (spatially varying SEDs read from per-sim tables,
``foregrounds.add_emission``) and once with every SED evaluated pixel by pixel at every band node
(``foregrounds.emission``, the path before the tables).  Printed per detector and field: the largest
|difference| over the sky in units of that pixel's noise rms (the noise the store's maps carry), the
rms of the same ratio, and the largest relative difference where the signal is above 1% of its peak.
The last line of stdout is one JSON object; the report also goes to
benchmarks/results/emission_accuracy_n{nside}_{date}.txt.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def direct_add(out, model, freq_ghz, scale=1.0, weights=None):
    """The pixel-by-pixel path: every SED factor evaluated at every band node, then summed."""
    from cmbcube.science.foregrounds import pysm
    freqs = np.atleast_1d(np.asarray(freq_ghz, dtype=np.float64))
    w = np.ones(1) if weights is None and freqs.size == 1 else weights
    out += pysm.emission(model, freqs if freqs.size > 1 else float(freqs[0]), out.shape[0], scale, out.dtype, w)


def main(argv=None) -> int:
    import warnings
    warnings.filterwarnings("ignore")
    import yaml

    from cmbcube import recipe
    from cmbcube.science import foregrounds, sky
    from cmbcube.stages import simspec
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nside", type=int, default=256)
    parser.add_argument("--sims", type=int, default=2)
    parser.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    raw = yaml.safe_load((ROOT / "recipes" / "cmb-ml-512.yaml").read_text())
    raw.update(nside=args.nside, name="emission-accuracy", splits={"train": args.sims, "valid": 0, "test": 0},
               noise={"model": "none"}, cmb={"enabled": False})
    sim = simspec.simulator(recipe.validate(raw))
    sigma = {(d.freq, f): sim.noise_sigma(d, f) for d in sim.detectors for f in d.fields}
    worst: dict = {}
    for n in range(args.sims):
        tabulated = sim.run("train", n).obs
        real_add = foregrounds.add_emission
        sky.foregrounds.add_emission = direct_add
        try:
            direct = sim.run("train", n).obs
        finally:
            sky.foregrounds.add_emission = real_add
        for i, det in enumerate(sim.detectors):
            for k, field in enumerate(sim.fields):
                if field not in det.fields:
                    continue
                diff = (tabulated[i, k].astype(np.float64) - direct[i, k]) / sigma[(det.freq, field)]
                signal = np.abs(direct[i, k].astype(np.float64))
                bright = signal > 0.01 * signal.max()
                rel = np.max(np.abs(tabulated[i, k][bright] - direct[i, k][bright]) / signal[bright])
                key = f"{det.freq} {field}"
                old = worst.get(key, (0.0, 0.0, 0.0, 0.0))
                worst[key] = (max(old[0], float(np.max(np.abs(diff)))), max(old[1], float(np.sqrt(np.mean(diff ** 2)))),
                              max(old[2], float(rel)), max(old[3], float(np.max(signal / sigma[(det.freq, field)]))))
    lines = [f"# python benchmarks/emission_accuracy.py --nside {args.nside} --sims {args.sims}   "
             f"({datetime.date.today().isoformat()})",
             f"tabulated vs pixel-by-pixel band integration, nside {args.nside} (sky model {sim.sky_nside}), "
             f"{args.sims} sims, no CMB, no noise; worst over the sims",
             f"{'detector field':<16}{'max |diff|/noise':>18}{'rms diff/noise':>16}{'max rel (bright)':>18}"
             f"{'max signal/noise':>18}"]
    for key, (mx, rms, rel, snr) in worst.items():
        lines.append(f"{key:<16}{mx:>18.2e}{rms:>16.2e}{rel:>18.2e}{snr:>18.3g}")
    overall = max(v[0] for v in worst.values())
    lines.append(f"largest |difference| anywhere: {overall:.2e} of the pixel's noise rms")
    text = "\n".join(lines)
    print(text)
    out = Path(args.results_dir) / f"emission_accuracy_n{args.nside}_{datetime.date.today().isoformat()}.txt"
    summary = {"nside": args.nside, "sims": args.sims, "max_diff_over_noise": overall,
               "per_detector_field": {k: dict(zip(("max_diff_over_noise", "rms_diff_over_noise", "max_rel_bright",
                                                   "max_signal_over_noise"), v)) for k, v in worst.items()}}
    out.write_text(text + "\n" + json.dumps(summary) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
