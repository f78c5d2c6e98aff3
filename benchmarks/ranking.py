"""The method ranking at several training-set sizes: NILC, HILC and the networks on the same test skies.

Run from the repository root (nice it: it is CPU-bound)::

    python benchmarks/ranking.py --quick                      # nside 32, 2 and 4 skies, 2 networks (~1 min)
    python benchmarks/ranking.py --sizes 16,64,256,1024      # the study (hours on 2 cores; see --help)
    python benchmarks/ranking.py --sizes 16,64,256 --limit petroff=64 --published
                                   # the slow network on fewer skies; each network also as published
    python benchmarks/ranking.py --work DIR ...               # keep the store in DIR: a rerun adds what is missing
    python benchmarks/ranking.py --work DIR --train 256 --sizes 64 --variant robust:transform=robust
                                   # other training settings beside the defaults, on the same skies
    python benchmarks/ranking.py --work A --train 256 --sizes 16,64,256 --extra-store B/ranking_n32.zarr
                                   # B: the same sky made with --train 1024 --sizes 1024 (its runs join the
                                   # table and figure; refused unless the test skies and HILC scores are equal)

One store is simulated once (the default filamentary sky, 9 Planck-like detectors, field I, the
recipe's defaults otherwise) with max(sizes) train skies, a valid split and a test split.  NILC and
HILC (CMB-ML's settings) clean the test split.  Every network in --models is trained on the first N
train skies for each N in --sizes (``TrainConfig.train_sims``; cmbcube's defaults, ``train.defaults``,
or with --published its published settings, at most --epochs epochs with early stopping on the
validation loss, patience --patience), then predicts the test split.  ``pixel-linear`` (one learned
linear combination of the inputs per pixel) is the baseline a network must beat.  The analysis stage
scores every run the same way (f_sky 0.8 Galactic mask, monopole and dipole removed, common beam 20.6').

For each training-set size the script prints and writes (benchmarks/results/ranking_DATE.txt) the
test MAE and RMSE of every method, mean over test sims with a 95% bootstrap interval, the mean
relative error of the TT spectrum against the truth (``cl_err_truth``), the residual's TT power over
the truth's below nside and from nside to 2 nside (NaMaster bandpowers, summed over the test skies:
which scales a method gets wrong), and every method minus HILC on the same test skies (paired, 95%
bootstrap interval; significant when it excludes 0), using
``cmbcube.science.ranking``.  The figure (docs/ranking_DATE.png, or --figure) shows the MAE against
the number of training skies per network with its interval, the ILCs as flat bands.  The last line of
stdout is one JSON object.
"""
from __future__ import annotations

import argparse
import datetime
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

ILCS = ("nilc", "hilc")
BEAM = 20.6


def build_store(store: str, nside: int, train: int, valid: int, test: int, seed: int, workers: int) -> None:
    from cmbcube import recipe
    from cmbcube.stages import preprocess, simulate
    r = recipe.validate({"name": f"ranking-{nside}", "nside": nside, "seed": seed, "fields": ["I"], "keep": ["cmb"],
                         "splits": {"train": train, "valid": valid, "test": test}})
    t0 = time.perf_counter()
    rep = simulate.run(r, store, workers=workers, progress=False)
    if not rep.ok:
        raise RuntimeError(f"simulation failed: {rep.failed[:3]}")
    preprocess.run(store, scheduler="synchronous")
    log(f"simulated {len(rep.written)} new sim(s) in {time.perf_counter() - t0:.0f} s; load {load_average()}")


def runs_in(store: str) -> set:
    import cmbcube
    return {str(r) for r in cmbcube.open(store).run.values} if "run" in cmbcube.open(store).coords else set()


def parse_variant(text: str) -> tuple[str, dict]:
    """``NAME:key=value,key=value`` (TrainConfig fields; values as YAML scalars) -> (NAME, settings)."""
    import yaml
    name, _, rest = text.partition(":")
    settings = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        settings[key.strip()] = yaml.safe_load(value)
        if isinstance(settings[key.strip()], str):          # YAML 1.1 reads 1e-5 (no dot) as a string
            try:
                settings[key.strip()] = float(value)
            except ValueError:
                pass
    return name, settings


