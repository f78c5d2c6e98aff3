"""cmbcube's NILC and HILC against PyILC, side by side on the same sim's maps.

For each nside: one sim is simulated into a small store (temperature, CMB-ML's 8 channels 44-857 GHz),
its maps are written to FITS (K_CMB, RING) with their Gaussian beams for PyILC, and each method runs in a
fresh process (GNU time), timed whole (interpreter start, imports, reading the maps, the ILC, writing the result):

- PyILC (commit printed): ``pyilc.main`` on a YAML in the CMB-ML configuration: cosine needlets with
  ellpeaks cmbcube's default peaks for that nside (CMB-ML's [100, 200, 300, 383] at 128; at 256 its
  nside-128 peaks scaled, [200, 400, 600, 768], the last lowered to 767 as PyILC asserts
  ELLMAX < 3 nside - 1) and ELLMAX the last peak - 1 (382 at 128, as CMB-ML); common beam 20.6', ILC
  bias tolerance 1e-3, taper_width 0, delta bandpasses, no deprojection, save_weights 'no' (CMB-ML
  saves them: that would only slow PyILC); HILC: TopHatHarmonic bins of 50 up to 3 nside - 1, as
  cmbcube's.  PyILC's defaults otherwise (numba on, its own thread pools).  Workarounds for f527e35's
  HILC, which does not run as committed (see PYILC_MAIN).
- cmbcube: ``cmbcube ilc STORE --method nilc|hilc --fields I`` on a fresh copy of the store, as a
  user runs it with the defaults (the recipe's cluster section: a local cluster of 2 workers x 1 thread;
  one sim runs in the command's own process with those 2 cores as transform threads, see
  cmbcube.stages.ilc.in_process_plan) and, for reference, the same with CMBCUBE_SHT_THREADS=1
  ("cmbcube_1thread").  Peak memory: the largest resident set of one process of the tree (GNU time's %M).

Residual RMS (uK) against the truth at 20.6' (monopole and dipole removed, full sky) for both, so speed is
not bought with accuracy.  The last stdout line is one JSON object.

    python benchmarks/pyilc_compare.py --pyilc /path/to/pyilc          # nside 128 and 256
    python benchmarks/pyilc_compare.py --pyilc DIR --nside 128 256 512
"""
from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TIME = "/usr/bin/time"           # GNU time: peak RSS of the measured process (see timed)
CPU_SECONDS: dict = {}           # user + system CPU seconds of the last run of each command (timed)


def simulate_store(path: str, nside: int) -> None:
    from cmbcube import recipe
    from cmbcube.stages import simulate
    r = recipe.validate({"name": "pyilc-compare", "nside": nside, "splits": {"train": 0, "valid": 0, "test": 1},
                         "fields": ["I"], "keep": ["cmb"], "seed": 4})
    report = simulate.run(r, path, workers=2, progress=False)
    assert report.ok, report.failed


def export_fits(store: str, out: Path) -> dict:
    """Write the sim's channels (K_CMB, RING) and its truth; return what PyILC's YAML needs."""
    import healpy as hp

    from cmbcube import cube
    from cmbcube.science import ilc, instrument, needlets
    nside = cube.nside(store)
    dets = [d for d in ilc.CMBML_DETECTORS if d in cube.detectors(store)]
    obs = cube.read_obs(store, "test", 0, dets)[:, 0].astype(np.float64)       # (det, pix) NESTED
    units = cube.detector_units(store, dets)
    beams = cube.detector_beams(store, dets)
    centres = [instrument.detector(d, bandpass=cube.bandpass(store)) for d in dets]
    response = needlets.sed_vector("cmb", centres, units)                      # own unit per uK_CMB
    ring = hp.ring2nest(nside, np.arange(12 * nside ** 2))
    order = sorted(range(len(dets)), key=lambda i: -beams[dets[i]])            # PyILC: lowest resolution first
    files = []
    for i in order:
        f = out / f"map_{dets[i]}.fits"
        hp.write_map(str(f), obs[i][ring] / response[i] * 1e-6, dtype=np.float64, overwrite=True)
        files.append(str(f))
    import cmbcube
    truth = cmbcube.open(store).cmb.sel(split="test", sim=0, field="I").values[ring].astype(np.float64)
    np.save(out / "truth_ring.npy", truth)
    return {"freqs": [int(dets[i]) for i in order], "beams": [float(beams[dets[i]]) for i in order],
            "files": files, "nside": nside}


