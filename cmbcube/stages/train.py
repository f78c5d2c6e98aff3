"""The train and predict stages for the networks (cmbNNCS UNets, patch UNet, Petroff's Bayesian
spherical network).

Training streams batches from the cube (CubeDataset), records per-epoch train
and validation losses in the cube and as a PNG, checkpoints next to the store
(``<store>.runs/<run>/epoch_NNNN.pt``, loadable with ``torch.load(weights_only=True)``),
and resumes bit for bit.  Prediction writes full-sky maps into the cube's
``pred`` product under the run's name, transform inverted, back on the sphere;
for Petroff's network, the mean of Monte Carlo passes (dropout on) goes to
``pred`` and its per-pixel sigma to ``pred_sigma``.
"""
from __future__ import annotations

import dataclasses
import errno
import json
import logging
import math
import random
import shutil
import time
from pathlib import Path

import numpy as np

from cmbcube import cube
from cmbcube.science import geometry
from cmbcube.networks import models
from cmbcube.cube.datasets import CubeDataset
from cmbcube.drills import hold
from cmbcube.errors import InputError, MissingFileError

log = logging.getLogger("cmbcube")


@dataclasses.dataclass
class TrainConfig:
    model: str = "cmbnncs-unet5"
    detectors: tuple = (100, 143, 217, 353)
    fields: tuple = ("I",)
    transform: str = "none"              # inputs: cmbNNCS feeds unscaled uK_CMB (see cmbcube.science.transforms)
    target_transform: str = "scale:5"    # cmbNNCS: CMB / 5
    epochs: int = 10
    batch_size: int = 12
    repeats: int = 3                     # each batch stepped this many times (cmbNNCS: 3)
    lr_start: float = 0.1
    lr_end: float = 1e-6
    loss: str = "l1"                     # l1, mse; heteroscedastic (petroff)
    checkpoint_every: int = 1
    early_stopping: int = 0              # patience in epochs; 0 = off
    seed: int = 0
    patch_side: int | None = None
    base_channels: int | None = None     # patch UNet width
    train_sims: int | None = None        # use only the first N finished train sims
    grad_clip: float | None = None       # clip the global gradient norm to this (petroff: 10); None = off

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if d["grad_clip"] is None:       # added later: runs recorded before it compare equal
            del d["grad_clip"]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in {f.name for f in dataclasses.fields(cls)}}
        return cls(**d)


LOSSES = ("l1", "mse", "heteroscedastic")
PETROFF_DETECTORS = (70, 100, 143, 217, 353, 545, 857)      # Petroff et al.'s Planck channels, I


def defaults(model: str) -> dict:
    """Published defaults per model (cmbNNCS, Petroff) and sensible ones for the patch UNet.

    Petroff et al. 2020: 70-857 GHz, inputs divided by their max |x| over the
    noiseless train sims, target mapped to [0, 1], heteroscedastic loss, Adam
    (amsgrad) at its default constant learning rate 1e-3, batch 1.  Not
    published: the gradient norm clipped at 10.  Without it, one Monte Carlo
    pass whose mean lands far off while the predicted variance is small gives a
    gradient ~1e10 times the usual; AMSGrad keeps that second moment forever and
    the network stops learning (measured: valid loss -2.55 -> -1.0 after one
    such step at epoch 58 of a 60-sky run, never recovered).
    """
    if model in models.CMBNNCS:
        return {}
    if model == "patch-unet":
        return dict(transform="standardize", target_transform="standardize", batch_size=16, repeats=1,
                    lr_start=1e-3, lr_end=1e-5)
    if model == "petroff":
        return dict(detectors=PETROFF_DETECTORS, transform="noiseless-maxabs", target_transform="unit-maxabs",
                    loss="heteroscedastic", batch_size=1, repeats=1, lr_start=1e-3, lr_end=1e-3, grad_clip=10.0)
    raise InputError(f"--model {model!r}: allowed: {', '.join(models.MODELS)}")


def device_for(name: str | None = None):
    import torch
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available here; use --device cpu")
    if name not in ("cpu", "cuda"):
        raise InputError(f"--device {name!r}: allowed: cpu, cuda, auto")
    return torch.device(name)


