"""The predict stage: a trained run's full-sky maps written into the cube's ``pred`` product.

By default the run's best-validation checkpoint predicts (``--epoch last`` or ``--epoch N`` for another
kept one). Each finished sim of the requested splits is read in the view the run's network reads, passed
through the network, its target transform inverted and put back on the sphere (NESTED), then
written under the run's name; already predicted sims are skipped. A Bayesian network
(Network.mc_samples > 0) is run for Monte Carlo passes with dropout on: their mean goes to
``pred`` and the per-pixel sigma to ``pred_sigma``.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from cmbcube import cube
from cmbcube.compute.fanout import StageReport
from cmbcube.cube.datasets import CubeDataset
from cmbcube.errors import InputError, MissingFileError, param
from cmbcube.networks import NETWORKS
from cmbcube.science import geometry, seeds
from cmbcube.stages.checkpoints import best_epoch, checkpoint_path, load_checkpoint, saved_epochs
from cmbcube.stages.train import TrainConfig, build_network, datasets_for, device_for


@dataclasses.dataclass
class PredictReport(StageReport):
    run: str
    epoch: int
    mc_samples: int = 0


def chosen_checkpoint(run_name: str, out_dir: Path, epoch: int | str | None = None) -> Path:
    """The checkpoint ``predict`` reads: ``epoch`` None or ``"best"``: the kept one of the lowest validation
    loss (training loss without a valid split; cmbcube.stages.checkpoints.best_epoch, judged on the losses
    recorded in the last checkpoint); ``"last"``: the last one; an int: that epoch's."""
    kept = saved_epochs(out_dir)
    if not kept:
        raise MissingFileError(f"run {run_name!r}: no checkpoint in {out_dir}; train it first (cmbcube train)")
    if epoch in (None, "best"):
        state = load_checkpoint(checkpoint_path(out_dir, kept[-1]), "cpu")
        epoch = best_epoch(kept, state["train_loss"], state["valid_loss"])
    elif epoch == "last":
        epoch = kept[-1]
    elif not isinstance(epoch, int) or isinstance(epoch, bool):
        raise InputError(f"{param('epoch')} {epoch!r}: allowed: best (default), last, or an epoch number")
    if epoch not in kept:
        raise MissingFileError(f"{param('epoch')} {epoch}: run {run_name!r} has no checkpoint for it in {out_dir}; "
                               "kept: "
                               f"epoch(s) {', '.join(map(str, kept))} (cmbcube train keeps the last and the best "
                               f"unless {param('keep_checkpoints', 'all')})")
    return checkpoint_path(out_dir, epoch)