def pyilc_yaml(meta: dict, out_dir: Path, method: str, pyilc_dir: str) -> str:
    from cmbcube.science import needlets
    nside = meta["nside"]
    lmax = 3 * nside - 1
    lines = {
        "output_dir": f"'{out_dir}/'", "output_prefix": "''", "output_suffix": "''", "save_weights": "'no'",
        "save_as": "'fits'", "work_in_healpix": "'yes'",
        "param_dict_file": f"'{pyilc_dir}/input/fg_SEDs_default_params.yml'",
        "ELLMAX": lmax, "N_side": nside, "perform_ILC_at_beam": 20.6, "ILC_preserved_comp": "'CMB'",
        "ILC_bias_tol": 0.001, "N_deproj": 0, "ILC_deproj_comps": "[]", "taper_width": 0,
        "override_ILCbiastol_threshold": "'False'", "beam_type": "'Gaussians'",
        "bandpass_type": "'DeltaBandpasses'", "N_freqs": len(meta["freqs"]), "freqs_delta_ghz": meta["freqs"],
        "beam_FWHM_arcmin": meta["beams"], "freq_map_files": meta["files"], "N_maps_xcorr": 0,
        "N_SED_params": 0, "SED_params": "[]", "SED_params_vals": "[]", "SED_params_priors": "[]",
        "SED_params_priors_params": "[]",
    }
    if method == "nilc":
        peaks = needlets.default_peaks(nside)[1:]
        peaks[-1] = min(peaks[-1], 3 * nside - 1)      # PyILC asserts ELLMAX < 3 nside - 1 (768 -> 767 at 256)
        lines.update({"wavelet_type": "'CosineNeedlets'", "N_scales": len(peaks) + 1, "ellmin": 0,
                      "ellpeaks": peaks, "ELLMAX": peaks[-1] - 1})     # PyILC: the last peak is ELLMAX + 1
    else:
        lines.update({"wavelet_type": "'TopHatHarmonic'", "BinSize": 50})
    text = "\n".join(f"{k}: {json.dumps(v) if isinstance(v, list) else v}" for k, v in lines.items()) + "\n"
    path = out_dir / "input.yml"
    path.write_text(text)
    return str(path)


# PyILC's command line (pyilc.main.main) with three workarounds for its HILC branch at f527e35, which
# cannot run on HEALPix maps as committed: it reads two attributes ILCInfo never sets there
# (AttributeError): maps_to_apply_weights (False: no other maps to apply the weights to) and pix_size
# (used for CAR maps only; set to the HEALPix pixel size in arcmin), and harmonic_ILC, a module-level
# function, assigns ``self.ell_F`` (NameError; a stand-in ``self`` in its module takes the value).
# All three are set before main() without editing PyILC; NILC reads none of them.  Its HILC also uses
# ``np.complex_``, gone in NumPy 2 (this venv's): aliased to np.complex128, the type it always meant.
# And its HILC asserts inv(C) C = 1 within 1e-3 on the raw (unscaled, K_CMB^2) bin covariance, which at
# nside 256 fails on these maps (condition number ~1e13 with 857 GHz next to 44 GHz); the weights are
# computed from that inverse either way, so for HILC runs ``np.allclose`` inside pyilc.wavelets (used
# by that check alone) answers True: PYILC_HILC_CHECK_OFF.  The residuals show what the weights are worth.
PYILC_MAIN = ("import sys, types, healpy, numpy; numpy.complex_ = numpy.complex128; "
              "import pyilc.input as i, pyilc.wavelets as w; "
              "i.ILCInfo.maps_to_apply_weights = False; "
              "i.ILCInfo.pix_size = healpy.nside2resol(int(sys.argv[2]), arcmin=True); "
              "w.self = types.SimpleNamespace(); "
              "exec(sys.argv[3]) if len(sys.argv) > 3 else None; "
              "from pyilc.main import main; sys.argv = ['pyilc', sys.argv[1]]; main()")

CLI = "from cmbcube.cli import main; main()"
PYILC_HILC_CHECK_OFF = ("w.np = types.ModuleType('numpy_for_pyilc_wavelets'); w.np.__dict__.update(vars(numpy)); "
                        "w.np.allclose = lambda *a, **k: True")


