"""The options of each ``cmbcube`` command: one function per command, named after it.

``cmbcube.cli.COMMANDS`` pairs each of these with its handler (``cmbcube.cli_handlers``); a
function receives the command's ``argparse`` sub-parser and adds its arguments.
"""
from __future__ import annotations

import argparse

from cmbcube.networks import DEFAULT as networks_default, LOSSES, UNET_HEADS, help_text as networks_help


def cluster(p) -> None:
    """The Dask options every stage that fans out over a cluster takes (and ``--dry-run``)."""
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="Dask scheduler address (tcp://host:port), or 'synchronous' to run in this process; "
                        "default: a local cluster")
    p.add_argument("--scheduler-file", metavar="FILE", help="Dask scheduler file (dask scheduler --scheduler-file)")
    p.add_argument("--workers", type=int, metavar="N", help="worker processes of the local cluster")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would be computed and which cluster would be started or connected to "
                        "(the sbatch job script for kind slurm), then stop: nothing is started or written")


def no_progress(p) -> None:
    """``--no-progress``: every command that draws a progress bar takes it (cli_handlers.progress_option)."""
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def force_size(p, what: str) -> None:
    p.add_argument("--force-size", action="store_true",
                   help=f"run even if the estimates say {what} (docs/recipes.md: Size limits and --force-size)")


def simulate(p) -> None:
    p.add_argument("recipe", help="recipe YAML file, e.g. recipes/quickstart.yaml")
    p.add_argument("--store", required=True, help="path of the Zarr store to create or resume")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set nside=64 --set splits.train=100 (repeatable)")
    no_progress(p)
    force_size(p, "the store's size, a task's memory or the number of sims exceed the free disk, the "
               "workers' memory limit or the caps")
    cluster(p)


def preprocess(p) -> None:
    p.add_argument("store", help="path of the Zarr store")
    p.add_argument("--split", default="train", help="split the statistics describe (default train)")
    p.add_argument("--force", action="store_true", help="recompute even if up to date")
    no_progress(p)
    cluster(p)


def ilc(p) -> None:
    from cmbcube.science.ilc import METHODS, ILCConfig
    d = ILCConfig()                     # the defaults are ILCConfig's, defined there once
    p.add_argument("store", help="path of the Zarr store")
    p.add_argument("--method", choices=METHODS.names(), default=d.method,
                   help="nilc: needlet ILC, weights per needlet scale and pixel; hilc: harmonic ILC, weights per "
                        f"multipole bin (default {d.method})")
    p.add_argument("--run", help="run name (default: the method's name)")
    p.add_argument("--split", default="test", help="split(s), comma-separated (default test)")
    p.add_argument("--detectors", help="comma-separated GHz (default CMB-ML's 44-857)")
    p.add_argument("--fields", help="comma-separated subset of I,Q,U (default: the cube's)")
    p.add_argument("--peaks", help="cosine needlet peaks, comma-separated (default: CMB-ML's, scaled to the nside)")
    p.add_argument("--gaussian-fwhms", help="Gaussian needlets instead: decreasing FWHMs in arcmin")
    p.add_argument("--common-beam", type=float, default=d.common_beam_arcmin,
                   help=f"output beam FWHM, arcmin (default {d.common_beam_arcmin:g})")
    tolerance = f"{d.bias_tolerance:.0e}".replace("e-0", "e-")          # 1e-3
    p.add_argument("--bias-tolerance", type=float, default=d.bias_tolerance,
                   help="NILC: largest relative ILC bias accepted; sets the smoothing of the needlet covariances "
                        f"(smaller: wider smoothing, fewer local weights; > 0, default {tolerance})")
    from cmbcube.science.foregrounds import COMPONENTS
    nullable = [name for name, c in COMPONENTS.items() if c.sed is not None]
    p.add_argument("--deproject", help=f"SEDs to null, comma-separated: {', '.join(nullable)}")
    p.add_argument("--bin-width", type=int, default=d.bin_width,
                   help=f"HILC multipole bin width (default {d.bin_width})")
    no_progress(p)
    force_size(p, "the predictions' size or a task's memory exceed the free disk or the workers' memory limit")
    cluster(p)