def train_all(store: str, models, sizes, epochs: int, patience: int, variants=(("", {}),), limits=None) -> dict:
    made = {}
    for model in models:
        for label, settings in variants:
            for n in sizes:
                if n > (limits or {}).get(model, n):
                    continue
                name = f"{model}-{label}-n{n}" if label else f"{model}-n{n}"
                made[name] = (f"{model}-{label}" if label else model, n)
                config = config_for(model, n, epochs, patience, settings)
                if name in runs_in(store):
                    check_same_settings(store, name, config)
                    log(f"{name}: already in the store")
                    continue
                train_one(store, name, config)
    return made


def check_same_settings(store: str, name: str, config) -> None:
    """A run already in the store is reused only if it was trained with the settings asked for now."""
    import cmbcube
    recorded = json.loads(str(cmbcube.open(store).run_config.sel(run=name).values))
    changed = config.changed_from(recorded)
    if changed:
        raise SystemExit(f"run {name!r} in {store} was trained with other settings than this command asks for ("
                         + ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items()))
                         + f"); nothing was changed. `cmbcube drop {store} run --run {name}` to train it again, or "
                         "rank it under another --tag/--variant name")


PUBLISHED = "published"          # --variant label: the network's published settings (train --published)


def config_for(model: str, n: int, epochs: int, patience: int, settings: dict):
    from cmbcube.stages import train
    base = train.defaults(model, published=settings.get(PUBLISHED, False))
    settings = {k: v for k, v in settings.items() if k != PUBLISHED}
    return train.TrainConfig(**{**base, "model": model, "epochs": epochs, "early_stopping": patience,
                                "train_sims": n, **settings})


def train_one(store: str, name: str, config) -> None:
    from cmbcube.stages import predict, train
    t0 = time.perf_counter()
    rep = train.run(store, config, run_name=name, device="cpu", progress=False)
    predict.run(store, name, splits=("test",), device="cpu", progress=False)
    log(f"{name}: {len(rep.valid_loss)} epochs in {time.perf_counter() - t0:.0f} s, valid loss "
        f"{rep.valid_loss[0]:.4g} -> {min(rep.valid_loss):.4g}; load {load_average()}")


def scores(store: str) -> dict:
    """metric -> run -> {sim: value} on the test split, field I, beam 20.6'."""
    import cmbcube
    from cmbcube.stages.report_ranking import per_run_values
    ds = cmbcube.open(store)
    ds = ds.assign_coords(beam=ds.beam_fwhm.values)
    out = {m: per_run_values(ds, "test", "I", BEAM, m) for m in ("mae", "rmse", "cl_err_truth")}
    out["resid_power"] = residual_power(ds)
    out["training"] = training(ds)
    return out


def training(ds) -> dict:
    """run -> (epochs trained, epoch cap, patience, best epoch) of every trained run: which runs stopped early
    and which hit the cap (still improving, perhaps)."""
    if "loss_valid" not in ds:
        return {}
    out = {}
    for run in ds.run.values:
        valid = ds.loss_valid.sel(run=run).values
        done = np.flatnonzero(np.isfinite(valid))
        if len(done):
            config = json.loads(str(ds.run_config.sel(run=run).values))
            out[str(run)] = (int(done[-1]) + 1, int(config.get("epochs", -1)), config.get("early_stopping"),
                             int(np.nanargmin(valid)) + 1)
    return out


def training_lines(values: dict, made: dict) -> list:
    lines = ["", "== training: epochs trained / at most, early-stopping patience, epoch of the best valid loss "
             "(the checkpoint that predicted) =="]
    for run in sorted(made):
        if run in values["training"]:
            n, cap, patience, best = values["training"][run]
            why = "the cap" if n >= cap else "early stop" if patience and n - best >= patience else "unfinished"
            lines.append(f"{run:<40} {n:>3} / {cap:<3} patience {patience}, best epoch {best:>3} ({why})")
    return lines