def run(store: str, run_name: str, splits=("test",), epoch: int | str | None = None, device: str | None = None,
        progress: bool | None = None, model=None, mc_samples: int | None = None,
        force_size: bool = False) -> PredictReport:
    """Write the run's predictions for the finished sims of ``splits`` (resumable per sim).

    ``epoch``: the checkpoint (see chosen_checkpoint: default the best-validation one).
    ``mc_samples``: Monte Carlo passes with dropout on (Bayesian networks only; default the
    network's Network.mc_samples): the mean goes to ``pred``, the per-pixel sigma to ``pred_sigma``.
    ``model`` (testing hook): a torch module used instead of the checkpoint's.
    """
    from cmbcube.progress import iterate
    cube.require_store(store)
    cube.check_run_name(run_name)
    irun = cube.run_index(store, run_name)
    stored = cube.run_config(store, irun)
    if "model" not in stored and model is None:       # an ILC run (its config names a method): no network
        raise InputError(f"{param('run_name', dest='run')} {run_name!r}: a {stored.get('method', 'non-network')} run, "
                         "not a trained network; "
                         "cmbcube predict runs the networks trained with cmbcube train (cmbcube ilc writes its own "
                         "predictions)")
    config = TrainConfig.from_dict(stored)
    spec = NETWORKS.get(config.model)
    bayesian = spec.uncertainty
    if mc_samples is not None and not bayesian:
        sampled = [name for name, other in NETWORKS.items() if other.uncertainty]
        raise InputError(f"{param('mc_samples')}: run {run_name!r} is a {config.model} (no dropout at inference); "
                         f"Monte Carlo sampling needs {param('model')} {' or '.join(sampled)}")
    mc_samples = (spec.mc_samples if mc_samples is None else int(mc_samples)) if bayesian else 0
    if bayesian and mc_samples < 1:
        raise InputError(f"{param('mc_samples')} {mc_samples}: must be >= 1")
    dev = device_for(device)
    recorded = cube.run_epoch(store, irun)
    done_any = cube.pred_done_count(store, irun)
    if model is None:
        out_dir = Path(stored["checkpoint_dir"])
        if epoch is None and done_any and recorded in saved_epochs(out_dir):
            epoch = recorded             # finish what was started with the checkpoint it was started with
        ckpt = chosen_checkpoint(run_name, out_dir, epoch)
        state = load_checkpoint(ckpt, dev)
        epoch = int(state["epoch"])
    else:
        epoch = epoch if isinstance(epoch, int) else 0
    if done_any and recorded != epoch:
        raise InputError(f"run {run_name!r} already holds predictions from epoch {recorded}; predicting epoch {epoch} "
                         f"into it would mix checkpoints (train into a new {param('run')}, or drop the predictions)")
    todo = cube.run_pending(store, irun, splits)
    report = PredictReport(run_name, epoch, mc_samples)
    if not todo:
        return report
    from cmbcube.compute import limits
    nbytes, files = limits.prediction_bytes(store, len(todo), uncertainty=bool(bayesian))
    limits.check_growth(store, f"predict {run_name}", nbytes, files, 0, force=force_size)
    t0 = time.perf_counter()
    if bayesian:       # runs trained before pred_sigma existed get it now (same configuration: no mismatch)
        cube.ensure_run(store, run_name, config.model, stored, cube.truth_beam(store), uncertainty=True)
    if model is None:
        model = build_network(config, datasets_for(store, config, splits[0]))
        model.load_state_dict(state["model"])
    model = model.to(dev).eval()
    cube.set_run_epoch(store, irun, epoch)
    fields_all = cube.fields(store)
    datasets = {}
    for split, sim in iterate(todo, f"predict {run_name}", progress=progress,
                              where=f"{store} pred[run={run_name}] (epoch-{epoch} checkpoint)"):
        ds = datasets.get(split) or datasets.setdefault(split, datasets_for(store, config, split))
        sigma = None
        if bayesian:
            maps, sigma_maps = predict_sim_mc(model, ds, sim, dev, mc_samples, spec.mc_predict,
                                              seeds.derive_seed(config.seed, split, sim, "mc-dropout"))
            sigma = np.full((len(fields_all), maps.shape[-1]), np.nan, dtype=np.float32)
        else:
            maps = predict_sim(model, ds, sim, dev)
        full = np.full((len(fields_all), maps.shape[-1]), np.nan, dtype=np.float32)
        for k, f in enumerate(config.fields):
            full[fields_all.index(f)] = maps[k]
            if sigma is not None:
                sigma[fields_all.index(f)] = sigma_maps[k]
        cube.write_prediction(store, irun, split, sim, full, sigma)
        report.written.append((split, sim))
    cube.consolidate(store)
    report.seconds = time.perf_counter() - t0
    return report


def predict_sim(model, ds: CubeDataset, sim: int, dev) -> np.ndarray:
    """(target fields, npix) NESTED physical-unit prediction of one sim."""
    import torch
    with torch.no_grad():
        if ds.view == "faces":
            x = torch.from_numpy(geometry.to_faces(ds.transform.forward(ds.read_inputs(sim))))[None].to(dev)
            y = model(x)[0].double().cpu().numpy()
            maps = geometry.from_faces(y)
        elif ds.view == "patches":
            x = ds.transform.forward(ds.read_inputs(sim))
            patches = torch.from_numpy(geometry.to_patches(x, ds.patch_side)).permute(1, 0, 2, 3).to(dev)
            outs = torch.cat([model(patches[i:i + 64]) for i in range(0, patches.shape[0], 64)])
            maps = geometry.from_patches(outs.permute(1, 0, 2, 3).double().cpu().numpy(), ds.nside)
        else:
            x = torch.from_numpy(ds.transform.forward(ds.read_inputs(sim)))[None].to(dev)
            maps = model(x)[0].double().cpu().numpy()
    return np.asarray(ds.target_transform.inverse(maps), dtype=np.float32)


def predict_sim_mc(model, ds: CubeDataset, sim: int, dev, samples: int, mc_predict,
                   seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A Bayesian network: ((fields, npix) mean, (fields, npix) sigma), NESTED, physical units.
    ``seed`` seeds the dropout draws (predict derives it from the run's seed, the split and the sim,
    so the same run predicts the same bytes); None: torch's global generator.

    ``mc_predict`` is the network's Network.mc_predict (dropout stays on: Monte Carlo); the target
    transform is affine, so the mean is inverted with it and sigma is multiplied by its scale.
    """
    import torch
    x = torch.from_numpy(ds.transform.forward(ds.read_inputs(sim))).to(dev)
    generator = torch.Generator(device=x.device).manual_seed(seed) if seed is not None else None
    mean, sigma = mc_predict(model, x, samples, generator=generator)
    sigma = sigma * np.asarray(ds.target_transform.scale, dtype=np.float64)[:, None]
    return (np.asarray(ds.target_transform.inverse(mean), dtype=np.float32),
            np.asarray(np.abs(sigma), dtype=np.float32))