def train(p) -> None:
    p.add_argument("store", help="path of the Zarr store (preprocessed, with finished train and valid sims)")
    p.add_argument("--model", default=networks_default, help=networks_help())
    p.add_argument("--run", help="run name (default: the model's name)")
    p.add_argument("--epochs", type=int, help="passes over the training skies (default 10)")
    p.add_argument("--batch-size", type=int, help="samples per optimiser step (default: the model's; cmbNNCS 12, "
                                                  "patch-unet 16, petroff 1)")
    p.add_argument("--repeats", type=int, help="optimiser steps per batch (cmbNNCS: 3)")
    p.add_argument("--lr-start", type=float, help="Adam learning rate at the first step (default: the model's; "
                                                  "cmbNNCS 0.1)")
    p.add_argument("--lr-end", type=float, help="learning rate at the last step; it falls geometrically from "
                                                "--lr-start (default: the model's; cmbNNCS 1e-6)")
    p.add_argument("--loss", choices=LOSSES, help="heteroscedastic: petroff (its default)")
    p.add_argument("--detectors", help="input detectors, comma-separated (default 100,143,217,353)")
    p.add_argument("--fields", help="fields of inputs and target, comma-separated (default I)")
    p.add_argument("--transform", help="input transform: none, minmax, standardize, robust, maxabs, "
                                       "noiseless-maxabs (petroff), scale:S[,S...]")
    p.add_argument("--target-transform", help="target transform (cmbNNCS: scale:5; petroff: unit-maxabs)")
    p.add_argument("--patch-side", type=int, help="patch UNet: patch side in pixels (power of two)")
    p.add_argument("--train-sims", type=int, help="use only the first N train sims")
    p.add_argument("--grad-clip", type=float, metavar="NORM", help="clip the gradient norm (petroff default: 10)")
    p.add_argument("--checkpoint-every", type=int, metavar="N",
                   help="write a checkpoint every N epochs (and after the last; default 1)")
    p.add_argument("--early-stopping", type=int, metavar="PATIENCE", help="stop after PATIENCE epochs without "
                                                                          "validation improvement (default 10; "
                                                                          "0: off)")
    p.add_argument("--augment", choices=("none", "rot90", "rot90-flip"),
                   help="exact sky symmetries drawn per training sample (sky and faces views): rot90 rotates by "
                        "k*90 degrees about the pole, rot90-flip also reflects in longitude (U negated); "
                        "default none")
    p.add_argument("--precision", choices=("fp32", "bf16"),
                   help="fp32 (default), or bf16: forward pass and loss under torch.autocast (for a GPU)")
    p.add_argument("--channels-last", action="store_const", const=True,
                   help="2-D views (cmbNNCS faces, patches): NHWC memory layout (for a GPU); default off")
    p.add_argument("--head", choices=UNET_HEADS,
                   help="the network's last layer: published (cmbNNCS: PReLU), linear, or linear-path (linear plus "
                        "a per-pixel linear combination of the inputs; cmbNNCS UNets only)")
    p.add_argument("--published", action="store_true", help="train with the network's published settings exactly "
                                                            "(cmbNNCS's, Petroff et al.'s): no early stopping unless "
                                                            "--early-stopping is given")
    p.add_argument("--seed", type=int, help="torch seed of the weights' initialisation and the batch order "
                                            "(default 0)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--deterministic", action="store_true", help="torch deterministic algorithms")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="an existing run of that name: drop it and everything "
                                                            "made from it (predictions, metrics, spectra, losses, "
                                                            "checkpoints), then train from scratch")
    p.add_argument("--keep-checkpoints", choices=("best-last", "all"),
                   help="best-last (default): keep the last checkpoint and the one of the lowest validation loss; "
                        "all: every saved epoch")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    no_progress(p)
    force_size(p, "the run's checkpoints exceed the free disk next to the store")