def run_dir(store: str, run: str) -> Path:
    return Path(str(store).rstrip("/") + ".runs") / run


def _datasets(store: str, config: TrainConfig, split: str):
    view = models.view_for(config.model)
    nside = int(cube.read_attrs(store)["nside"])
    side = (config.patch_side or models.default_patch_side(nside)) if view == "patches" else None
    sims = None
    if split == "train" and config.train_sims:
        done = np.nonzero(cube.done_flags(store)[0])[0][: config.train_sims]
        sims = done.tolist()
    return CubeDataset(store, split, detectors=list(config.detectors), fields=list(config.fields), sims=sims,
                       view=view, target="cmb", target_fields=list(config.fields), transform=config.transform,
                       target_transform=config.target_transform, patch_side=side)


def _n_sims(dataset) -> int:
    """Skies behind a dataset (patch views give several samples per sky)."""
    sims = getattr(dataset, "sims", None)
    return len(set(int(s) for s in sims)) if sims is not None else len(dataset)


def _loss_fn(name):
    import torch
    if name == "heteroscedastic":
        from cmbcube.networks.petroff import heteroscedastic_loss
        return heteroscedastic_loss
    return {"l1": torch.nn.L1Loss(), "mse": torch.nn.MSELoss()}[name]


def _check_loss(config: TrainConfig) -> None:
    if config.loss not in LOSSES:
        raise InputError(f"--loss {config.loss!r}: allowed: {', '.join(LOSSES)}")
    if (config.loss == "heteroscedastic") != (config.model == "petroff"):
        raise InputError(f"--loss {config.loss!r} with --model {config.model}: the heteroscedastic loss needs the "
                         "mean and variance maps that only --model petroff gives, and petroff trains only with it")


def resolve_noiseless(store: str, config: TrainConfig, progress: bool | None = None) -> TrainConfig:
    """Pin store-dependent scalings to explicit numbers (recorded in the run's configuration).

    - transform ``noiseless-maxabs`` -> ``scale:S1,S2,...``: S = max |obs - noise| per
      input channel over the training sims (Petroff et al.); without a ``noise``
      product in the cube (recipe ``keep: [noise]``) the noisy maps are used, with a warning;
    - target transform ``unit-maxabs`` -> ``unit:M``: M = max |CMB truth| over the same sims.
    """
    from cmbcube.progress import iterate
    if config.transform != "noiseless-maxabs" and config.target_transform != "unit-maxabs":
        return config
    ds = _datasets(store, dataclasses.replace(config, transform="none", target_transform="none"), "train")
    group = cube.read_group(store)          # damaged finished sims raise
    has_noise = "noise" in set(group.array_keys())
    if config.transform == "noiseless-maxabs" and not has_noise:
        log.warning("transform noiseless-maxabs: %s holds no noise maps (recipe keep: [noise]); scaling the inputs "
                    "by max |obs| of the noisy train maps instead", store)
    det, fld = np.array(ds.det_index), np.array(ds.field_index)
    peak = np.zeros(len(ds.channels))
    tpeak = np.zeros(len(config.fields))
    for sim in iterate(ds.sims, "input scaling", progress=progress):
        if config.transform == "noiseless-maxabs":
            x = ds.read_inputs(sim).astype(np.float64)
            if has_noise:
                x -= np.asarray(group["noise"][ds.isplit, sim], dtype=np.float64)[det, fld]
            peak = np.fmax(peak, np.nanmax(np.abs(x), axis=1))
        if config.target_transform == "unit-maxabs":
            tpeak = np.fmax(tpeak, np.nanmax(np.abs(ds.read_target(sim).astype(np.float64)), axis=1))

    def spec(prefix, values):
        return prefix + ",".join(f"{v:.9g}" if np.isfinite(v) and v > 0 else "1" for v in values)
    changes = {}
    if config.transform == "noiseless-maxabs":
        changes["transform"] = spec("scale:", peak)
    if config.target_transform == "unit-maxabs":
        changes["target_transform"] = spec("unit:", tpeak)
    return dataclasses.replace(config, **changes)