def timed(cmd: list, env: dict, cwd: str, log: Path) -> tuple[float, float]:
    """Run ``cmd``; return (wall s, peak RSS MiB of the process and its waited-for children).

    Through GNU time (/usr/bin/time -f %M): a child forked from this (large) process would report at
    least this process's RSS at the fork (Linux carries the parent's high-water mark across exec); one
    forked from ``time`` starts from ``time``'s few MB."""
    peak_file = log.with_suffix(".peak")
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run([TIME, "-f", "%M %U %S", "-o", str(peak_file), *cmd], env=env, cwd=cwd, stdout=fh,
                              stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}; see {log}:\n{log.read_text()[-3000:]}")
    kib, user, system = peak_file.read_text().split()[-3:]
    CPU_SECONDS[tuple(cmd[:3])] = float(user) + float(system)
    return wall, float(kib) / 1024


def residual(map_ring: np.ndarray, truth_ring: np.ndarray, nside: int) -> float:
    import healpy as hp

    from cmbcube.science import instrument, sht
    lmax = 3 * nside - 1
    common = instrument.gaussian_beam(20.6, lmax)[0]
    truth = sht.alm2map(sht.almxfl(sht.map2alm(truth_ring, lmax, 3), common), nside)
    d = hp.remove_dipole(map_ring - truth, nest=False)
    return float(np.sqrt(np.mean(d ** 2)))