def extra_runs(store: str, other: str, values: dict) -> tuple[dict, dict]:
    """The network runs of ``other`` (another ranking store) and their scores, after checking that both stores
    hold the same test skies (bit for bit) and score HILC the same (MAE and RMSE per sim within 1e-9)."""
    import cmbcube
    here, there = cmbcube.open(store), cmbcube.open(other)
    n = int(here.n_sims.sel(split="test"))
    for name in ("obs", "cmb"):
        if n != int(there.n_sims.sel(split="test")) or not np.array_equal(
                here[name].sel(split="test").isel(sim=slice(0, n)).values,
                there[name].sel(split="test").isel(sim=slice(0, n)).values, equal_nan=True):
            raise SystemExit(f"--extra-store {other}: its test split differs from {store}'s ({name}); "
                             "only stores of the same recipe seed, nside and test split can be ranked together")
    theirs = scores(other)
    for metric in ("mae", "rmse"):
        mine, them = values[metric].get("hilc", {}), theirs[metric].get("hilc", {})
        if set(mine) != set(them) or any(abs(mine[s] - them[s]) > 1e-9 * max(1.0, abs(mine[s])) for s in mine):
            raise SystemExit(f"--extra-store {other}: HILC {metric} differs from {store}'s on the same test "
                             "skies (another mask or analysis): the runs cannot be ranked together")
    made = {}
    for run in theirs["mae"]:
        model, _, size = run.rpartition("-n")
        if run not in ILCS and size.isdigit():
            made[run] = (model, int(size))
    log(f"--extra-store {other}: same test skies and HILC scores; adds {sorted(made)}")
    return made, theirs


def merge(values: dict, extra: dict, made: dict, extra_made: dict) -> None:
    """Add ``extra``'s network runs to ``values`` and ``made``; a run name in both stores is refused."""
    clash = sorted(set(extra_made) & set(values["mae"]))
    if clash:
        raise SystemExit(f"--extra-store: run(s) {clash} exist in both stores; drop one (cmbcube drop run --run NAME)")
    for metric, per_run in extra.items():
        for run in extra_made:
            if run in per_run:
                values[metric][run] = per_run[run]
    made.update(extra_made)


def residual_power(ds) -> dict:
    """run -> (low, high): the residual's TT power over the truth's, summed over the test sims and the
    bins below nside (low) and from nside to 2 nside (high): where on the sky's scales a method errs."""
    nside = int(ds.attrs["nside"])
    spec = ds.spectra.sel(split="test", spectrum="TT")
    done = ds.analysis_done.sel(split="test").values.astype(bool)
    ell = spec.ell_bin.values
    low, high = (ell >= 2) & (ell < nside), (ell >= nside) & (ell < 2 * nside)
    out = {}
    for r, run in enumerate(ds.run.values):
        sims = np.nonzero(done[r])[0]
        if not len(sims):
            continue
        resid = spec.sel(kind="resid").isel(run=r, sim=sims).values
        truth = spec.sel(kind="truth").isel(run=r, sim=sims).values
        out[str(run)] = tuple(float(np.nansum(resid[:, band]) / np.nansum(truth[:, band])) for band in (low, high))
    return out