@dataclasses.dataclass
class TrainReport:
    run: str
    epochs_done: int
    train_loss: list
    valid_loss: list
    checkpoint: str
    stopped_early: bool = False
    seconds: float = 0.0
    samples_per_s: float = 0.0
    config: dict | None = None           # the settings trained with (store-dependent scalings resolved)


def train(store: str, config: TrainConfig, run_name: str | None = None, device: str | None = None,
          resume: bool = False, deterministic: bool = False, progress: bool | None = None,
          num_workers: int = 0, force_size: bool = False) -> TrainReport:
    import torch
    from cmbcube.progress import Progress
    _check_loss(config)
    if config.epochs < 1 or config.batch_size < 1 or config.repeats < 1:
        raise InputError("--epochs, --batch-size and --repeats must be >= 1")
    if config.grad_clip is not None and not config.grad_clip > 0:
        raise InputError(f"--grad-clip {config.grad_clip}: must be > 0 (leave it out for no clipping)")
    run_name = cube.check_run_name(run_name or config.model)
    dev = device_for(device)
    if deterministic:
        torch.use_deterministic_algorithms(True)
    config = resolve_noiseless(store, config, progress)
    train_ds = _datasets(store, config, "train")
    try:
        valid_ds = _datasets(store, config, "valid")
    except ValueError:
        valid_ds = None
    nside = train_ds.nside
    out_dir = run_dir(store, run_name)
    if not resume:
        _check_checkpoint_space(store, run_name, config, train_ds, out_dir, force_size)
    config_dict = {**config.as_dict(), "checkpoint_dir": str(out_dir.resolve())}
    irun = cube.ensure_run(store, run_name, config.model, config_dict,
                           cube.truth_beam(store),
                           uncertainty=config.model == "petroff")
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    net = models.build(config.model, len(train_ds.channels), len(config.fields), nside, config.patch_side,
                       config.base_channels, branches=models.branch_sizes(train_ds.channels),
                       n_train=len(train_ds)).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr_start, amsgrad=config.model == "petroff")
    steps_per_epoch = math.ceil(len(train_ds) / config.batch_size) * config.repeats
    total = steps_per_epoch * config.epochs
    ratio = config.lr_end / config.lr_start

    def lr_factor(step):
        return ratio ** (min(step, total) / total)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    start_epoch, train_losses, valid_losses, best, stale = 0, [], [], math.inf, 0
    if resume:
        ckpt = latest_checkpoint(out_dir)
        if ckpt is None:
            raise MissingFileError(f"--resume: no checkpoint in {out_dir}")
        state = load_checkpoint(ckpt, dev)
        if json.loads(state["config"]) != config.as_dict():
            raise InputError(f"--resume: {ckpt} was trained with other settings: {state['config']}")
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(("MT19937", state["numpy_rng"].numpy().astype(np.uint32), int(state["numpy_pos"]), 0, 0.0))
        random.setstate(tuple(_totuple(state["python_rng"])))
        start_epoch = int(state["epoch"])
        train_losses, valid_losses = list(state["train_loss"]), list(state["valid_loss"])
        best, stale = float(state["best"]), int(state["stale"])
        log.info("resuming %s from epoch %d (%s)", run_name, start_epoch, ckpt)
    loss_fn = _loss_fn(config.loss)
    t0, seen, stopped = time.perf_counter(), 0, False
    last_ckpt = str(latest_checkpoint(out_dir) or "")
    epochs_bar = Progress(config.epochs, f"train {run_name}", unit="epoch", progress=progress, initial=start_epoch,
                          where=f"{out_dir} (checkpoints), {store} loss_train/loss_valid")
    log.info("train %s: %s on %d train sample(s) from %d sim(s), %d valid, device %s", run_name, config.model,
             len(train_ds), _n_sims(train_ds), len(valid_ds) if valid_ds else 0, dev)
    for epoch in range(start_epoch, config.epochs):
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
        loader = torch.utils.data.DataLoader(train_ds, batch_size=config.batch_size, shuffle=True,
                                             generator=generator, num_workers=num_workers)
        net.train()
        total_loss, nbatch = 0.0, 0
        bar = Progress(len(loader), f"epoch {epoch + 1}/{config.epochs}", unit="batch", progress=progress,
                       leave=False)
        for batch in loader:
            x, y = batch["inputs"].to(dev), batch["target"].to(dev)
            for _ in range(config.repeats):
                opt.zero_grad()
                loss = loss_fn(net(x), y)
                # concrete dropout (petroff): its regulariser joins the objective, not the recorded loss
                objective = loss + net.regularization() if hasattr(net, "regularization") else loss
                objective.backward()
                if config.grad_clip:
                    torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
                opt.step()
                sched.step()
            hold("TRAIN", epoch, nbatch)           # fault drills only (cmbcube.drills)
            total_loss += loss.item()
            nbatch += 1
            seen += x.shape[0]
            bar.update(1, loss=f"{total_loss / nbatch:.4g}", lr=f"{sched.get_last_lr()[0]:.2g}")
        bar.close()
        train_losses.append(total_loss / max(nbatch, 1))
        valid_losses.append(evaluate(net, valid_ds, loss_fn, dev, config.batch_size) if valid_ds else float("nan"))
        log.info("%s epoch %d: train %.5g valid %.5g", run_name, epoch + 1, train_losses[-1], valid_losses[-1])
        epochs_bar.update(1, train=f"{train_losses[-1]:.4g}", valid=f"{valid_losses[-1]:.4g}")
        current = valid_losses[-1] if not math.isnan(valid_losses[-1]) else train_losses[-1]
        if current < best:
            best, stale = current, 0
        else:
            stale += 1
        stopped = bool(config.early_stopping and stale >= config.early_stopping)
        last = epoch + 1 == config.epochs or stopped
        if (epoch + 1) % config.checkpoint_every == 0 or last:
            last_ckpt = save_checkpoint(out_dir, epoch + 1, net, opt, sched, config, train_losses, valid_losses,
                                        best, stale)
        cube.write_losses(store, irun, train_losses, valid_losses, _n_sims(train_ds))
        plot_losses(out_dir / "loss.png", train_losses, valid_losses, run_name)
        if stopped:
            log.info("early stopping: validation loss has not improved for %d epochs", stale)
            break
    epochs_bar.close()
    seconds = time.perf_counter() - t0
    return TrainReport(run_name, len(train_losses), train_losses, valid_losses, last_ckpt, stopped, seconds,
                       seen / seconds if seconds else 0.0, config.as_dict())