def run_nside(nside: int, work: Path, pyilc_dir: str, repeats: int) -> dict:
    import healpy as hp

    import cmbcube
    store = work / f"store{nside}.zarr"
    if not store.exists():
        t0 = time.perf_counter()
        simulate_store(str(store), nside)
        print(f"nside {nside}: simulated one sim in {time.perf_counter() - t0:.1f} s", flush=True)
    fits_dir = work / f"fits{nside}"
    fits_dir.mkdir(exist_ok=True)
    meta = export_fits(str(store), fits_dir)
    truth = np.load(fits_dir / "truth_ring.npy")
    ring = hp.ring2nest(nside, np.arange(12 * nside ** 2))
    row = {"nside": nside}
    py = sys.executable
    env_py = dict(os.environ, PYTHONPATH=pyilc_dir)
    env_cc = dict(os.environ, PYTHONPATH=str(ROOT))
    for k in ("CMBCUBE_SHT_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env_py.pop(k, None)
        env_cc.pop(k, None)
    for method in ("nilc", "hilc"):
        best = {}
        for rep in range(repeats):
            out = work / f"pyilc{nside}_{method}_{rep}"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            yml = pyilc_yaml(meta, out, method, pyilc_dir)
            extra = [PYILC_HILC_CHECK_OFF] if method == "hilc" else []
            s, mib = timed([py, "-c", PYILC_MAIN, yml, str(nside), *extra], env_py, str(out), out / "log.txt")
            found = glob.glob(str(out / "needletILCmap_component_CMB.fits"))
            pymap = hp.read_map(found[0])
            pymap = pymap * 1e6 if np.std(pymap) < 1e-2 else pymap     # PyILC writes uK_CMB from K_CMB inputs
            res = residual(pymap, truth, nside)
            shutil.rmtree(out, ignore_errors=True)
            best.setdefault("pyilc", []).append((s, mib, res, CPU_SECONDS[(py, "-c", PYILC_MAIN)]))
            for variant, env in (("cmbcube", env_cc), ("cmbcube_1thread", dict(env_cc, CMBCUBE_SHT_THREADS="1"))):
                copy = work / f"copy{nside}.zarr"
                shutil.rmtree(copy, ignore_errors=True)
                shutil.copytree(store, copy)
                s, mib = timed([py, "-c", CLI, "ilc", str(copy), "--method",
                                method, "--fields", "I", "--no-progress"], env, str(work), work / f"cc_{method}.log")
                pred = cmbcube.open(str(copy)).pred.sel(run=method, split="test", sim=0, field="I").values
                res = residual(pred[ring].astype(np.float64), truth, nside)
                best.setdefault(variant, []).append((s, mib, res, CPU_SECONDS[(py, "-c", CLI)]))
        for who, vals in best.items():
            s = min(v[0] for v in vals)
            row[f"{who}_{method}_s"] = round(s, 2)
            row[f"{who}_{method}_mib"] = round(max(v[1] for v in vals), 1)
            row[f"{who}_{method}_residual"] = round(vals[0][2], 4)
            row[f"{who}_{method}_cpu_s"] = round(min(v[3] for v in vals), 2)
        for who in ("cmbcube", "cmbcube_1thread"):
            row[f"{who}_{method}_speedup"] = round(row[f"pyilc_{method}_s"] / row[f"{who}_{method}_s"], 2)
            row[f"{who}_{method}_cpu_ratio"] = round(row[f"pyilc_{method}_cpu_s"] / row[f"{who}_{method}_cpu_s"], 2)
            row[f"{who}_{method}_mem_ratio"] = round(row[f"{who}_{method}_mib"] / row[f"pyilc_{method}_mib"], 3)
            row[f"{who}_{method}_residual_ratio"] = round(row[f"{who}_{method}_residual"]
                                                          / row[f"pyilc_{method}_residual"], 4)
        print(json.dumps(row), flush=True)
    shutil.rmtree(work / f"copy{nside}.zarr", ignore_errors=True)
    return row


def table(rows: list) -> str:
    head = (f"{'nside':>5s} {'method':6s} {'who':15s} {'wall s':>8s} {'speedup':>8s} {'cpu s':>8s} {'cpu x':>6s} "
            f"{'MiB':>7s} {'mem/Py':>7s} {'resid uK':>9s} {'res/Py':>7s}")
    out = [head]
    for r in rows:
        for method in ("nilc", "hilc"):
            for who in ("pyilc", "cmbcube", "cmbcube_1thread"):
                if f"{who}_{method}_s" not in r:
                    continue
                sp = r.get(f"{who}_{method}_speedup", 1.0)
                mr = r.get(f"{who}_{method}_mem_ratio", 1.0)
                rr = r.get(f"{who}_{method}_residual_ratio", 1.0)
                cx = r.get(f"{who}_{method}_cpu_ratio", 1.0)
                out.append(f"{r['nside']:5d} {method:6s} {who:15s} {r[f'{who}_{method}_s']:8.2f} {sp:8.2f} "
                           f"{r[f'{who}_{method}_cpu_s']:8.2f} {cx:6.2f} {r[f'{who}_{method}_mib']:7.0f} {mr:7.3f} "
                           f"{r[f'{who}_{method}_residual']:9.4f} {rr:7.4f}")
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pyilc", required=True, help="a PyILC source tree (its pyilc/ package and input/)")
    parser.add_argument("--nside", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--repeats", type=int, default=2, help="runs per program (the fastest is quoted)")
    parser.add_argument("--pyilc-commit", help="PyILC's commit, when --pyilc is not a git checkout (e.g. f527e35)")
    parser.add_argument("--work", help="keep stores here between runs (default: a temp dir, removed)")
    parser.add_argument("--results", help="write the table here (default benchmarks/results/pyilc_compare_<date>.txt)")
    args = parser.parse_args(argv)
    pyilc_dir = str(Path(args.pyilc).resolve())
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="cmbcube-pyilc-"))
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    rows = []
    try:
        for nside in args.nside:
            rows.append(run_nside(nside, work, pyilc_dir, args.repeats))
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    pyilc_commit = subprocess.run(["git", "-C", pyilc_dir, "rev-parse", "--short", "HEAD"], capture_output=True,
                                  text=True).stdout.strip() or args.pyilc_commit or "unknown"
    text = table(rows)
    print(text)
    date = datetime.date.today().isoformat()
    header = (f"# benchmarks/pyilc_compare.py {' '.join(argv if argv is not None else sys.argv[1:])}\n"
              f"# date {date}, cmbcube {commit}, PyILC {pyilc_commit}, {os.cpu_count()} CPUs, "
              f"load average (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
              f"after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}\n"
              f"# fastest of {args.repeats} fresh processes each (PyILC and cmbcube interleaved); wall s = whole "
              f"process; speedup = PyILC's wall / this wall; cpu s = user + system CPU seconds (least of the repeats; "
              f"less sensitive to other load than wall); MiB = peak RSS (GNU time %M); residual = RMS (uK) of map - "
              f"truth at 20.6', monopole/dipole removed, full sky\n")
    out = Path(args.results) if args.results else ROOT / "benchmarks" / "results" / f"pyilc_compare_{date}.txt"
    out.write_text(header + text + "\n" + json.dumps({"rows": rows}) + "\n")
    print(json.dumps({"rows": rows, "load_before": load_before[0], "load_after": load_after[0]}))


if __name__ == "__main__":
    main()
