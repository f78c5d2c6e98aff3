"""The two embedded skies side by side: realism figures and how much a benchmark ranking moves.

Run from the repository root (nice it: it is CPU-bound)::

    python benchmarks/sky_models.py --realism       # spectra/statistics table + two PNGs in docs/ (~2 min)
    python benchmarks/sky_models.py --experiment    # NILC, HILC, UNet5 on both skies at nside 32 (~20 min)

--realism: for ``synthetic`` (filamentary, the default) and ``synthetic-gaussian``, N sims of dust
at 353 GHz and synchrotron at 30 GHz at nside 128 (seed 0, split train, the simulator's seeds):
decoupled, B-purified NaMaster bandpowers (skystats.purified_spectra, 10-ell bins) on the faintest
71% of the dust sky (Planck 2018 XI's LR71 size; 5 deg smoothed intensity threshold, 5 deg C2
apodisation), power-law fits over 40 <= ell <= 160 at the pivot ell = 80, BB/EE as the ratio of the
fitted amplitudes at 80, r_TE and TE/EE over the same range, the polarisation fraction at 1 deg for
|b| > 30 deg, the relative orientation of the polarisation-inferred field and the dust intensity
contours (skystats.alignment: mean cos 2 phi at |b| > 20 deg, 3 deg smoothing), synchrotron BB/EE,
slopes and fraction distribution, one-point moments of the intensity at |b| > 40 deg, each next to a
Gaussian sky with the same spectra; then every figure of skystats.REFERENCES with its source and
whether the default sky's mean lies in the accepted range.  Writes docs/sky_dust_353.png (full sky and 20 deg
gnomonic patches of I and P for both skies) and docs/sky_dust_spectra.png (EE, BB, TE of both
skies beside Planck 2018 XI's power laws).

--experiment: for each sky, a store at nside 32 (9 detectors, field I, seed 31415, the same
splits), cmbNNCS UNet5 trained a fixed number of epochs, NILC and HILC (CMB-ML settings), the
analysis stage (f_sky 0.8 mask) and the test MAE of each method (mean +- s.e. over test sims),
at the truth's resolution and at 20.6'.
The last line of stdout is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import load_average, log  # noqa: E402

MODELS = ("synthetic", "synthetic-gaussian")


def realism(nsims: int, nside: int, docs: Path) -> dict:
    import healpy as hp

    from cmbcube.science import foregrounds, skystats as ss
    out, spectra = {}, {}
    for model in MODELS:
        rows, cls = [], []
        for sim in range(nsims):
            d = ss.component_maps("dust", nside, 0, sim, model)
            mask = ss.faint_mask(d[0], ss.PLANCK["f_sky"])[1]
            st = ss.dust_statistics(d, mask)
            al = ss.alignment(d, smooth_deg=3.0, b_min_deg=20)
            ell = st["ell"]
            cls.append(st["cl"])
            lat30, lat40 = ss.high_latitude(nside, 30), ss.high_latitude(nside, 40)
            skew, kurt = ss.moments(d[0][lat40])
            twin = ss.gaussian_twin(d, seed=sim + 1)
            p_g = ss.pol_fraction(twin)[lat30]
            skew_g, kurt_g = ss.moments(twin[0][lat40])
            s30 = ss.component_maps("synchrotron", nside, 0, sim, model, freq_ghz=30.0)
            sy = ss.synchrotron_statistics(s30, mask)
            rows.append(dict(ee80=st["D80_EE"], alpha_ee=st["alpha_EE"], alpha_bb=st["alpha_BB"],
                             bb_ee=st["BB_over_EE"], te_ee=st["TE_over_EE"], r_te=st["r_TE"],
                             p_median=st["p_median"], p_max=st["p_max"],
                             p_gauss_median=float(np.median(p_g)), p_gauss_max=float(np.quantile(p_g, 0.999)),
                             align_v=al["V"], align_v_err=al["V_err"],
                             skew=skew, kurt=kurt, skew_gauss=skew_g, kurt_gauss=kurt_g,
                             sync_ee80_30=sy["D80_EE"], sync_alpha_ee=sy["alpha_EE"], sync_alpha_bb=sy["alpha_BB"],
                             sync_bb_ee=sy["BB_over_EE"], sync_p_median=sy["p_median"], sync_p_p90=sy["p_p90"]))
            log(f"  {model} sim {sim}: EE80 {st['D80_EE']:.0f}, BB/EE {st['BB_over_EE']:.2f}, "
                f"r_TE {st['r_TE']:.2f}, V {al['V']:.3f}, sync BB/EE {sy['BB_over_EE']:.2f}")
        out[model] = {k: (float(np.mean([r[k] for r in rows])), float(np.std([r[k] for r in rows], ddof=1)))
                      for k in rows[0]}
        spectra[model] = (ell, np.mean(cls, axis=0))
    ref = ss.REFERENCES
    print(f"\n== 353 GHz dust and 30 GHz synchrotron, {nsims} sims at nside {nside}, mean (sd over sims); "
          "B-purified NaMaster bandpowers on the faintest 71% ==")
    print(f"{'quantity':<44}{'reference':>10}" + "".join(f"{m:>24}" for m in MODELS))
    lines = [("D_ell^EE(80) [uK_CMB^2], faintest 71%", "ee80", "dust_D80_EE"),
             ("alpha_EE (C_ell), 40-160", "alpha_ee", "dust_alpha_EE"),
             ("alpha_BB (C_ell), 40-160", "alpha_bb", "dust_alpha_BB"),
             ("BB/EE (amplitudes at ell 80)", "bb_ee", "dust_BB_over_EE"),
             ("r_TE = TE/sqrt(TT EE), 40-160", "r_te", "dust_r_TE"),
             ("TE/EE (amplitude ratio), 40-160", "te_ee", None),
             ("p median, 1 deg, |b|>30", "p_median", "dust_p_median"),
             ("p max (99.9th pct), 1 deg, |b|>30", "p_max", "dust_p_max"),
             ("  Gaussian twin: p median", "p_gauss_median", None),
             ("  Gaussian twin: p max (99.9th pct)", "p_gauss_max", None),
             ("alignment V = <cos 2phi>, |b|>20, 3 deg", "align_v", "alignment_V"),
             ("  its standard error (patches), per sim", "align_v_err", None),
             ("I skewness, |b|>40", "skew", None),
             ("I excess kurtosis, |b|>40", "kurt", None),
             ("  Gaussian twin: skewness", "skew_gauss", None),
             ("  Gaussian twin: excess kurtosis", "kurt_gauss", None),
             ("synchrotron 30 GHz: D_ell^EE(80)", "sync_ee80_30", None),
             ("synchrotron 30 GHz: alpha_EE", "sync_alpha_ee", "sync_alpha_EE"),
             ("synchrotron 30 GHz: alpha_BB", "sync_alpha_bb", "sync_alpha_BB"),
             ("synchrotron 30 GHz: BB/EE at ell 80", "sync_bb_ee", "sync_BB_over_EE"),
             ("synchrotron 30 GHz: p median, |b|>30", "sync_p_median", "sync_p_median"),
             ("synchrotron 30 GHz: p 90th pct, |b|>30", "sync_p_p90", "sync_p_p90")]
    for label, key, rk in lines:
        r = f"{ref[rk]['value']:g}" if rk else ""
        print(f"{label:<44}{r:>10}" + "".join(f"{out[m][key][0]:>16.3g} ({out[m][key][1]:.2g})" for m in MODELS))
    print(f"\n== validation of `{MODELS[0]}` (mean over sims) against the published figures ==")
    print(f"{'quantity':<18}{'measured':>10}{'reference':>11}{'accepted':>16}  {'pass':<5} source")
    checks = {}
    for _label, key, rk in lines:
        if not rk:
            continue
        v, r = out[MODELS[0]][key][0], ref[rk]
        ok = r["lo"] <= v <= r["hi"]
        checks[rk] = ok
        interval = "[" + format(r["lo"], "g") + ", " + format(r["hi"], "g") + "]"
        print(f"{rk:<18}{v:>10.3g}{r['value']:>11g}{interval:>16}  {'pass' if ok else 'FAIL':<5} {r['source']}")
    figures(nside, spectra, docs, foregrounds, ss, hp)
    out["checks"] = checks
    return out


def figures(nside, spectra, docs, foregrounds, ss, hp):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    docs.mkdir(exist_ok=True)
    fig = plt.figure(figsize=(12, 6.6))
    maps = {m: ss.component_maps("dust", nside, 0, 0, m) for m in MODELS}
    for row, m in enumerate(MODELS):
        d = maps[m]
        p = np.hypot(d[1], d[2])
        hp.mollview(np.log10(d[0]), fig=fig, sub=(2, 4, 4 * row + 1), title=f"{m}: log10 I [uK_CMB]",
                    cbar=True, min=1.5, max=4.5, notext=True)
        hp.mollview(np.log10(p), fig=fig, sub=(2, 4, 4 * row + 2), title=f"{m}: log10 P",
                    cbar=True, min=0.5, max=3.2, notext=True)
        lon, lat = 200.0, 60.0
        for col, (values, label) in enumerate(((d[0], "I"), (p, "P = sqrt(Q^2 + U^2)"))):
            patch = hp.gnomview(values, rot=(lon, lat), reso=10, xsize=150, return_projected_map=True,
                                no_plot=True)
            ax = fig.add_subplot(2, 4, 4 * row + 3 + col)
            im = ax.imshow(np.log10(np.asarray(patch)), origin="lower", cmap="inferno")
            ax.set_title(f"log10 {label}, 25 deg at (l, b) = ({lon:g}, {lat:g})", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    fig.suptitle(f"353 GHz dust [uK_CMB], sim 0, nside {nside}: filamentary 'synthetic' (top) vs "
                 "'synthetic-gaussian' (bottom); same seed", y=0.99, fontsize=9)
    fig.savefig(docs / "sky_dust_353.png", dpi=60)
    plt.close(fig)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    ell = spectra[MODELS[0]][0]
    spectra = {m: v[1] for m, v in spectra.items()}
    fac = ell * (ell + 1) / (2 * np.pi)
    ell_ref = np.maximum(ell, 1.0)
    sel = ell >= 20
    pl = ss.PLANCK
    ref = {"EE": pl["dust_ee80_uK_CMB2"] * (ell_ref / 80.0) ** (pl["dust_alpha_ee"] + 2),
           "BB": pl["dust_ee80_uK_CMB2"] * pl["dust_bb_over_ee"] * (ell_ref / 80.0) ** (pl["dust_alpha_bb"] + 2)}
    for ax, (k, name) in zip(axes, ((1, "EE"), (2, "BB"), (3, "TE"))):
        for m, style in zip(MODELS, ("-", "--")):
            ax.loglog(ell[sel], np.abs(fac * spectra[m][k])[sel], style, label=m)
        if name in ref:
            ax.loglog(ell[sel], ref[name][sel], "k:", label="Planck 2018 XI power law (LR71)")
        else:
            tt_ee = np.sqrt(np.abs(spectra[MODELS[0]][0] * spectra[MODELS[0]][1]))
            ax.loglog(ell[sel], pl["dust_r_te"] * (fac * tt_ee)[sel], "k:",
                      label=f"r_TE = {pl['dust_r_te']} x sqrt(TT EE) (filamentary)")
        ax.set_title(f"353 GHz dust {name}, faintest 71%, B purified")
        ax.set_xlabel("ell")
        ax.set_ylabel("D_ell [uK_CMB^2]")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(docs / "sky_dust_spectra.png", dpi=70)
    plt.close(fig)
    for name in ("sky_dust_353.png", "sky_dust_spectra.png"):
        log(f"  wrote docs/{name} ({(docs / name).stat().st_size / 1e3:.0f} kB)")


def experiment(work: Path, splits: dict, epochs: int) -> dict:
    from train import REPORT_BEAMS, cube_mae

    from cmbcube import recipe
    from cmbcube.stages import analyze, ilc, predict, preprocess, simulate, train
    results = {}
    for model in MODELS:
        store = str(work / f"{model}.zarr")
        r = recipe.validate({"name": f"sky-models-{model}", "nside": 32, "splits": splits, "fields": ["I"],
                             "keep": ["cmb"], "seed": 31415, "foregrounds": {"model": model},
                             # the README's table was measured with delta bands: pinned so a rerun reproduces it
                             "instrument": {"bandpass": "delta"}})
        t0 = time.perf_counter()
        rep = simulate.run(r, store, workers=2, progress=False)
        if not rep.ok:
            raise RuntimeError(f"simulation failed: {rep.failed[:3]}")
        preprocess.run(store, scheduler="synchronous")
        log(f"  {model}: simulated {len(rep.written)} sims in {time.perf_counter() - t0:.0f} s; load {load_average()}")
        t0 = time.perf_counter()
        tr = train.run(store, train.TrainConfig(model="cmbnncs-unet5", epochs=epochs), run_name="unet5",
                         device="cpu", progress=False)
        predict.run(store, "unet5", splits=("test",), device="cpu", progress=False)
        log(f"  {model}: UNet5 {epochs} epochs in {time.perf_counter() - t0:.0f} s, valid loss "
            f"{tr.valid_loss[0]:.4g} -> {tr.valid_loss[-1]:.4g}; load {load_average()}")
        for method in ("nilc", "hilc"):
            ok = ilc.run(store, ilc.ILCConfig(method=method), splits=("test",), progress=False)
            if not ok.ok:
                raise RuntimeError(f"{method} failed: {ok.failed[:3]}")
        an = analyze.run(store, progress=False)
        if an.failed:
            raise RuntimeError(f"analysis failed: {an.failed[:3]}")
        results[model] = {run: cube_mae(store, run) for run in ("nilc", "hilc", "unet5")}
    print(f"\n== test MAE (uK_CMB, field I, f_sky 0.8 mask, monopole+dipole removed), nside 32, splits {splits}, "
          f"UNet5 {epochs} epochs; mean +- s.e. over test sims ==")
    print(f"{'method':<10}"
          + "".join(f"{m + ' ' + format(b, 'g') + chr(39):>30}" for m in MODELS for b in REPORT_BEAMS))
    for run in ("nilc", "hilc", "unet5"):
        print(f"{run:<10}" + "".join(f"{results[m][run][b][0]:>20.3f} +- {results[m][run][b][1]:<6.3f}"
                                     for m in MODELS for b in REPORT_BEAMS))
    for m in MODELS:
        order = sorted(("nilc", "hilc", "unet5"), key=lambda k: results[m][k][0.0][0])
        print(f"  ranking on {m} (best first, beam 0): {' < '.join(order)}")
    return {m: {run: {f"beam{b:g}": v[b][:2] for b in REPORT_BEAMS} for run, v in res.items()}
            for m, res in results.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--realism", action="store_true")
    parser.add_argument("--experiment", action="store_true")
    parser.add_argument("--sims", type=int, default=4, help="--realism: sims per sky (default 4)")
    parser.add_argument("--nside", type=int, default=128, help="--realism: nside (default 128)")
    parser.add_argument("--train", type=int, default=100)
    parser.add_argument("--valid", type=int, default=10)
    parser.add_argument("--test", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args(argv)
    if not (args.realism or args.experiment):
        parser.error("choose --realism and/or --experiment")
    summary = {}
    if args.realism:
        summary["realism"] = realism(args.sims, args.nside, ROOT / "docs")
    if args.experiment:
        with tempfile.TemporaryDirectory(prefix="cmbcube-sky-models-") as tmp:
            summary["experiment"] = experiment(Path(tmp), {"train": args.train, "valid": args.valid,
                                                           "test": args.test}, args.epochs)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