def _totuple(x):
    return tuple(_totuple(i) for i in x) if isinstance(x, (list, tuple)) else x


def evaluate(net, dataset, loss_fn, dev, batch_size) -> float:
    import torch
    net.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for batch in torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False):
            out = net(batch["inputs"].to(dev))
            total += float(loss_fn(out, batch["target"].to(dev))) * out.shape[0]
            n += out.shape[0]
    return total / max(n, 1)


def checkpoint_bytes(n_params: int, petroff: bool) -> int:
    """Bytes of one checkpoint: float32 weights and Adam's two moments (AMSGrad keeps a third), plus the
    losses, RNG states and settings (~64 kB)."""
    return n_params * 4 * (4 if petroff else 3) + 64 * 2 ** 10


def _check_checkpoint_space(store, run_name, config, train_ds, out_dir, force_size) -> None:
    """Refuse (LimitError, exit 2) before the run is created when its checkpoints cannot fit the free
    disk next to the store (``--force-size`` runs it anyway)."""
    from cmbcube.stages import limits
    probe = models.build(config.model, len(train_ds.channels), len(config.fields), train_ds.nside,
                         config.patch_side, config.base_channels, branches=models.branch_sizes(train_ds.channels),
                         n_train=len(train_ds))
    n_params = sum(p.numel() for p in probe.parameters())
    del probe
    saved = config.epochs // config.checkpoint_every + (config.epochs % config.checkpoint_every != 0)   # all kept
    per = checkpoint_bytes(n_params, config.model == "petroff")
    plan = limits.Plan(f"train {run_name}", files=saved, store_bytes=saved * per, worker_bytes=0)
    for problem in limits.check(plan, str(out_dir), (None, ""), force_size):
        log.warning("--force-size: %s", problem)