def table(values: dict, made: dict, sizes) -> tuple[list, dict]:
    from cmbcube.science import ranking
    lines, summary = [], {}
    mae, rmse, clerr = values["mae"], values["rmse"], values["cl_err_truth"]
    for n in sizes:
        runs = [*ILCS, *(name for name, (_, size) in made.items() if size == n)]
        lines += ["", f"== {n} training skies: test split, field I, beam {BEAM:g}', f_sky 0.8 mask ==",
                  f"{'method':<22}{'sims':>5}  {'MAE [95%] uK':<26}{'RMSE [95%] uK':<26}{'dCl/Cl TT':>10}  "
                  f"{'MAE minus HILC [95%]':<28}{'signif.':>8}  {'resid/truth TT ell<nside, nside-2nside':>40}"]
        for run in runs:
            if run not in mae:
                continue
            a, r = ranking.bootstrap_mean(list(mae[run].values())), ranking.bootstrap_mean(list(rmse[run].values()))
            cl = float(np.mean(list(clerr.get(run, {0: np.nan}).values())))
            shared = sorted(set(mae[run]) & set(mae.get("hilc", {})))
            p = ranking.paired(run, [mae[run][s] for s in shared], "hilc", [mae["hilc"][s] for s in shared]) \
                if run != "hilc" and len(shared) > 1 else None
            diff = (f"{p.difference.mean:+.2f} [{p.difference.low:+.2f}, {p.difference.high:+.2f}]" if p else "-")
            sig = ("yes" if p.significant else "no") if p else "-"
            power = values["resid_power"].get(run, (np.nan, np.nan))
            lines.append(f"{run:<22}{a.n:>5}  {f'{a.mean:.2f} [{a.low:.2f}, {a.high:.2f}]':<26}"
                         f"{f'{r.mean:.2f} [{r.low:.2f}, {r.high:.2f}]':<26}{cl:>10.3f}  {diff:<28}{sig:>8}  "
                         f"{f'{power[0]:.4f}, {power[1]:.4f}':>40}")
            summary.setdefault(str(n), {})[run] = {"mae": [a.mean, a.low, a.high], "rmse": [r.mean, r.low, r.high],
                                                   "cl_err_truth": cl, "resid_power_low_high": list(power),
                                                   "minus_hilc": [p.difference.mean, p.difference.low,
                                                                  p.difference.high] if p else None}
    return lines, summary