def epoch_choice(text: str):
    """``predict --epoch``: best, last or a number (argparse reports anything else with exit 2)."""
    if text in ("best", "last"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: allowed: best, last, or an epoch number") from None


def predict(p) -> None:
    p.add_argument("store", help="path of the Zarr store")
    p.add_argument("--run", required=True, help="name of the trained run whose checkpoint predicts")
    p.add_argument("--split", default="test", help="split(s), comma-separated (default test)")
    p.add_argument("--epoch", type=epoch_choice, help="checkpoint: best (default: the lowest validation loss), "
                                                      "last, or an epoch number")
    p.add_argument("--mc-samples", type=int, metavar="N", help="petroff: Monte Carlo passes with dropout on "
                                                               "(default 100); mean -> pred, spread -> pred_sigma")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    no_progress(p)
    force_size(p, "the predictions' size exceeds the free disk")


def analyze(p) -> None:
    p.add_argument("store", help="path of the Zarr store")
    p.add_argument("--runs", default="all", help="comma-separated run names, or all (default)")
    p.add_argument("--split", default="test", help="split(s), comma-separated (default test)")
    p.add_argument("--f-sky", type=float, default=0.8, help="sky fraction kept by the foreground mask (default 0.8)")
    p.add_argument("--mask", help="HEALPix FITS mask file instead (1 = keep)")
    p.add_argument("--estimator", default="namaster", help="power spectra: namaster (default: mode-coupling "
                   "inversion, purified B; needs pymaster) or pseudo-fast (naive pseudo-C_l, BB leaks)")
    no_progress(p)
    force_size(p, "the analysis' size or a task's memory exceed the free disk or the workers' memory limit")
    cluster(p)


def report(p) -> None:
    p.add_argument("store", help="path of the analysed Zarr store")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--split", default="test", help="the analysed split to report (default test)")
    p.add_argument("--sims", default="0", help="sims to map, comma-separated (default 0)")
    store_version(p)


def run(p) -> None:
    p.add_argument("recipe", help="recipe YAML file, e.g. recipes/quickstart.yaml")
    p.add_argument("--store", required=True, help="path of the Zarr store to create or resume")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set nside=64 --set pipeline.epochs=2 (repeatable)")
    p.add_argument("--report", help="report directory (default: STORE with .report)")
    p.add_argument("--device", default="auto", help="training and prediction device: cpu, cuda or auto (default)")
    no_progress(p)
    force_size(p, "a stage's store growth, a task's memory or the number of sims exceed the free disk, "
               "the workers' memory limit or the caps")
    cluster(p)


def view(p) -> None:
    p.add_argument("store", help="path or URL (http(s)://, s3://...) of the Zarr store")
    p.add_argument("--split", default="test", help="train, valid or test (default test)")
    p.add_argument("--sim", type=int, default=0, help="sim index within the split (default 0)")
    p.add_argument("--detector", type=int, help="GHz (obs and components)")
    p.add_argument("--field", default="I", help="I, Q or U (default I)")
    p.add_argument("--product", default="obs", help="obs, cmb, pred (with --run), noise, or a component name")
    p.add_argument("--run", help="run name for --product pred")
    p.add_argument("--rot", help="LON,LAT in degrees: centre of a gnomonic zoom")
    p.add_argument("--zoom", action="store_true", help="gnomonic zoom (at --rot, default 0,0)")
    p.add_argument("--out", metavar="PATH",
                   help="PNG file, or an existing directory to put it in (default: the folder STORE.views next "
                        "to the store, or the current directory for a store given as a URL; the file is named "
                        "after the selection); the path written is printed")
    store_version(p)


def ingest_cmbml(p) -> None:
    p.add_argument("dir", help="the CMB-ML dataset folder (holding Simulation/) or its Simulation folder")
    p.add_argument("--store", required=True, help="path of the Zarr store to create or resume")
    p.add_argument("--name", help="dataset name recorded in the store (default: cmbml-<folder name>)")
    p.add_argument("--units", choices=("uK_CMB", "K_CMB", "native"),
                   help="units of the store (default: those of the files; uK_CMB when they mix)")
    no_progress(p)
    force_size(p, "the store's size or the number of sims exceed the free disk or the caps")
    cluster(p)


def export_cmbml(p) -> None:
    p.add_argument("store", help="path of the Zarr store")
    p.add_argument("dir", help="destination folder")
    p.add_argument("--split", default="train,valid,test", help="split(s), comma-separated (default: all)")
    p.add_argument("--units", choices=("uK_CMB", "K_CMB", "store"), default="uK_CMB",
                   help="units of the FITS maps (default uK_CMB, as CMB-ML's datasets; store: the store's own)")
    p.add_argument("--overwrite", action="store_true", help="rewrite sims already complete in DIR")
    no_progress(p)
    cluster(p)


def store_version(p) -> None:
    p.add_argument("--version", dest="store_version", metavar="NAME",
                   help="Icechunk stores: read this tag, branch or snapshot id (default: the branch main)")


def info(p) -> None:
    p.add_argument("store", help="path or URL (http(s)://, s3://, icechunk+...) of the Zarr store")
    store_version(p)


def tag(p) -> None:
    p.add_argument("store", help="an Icechunk store (icechunk+file:///PATH or icechunk+s3://BUCKET/PREFIX)")
    p.add_argument("name", help="the tag: 1-100 letters, digits, '.', '_', '-' (tags never move)")
    store_version(p)


def verify(p) -> None:
    p.add_argument("store", help="path of the Zarr store, or an Icechunk store")
    store_version(p)
    p.add_argument("--clear", action="store_true",
                   help="clear the done-flags of damaged units (and delete their damaged files) so rerunning "
                        "the stage rebuilds exactly them")
    p.add_argument("--products", action="append", metavar="NAMES",
                   help="comma-separated products to check (default: all present), e.g. obs,cmb or pred")
    p.add_argument("--threads", type=int, metavar="N", help="reader threads (default: 2 per core, at most 8)")
    no_progress(p)


def validate(p) -> None:
    p.add_argument("store", help="path of the Zarr store")
    p.add_argument("--sims", type=int, default=4, metavar="N",
                   help="finished sims to check (test split first; default 4; two are needed for independence)")
    p.add_argument("--no-galaxy", action="store_true", help="skip the synthetic Galaxy's statistics (the slow part)")
    p.add_argument("--out", metavar="FILE", help="also write the checks as JSON to FILE")


def drop(p) -> None:
    p.add_argument("store", help="path of the Zarr store, an Icechunk store (icechunk+...) or s3://...")
    p.add_argument("product", help="obs, cmb, components, noise, stats, pred, analysis or run")
    p.add_argument("--run", help="one run (with pred, analysis, run)")
    p.add_argument("--force", action="store_true", help="drop obs or cmb even though products made from them remain")


def assets(p) -> None:
    p.add_argument("recipe", help="recipe YAML file whose external files are listed")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set foregrounds.model=pysm3 (repeatable)")
    p.add_argument("--fetch", action="store_true", help="download the missing needed files")
    p.add_argument("--optional", action="store_true", help="with --fetch: the optional ones too (mask)")
    p.add_argument("--destination", metavar="DIR",
                   help="folder for files the recipe does not place itself (pysm3 templates without "
                        "foregrounds.data_dir, masks); default ./cmbcube-assets")
    p.add_argument("--base-url", metavar="URL", help="a mirror holding <kind>/<path> files and manifest.json")
    p.add_argument("--connect-timeout", type=float, default=5.0, metavar="S",
                   help="seconds to wait for a connection before reporting offline (default 5)")
    no_progress(p)


def check_recipe(p) -> None:
    p.add_argument("recipe", help="recipe YAML file to check")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set nside=64 (repeatable)")
    p.add_argument("--store", help="where the store would go: its file system's free space is checked "
                                   "(default: the current directory)")
    p.add_argument("--workers", type=int, metavar="N", help="local workers (memory per worker is checked against "
                                                            "the machine's memory / N)")
    force_size(p, "the store's size, a task's memory or the number of sims exceed the free disk, the "
               "workers' memory limit or the caps")