def save_checkpoint(out_dir: Path, epoch, net, opt, sched, config, train_losses, valid_losses, best, stale) -> str:
    import torch
    np_state = np.random.get_state()
    state = {"model": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "epoch": epoch, "config": json.dumps(config.as_dict()), "torch_rng": torch.get_rng_state(),
             "numpy_rng": torch.from_numpy(np_state[1].astype(np.int64)), "numpy_pos": int(np_state[2]),
             "python_rng": random.getstate(), "train_loss": list(train_losses), "valid_loss": list(valid_losses),
             "best": float(best), "stale": int(stale)}
    path = out_dir / f"epoch_{epoch:04d}.pt"
    tmp = path.with_suffix(".pt.tmp")
    try:
        torch.save(state, tmp)
        tmp.replace(path)                  # a checkpoint is complete or absent
    except (OSError, RuntimeError) as err:
        tmp.unlink(missing_ok=True)        # a partial file would only hold on to the space
        need = sum(t.numel() * t.element_size() for t in _tensors(state))
        if isinstance(err, OSError):
            full = err.errno in (errno.ENOSPC, errno.EDQUOT)
        else:                              # torch's zip writer reports a full disk as a RuntimeError
            full = shutil.disk_usage(out_dir).free < need + (1 << 20)
        if not full:
            raise
        raise OSError(errno.ENOSPC, f"No space left on device for the epoch-{epoch} checkpoint ({need / 1e6:.1f} MB); "
                      "free some space, then rerun with --resume (earlier checkpoints are intact)", str(path)) from None
    return str(path)


def _tensors(obj):
    import torch
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _tensors(value)


def load_checkpoint(path, dev=None) -> dict:
    """A checkpoint's state, loaded weights-only (plain tensors and containers: nothing in the file
    is executed); a file that is not one is refused with ValueError (exit 2) naming it."""
    import pickle

    import torch
    try:
        state = torch.load(path, map_location=dev, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{path}: not a cmbcube checkpoint; refused by the weights-only loader, nothing in it "
                         f"was run ({first})") from None
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise InputError(f"{path}: not a cmbcube checkpoint (no model state and epoch in it)")
    return state


def latest_checkpoint(out_dir: Path) -> Path | None:
    found = sorted(Path(out_dir).glob("epoch_*.pt"))
    return found[-1] if found else None


def plot_losses(path: Path, train_losses, valid_losses, title) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = np.arange(1, len(train_losses) + 1)
    ax.plot(epochs, train_losses, "o-", label="train")
    if not all(math.isnan(v) for v in valid_losses):
        ax.plot(epochs, valid_losses, "s-", label="valid")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    values = [v for v in list(train_losses) + list(valid_losses) if not math.isnan(v)]
    if values and min(values) > 0:
        ax.set_yscale("log")
    else:                                   # the heteroscedastic loss (petroff) goes negative
        ax.set_yscale("symlog", linthresh=1.0)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    tmp = Path(path).with_suffix(".png.tmp")
    try:
        fig.savefig(tmp, dpi=100, format="png")
        tmp.replace(path)                  # the previous plot stays whole if the disk is full
    finally:
        tmp.unlink(missing_ok=True)
        plt.close(fig)


# ----------------------------------------------------------------------------- predict
@dataclasses.dataclass
class PredictReport:
    run: str
    epoch: int
    written: list
    already_done: int
    seconds: float
    mc_samples: int = 0


MC_SAMPLES = 100        # Petroff et al.: 100 Monte Carlo passes per sky