def figure(values: dict, made: dict, sizes, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cmbcube.science import ranking
    mae = values["mae"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for k, run in enumerate(ILCS):
        if run in mae:
            iv = ranking.bootstrap_mean(list(mae[run].values()))
            ax.axhline(iv.mean, color=f"C{k}", lw=1.5, label=f"{run.upper()} (no training)")
            ax.axhspan(iv.low, iv.high, color=f"C{k}", alpha=0.15)
    models = sorted({model for model, _ in made.values()})
    for k, model in enumerate(models, start=len(ILCS)):
        pts = [(n, ranking.bootstrap_mean(list(mae[f"{model}-n{n}"].values()))) for n in sizes
               if f"{model}-n{n}" in mae]
        if pts:
            x = np.array([n for n, _ in pts])
            y = np.array([iv.mean for _, iv in pts])
            err = np.array([[iv.mean - iv.low for _, iv in pts], [iv.high - iv.mean for _, iv in pts]])
            ax.errorbar(x, y, yerr=err, marker="o", color=f"C{k}", capsize=3, label=model)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("training skies")
    ax.set_ylabel("test MAE [uK_CMB] at 20.6', f_sky 0.8 (95% interval)")
    ax.set_title("Method ranking vs training-set size (default sky, field I)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="nside 32, sizes 2,4, 2 valid / 3 test sims, "
                        "cmbnncs-unet5 and pixel-linear, at most 2 epochs: the whole path in about a minute (tests)")
    parser.add_argument("--nside", type=int, default=32)
    parser.add_argument("--sizes", default="16,64,256,1024", help="training-set sizes (comma list)")
    parser.add_argument("--train", type=int, help="train sims in the store (default: the largest size; give "
                        "the earlier value to add runs to a --work store made with other sizes)")
    parser.add_argument("--valid", type=int, default=32)
    parser.add_argument("--test", type=int, default=64)
    parser.add_argument("--models", default="cmbnncs-unet5,pixel-linear,patch-unet,petroff")
    parser.add_argument("--epochs", type=int, default=60, help="most epochs per training (default 60)")
    parser.add_argument("--patience", type=int, default=8, help="early stopping patience (default 8)")
    parser.add_argument("--seed", type=int, default=27182)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                        help="also train each network with these TrainConfig settings, as runs MODEL-NAME-nN "
                             "(e.g. robust:transform=robust; repeatable); measured side by side with the defaults")
    parser.add_argument("--limit", default="", metavar="MODEL=N,...", help="train MODEL on at most N skies "
                        "(the slow networks on 2 cores), e.g. petroff=64")
    parser.add_argument("--published", action="store_true", help="also train each network with its published "
                        "settings (train --published, with the same early stopping), as runs MODEL-published-nN")
    parser.add_argument("--work", help="keep the store in this folder (a rerun adds what is missing)")
    parser.add_argument("--tag", help="suffix of the results file and figure names (default: _variants with "
                        "--variant, none otherwise)")
    parser.add_argument("--figure", help="PNG path (default docs/ranking_DATE.png; none with --quick)")
    parser.add_argument("--extra-store", action="append", default=[], metavar="PATH",
                        help="also score the network runs of another ranking store of the same sky (a --work store "
                             "made with a larger --train): refused unless its test skies and its HILC scores equal "
                             "this store's (repeatable)")
    args = parser.parse_args(argv)
    if args.quick:              # its sizes, except where an option was given
        for key, value in dict(sizes="2,4", valid=2, test=3, models="cmbnncs-unet5,pixel-linear", epochs=2,
                               patience=1).items():
            if getattr(args, key) == parser.get_default(key):
                setattr(args, key, value)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    models = [m for m in args.models.split(",") if m]
    date = datetime.date.today().isoformat()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="cmbcube-ranking-"))
    work.mkdir(parents=True, exist_ok=True)
    store = str(work / f"ranking_n{args.nside}.zarr")
    log(f"ranking study: nside {args.nside}, sizes {sizes}, models {models}, store {store}; load {load_average()}")
    t_start = time.perf_counter()
    build_store(store, args.nside, args.train or max(sizes), args.valid, args.test, args.seed, args.workers)
    from cmbcube.stages import analyze, ilc
    for method in ILCS:
        if method not in runs_in(store):
            rep = ilc.run(store, ilc.ILCConfig(method=method), splits=("test",), progress=False)
            if not rep.ok:
                raise RuntimeError(f"{method} failed: {rep.failed[:3]}")
    variants = [("", {})] + ([(PUBLISHED, {PUBLISHED: True})] if args.published else []) + \
        [parse_variant(v) for v in args.variant]
    limits = {m: int(n) for m, _, n in (item.partition("=") for item in args.limit.split(",") if item)}
    made = train_all(store, models, sizes, args.epochs, args.patience, variants, limits)
    an = analyze.run(store, progress=False)
    if an.failed:
        raise RuntimeError(f"analysis failed: {an.failed[:3]}")
    values = scores(store)
    for other in args.extra_store:
        extra_made, extra_values = extra_runs(store, other, values)
        merge(values, extra_values, made, extra_made)
        sizes = sorted({*sizes, *(n for _, n in extra_made.values())})
    lines, summary = table(values, made, sizes)
    lines += training_lines(values, made)
    head = [f"# benchmarks/ranking.py {' '.join(argv if argv is not None else sys.argv[1:])}",
            f"# {date}; nside {args.nside}; train sizes {sizes}; valid {args.valid}; test {args.test}; models "
            f"{models}; at most {args.epochs} epochs, early stopping patience {args.patience}; "
            f"wall {time.perf_counter() - t_start:.0f} s; load {load_average()}"]
    text = "\n".join(head + lines) + "\n"
    print(text)
    if not args.quick:
        # variants get their own file: the study's is kept
        tag = args.tag if args.tag is not None else ("_variants" if args.variant or args.published else "")
        out = ROOT / "benchmarks" / "results" / f"ranking_{date}{tag}.txt"
        out.write_text(text)
        figure(values, made, sizes, Path(args.figure) if args.figure else ROOT / "docs" / f"ranking_{date}{tag}.png")
    elif args.figure:
        figure(values, made, sizes, Path(args.figure))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