def predict(store: str, run_name: str, splits=("test",), epoch: int | None = None, device: str | None = None,
            progress: bool | None = None, model=None, mc_samples: int | None = None,
            force_size: bool = False) -> PredictReport:
    """Write the run's predictions for the finished sims of ``splits`` (resumable per sim).

    ``mc_samples``: Monte Carlo passes with dropout on (Petroff's network only;
    default 100): the mean goes to ``pred``, the per-pixel sigma to ``pred_sigma``.
    ``model`` (testing hook): a torch module used instead of the checkpoint's.
    """
    import torch
    from cmbcube.progress import iterate
    cube.check_run_name(run_name)
    irun = cube.run_index(store, run_name)
    stored = cube.run_config(store, irun)
    config = TrainConfig.from_dict(stored)
    bayesian = config.model == "petroff"
    if mc_samples is not None and not bayesian:
        raise InputError(f"--mc-samples: run {run_name!r} is a {config.model} (no dropout at inference); "
                         "Monte Carlo sampling needs --model petroff")
    mc_samples = (MC_SAMPLES if mc_samples is None else int(mc_samples)) if bayesian else 0
    if bayesian and mc_samples < 1:
        raise InputError(f"--mc-samples {mc_samples}: must be >= 1")
    dev = device_for(device)
    if model is None:
        out_dir = Path(stored["checkpoint_dir"])
        ckpt = out_dir / f"epoch_{epoch:04d}.pt" if epoch else latest_checkpoint(out_dir)
        if ckpt is None or not Path(ckpt).exists():
            raise MissingFileError(f"run {run_name!r}: no checkpoint {'for epoch ' + str(epoch) if epoch else ''} "
                                    f"in {out_dir}; train it first (cmbcube train)")
        state = load_checkpoint(ckpt, dev)
        epoch = int(state["epoch"])
    else:
        epoch = epoch or 0
    recorded = cube.run_epoch(store, irun)
    done_any = cube.pred_done_count(store, irun)
    if done_any and recorded != epoch:
        raise InputError(f"run {run_name!r} already holds predictions from epoch {recorded}; predicting epoch {epoch} "
                         "into it would mix checkpoints (train into a new --run, or drop the predictions)")
    todo = cube.run_pending(store, irun, splits)
    report = PredictReport(run_name, epoch, [], 0, 0.0, mc_samples)
    if not todo:
        return report
    from cmbcube.stages import limits
    nbytes, files = limits.prediction_bytes(store, len(todo), uncertainty=bool(bayesian))
    limits.check_growth(store, f"predict {run_name}", nbytes, files, 0, force=force_size)
    t0 = time.perf_counter()
    if bayesian:       # runs trained before pred_sigma existed get it now (same configuration: no mismatch)
        cube.ensure_run(store, run_name, config.model, stored, cube.truth_beam(store), uncertainty=True)
    if model is None:
        ds0 = _datasets(store, config, splits[0])
        model = models.build(config.model, len(ds0.channels), len(config.fields), ds0.nside, config.patch_side,
                             config.base_channels, branches=models.branch_sizes(ds0.channels))
        model.load_state_dict(state["model"])
    model = model.to(dev).eval()
    cube.set_run_epoch(store, irun, epoch)
    fields_all = cube.fields(store)
    datasets = {}
    for split, sim in iterate(todo, f"predict {run_name}", progress=progress,
                              where=f"{store} pred[run={run_name}] (epoch-{epoch} checkpoint)"):
        ds = datasets.get(split) or datasets.setdefault(split, _datasets(store, config, split))
        sigma = None
        if bayesian:
            maps, sigma_maps = predict_sim_mc(model, ds, sim, dev, mc_samples)
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
            maps = model(torch.from_numpy(ds.transform.forward(ds.read_inputs(sim)))[None].to(dev))[0].double().cpu().numpy()
    return np.asarray(ds.target_transform.inverse(maps), dtype=np.float32)


def predict_sim_mc(model, ds: CubeDataset, sim: int, dev, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Petroff's network: ((fields, npix) mean, (fields, npix) sigma), NESTED, physical units.

    Dropout stays on (Monte Carlo); the target transform is affine, so the mean
    is inverted with it and sigma is multiplied by its scale.
    """
    import torch

    from cmbcube.networks.petroff import mc_predict
    x = torch.from_numpy(ds.transform.forward(ds.read_inputs(sim))).to(dev)
    mean, sigma = mc_predict(model, x, samples)
    sigma = sigma * np.asarray(ds.target_transform.scale, dtype=np.float64)[:, None]
    return (np.asarray(ds.target_transform.inverse(mean), dtype=np.float32),
            np.asarray(np.abs(sigma), dtype=np.float32))
