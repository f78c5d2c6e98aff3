"""The train stage for the registered networks (cmbcube.networks.NETWORKS).

Training streams batches from the cube (CubeDataset, in the view the network
reads), records per-epoch train and validation losses in the cube and as a PNG,
checkpoints next to the store (``<store>.runs/<run>/epoch_NNNN.pt``, loadable
with ``torch.load(weights_only=True)``; by default the last and the best are kept, see
cmbcube.stages.checkpoints), and resumes bit for bit.  A run name already in use is refused
unless ``--resume`` or ``--overwrite`` says what to do with it (cmbcube.stages.train_guard).
By default (defaults()) training stops once the validation loss has not improved for PATIENCE epochs,
and prediction (cmbcube.stages.predict) uses the best-validation checkpoint.  Options: augmentation by
the sphere's exact symmetries (cmbcube.stages.augment), bf16 autocast and channels-last (GPU).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path

import numpy as np

from cmbcube import cube, networks
from cmbcube.compute.fanout import StageReport
from cmbcube.cube.datasets import CubeDataset, SelectionError
from cmbcube.drills import hold
from cmbcube.errors import InputError, param
from cmbcube.networks import NETWORKS
from cmbcube.stages import augment, train_guard
from cmbcube.stages.checkpoints import (
    check_keep,
    check_space,
    checkpoint_path,
    finished,
    plot_losses,
    prune,
    restore_rng,
    save_checkpoint,
)

log = logging.getLogger("cmbcube")


@dataclasses.dataclass
class TrainConfig:
    model: str = networks.DEFAULT
    detectors: tuple = (100, 143, 217, 353)
    fields: tuple = ("I",)
    transform: str = "none"              # inputs: cmbNNCS feeds unscaled uK_CMB (see cmbcube.science.transforms)
    target_transform: str = "scale:5"    # cmbNNCS: CMB / 5
    epochs: int = 10
    batch_size: int = 12
    repeats: int = 3                     # each batch stepped this many times (cmbNNCS: 3)
    lr_start: float = 0.1
    lr_end: float = 1e-6
    loss: str = "l1"                     # l1, mse, heteroscedastic (networks.LOSSES; the network's Network.losses)
    checkpoint_every: int = 1
    early_stopping: int = 0              # patience in epochs; 0 = off
    seed: int = 0
    patch_side: int | None = None
    base_channels: int | None = None     # patch UNet width
    train_sims: int | None = None        # use only the first N finished train sims
    grad_clip: float | None = None       # clip the global gradient norm to this; None = off
    augment: str = "none"                # none, rot90, rot90-flip: exact sky symmetries (stages/augment.py)
    precision: str = "fp32"              # fp32, or bf16: forward and loss under torch.autocast (GPU speed)
    channels_last: bool = False          # 2-D views (faces, patches): NHWC memory layout (GPU speed)
    head: str = "published"              # the last layer: published, linear or linear-path (Network.heads)

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for key, off in (("grad_clip", None), ("augment", "none"), ("precision", "fp32"), ("channels_last", False),
                         ("head", "published")):
            if d[key] == off:            # added later: runs recorded before them compare equal
                del d[key]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names}
        return cls(**d)

    def changed_from(self, recorded: dict, ignore=("checkpoint_dir",)) -> dict:
        """key -> (recorded, self) for the settings where a run recorded as ``recorded`` (its run_config)
        differs from this config; keys added since it was recorded count at their default, and the
        placeholders run() pins from the data (noiseless-maxabs, unit-maxabs) match their pinned values."""
        wanted = dataclasses.asdict(self)
        started = dataclasses.asdict(TrainConfig.from_dict(recorded))
        for key, placeholder, resolved in (("transform", "noiseless-maxabs", "scale:"),
                                           ("target_transform", "unit-maxabs", "unit:")):
            if wanted[key] == placeholder and str(started[key]).startswith(resolved):
                wanted[key] = started[key]
        return {k: (started[k], wanted[k]) for k in wanted if k not in ignore and wanted[k] != started[k]}


PRECISIONS = ("fp32", "bf16")
PATIENCE = 10          # early stopping's patience (epochs) unless asked otherwise; see defaults()


def defaults(model: str, published: bool = False) -> dict:
    """The network's training settings: Network.defaults (cmbNNCS's and Petroff et al.'s as published)
    with Network.tuned over them (settings measured better side by side) and early stopping with a
    patience of PATIENCE epochs, which no published recipe has; ``published``: exactly the published
    settings (no tuning, no early stopping).  An unknown model raises
    InputError listing the registered ones.

    Early stopping is on by default because prediction uses the best-validation checkpoint: epochs
    after the validation loss stopped improving for PATIENCE epochs cannot change what is predicted
    unless the loss improves again, which the falling learning rate makes rare; stopping saves them."""
    spec = NETWORKS.get(model)
    values = dict(spec.defaults)
    if not published:
        values.update(spec.tuned)
        values.setdefault("early_stopping", PATIENCE)
    return values


def recorded_patience(store: str, run_name: str, default: int) -> int:
    """The early-stopping patience run ``run_name`` was started with (``--resume`` without
    ``--early-stopping``: runs recorded before early stopping was on by default keep theirs); ``default``
    when the store does not know the run."""
    try:
        stored = cube.run_config(store, cube.run_index(store, run_name))
    except (cube.StoreError, InputError, KeyError, ValueError):
        return default
    return int(stored.get("early_stopping") or 0) if "model" in stored else default


def device_for(name: str | None = None):
    import torch
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError(f"{param('device')} cuda: no CUDA device is available here; use {param('device', 'cpu')}")
    if name not in ("cpu", "cuda"):
        raise InputError(f"{param('device')} {name!r}: allowed: cpu, cuda, auto")
    return torch.device(name)


def datasets_for(store: str, config: TrainConfig, split: str) -> CubeDataset:
    """The split's samples in the view the network reads, transformed as the configuration says."""
    view = NETWORKS.get(config.model).view
    nside = cube.nside(store)
    side = (config.patch_side or networks.default_patch_side(nside)) if view == "patches" else None
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


def build_network(config: TrainConfig, dataset: CubeDataset, n_train: int | None = None):
    """The (untrained) torch module of ``config.model`` for the dataset's input channels and nside."""
    return networks.build(config.model, len(dataset.channels), len(config.fields), dataset.nside, config,
                          branches=networks.branch_sizes(dataset.channels), n_train=n_train)


def _check_loss(config: TrainConfig) -> None:
    spec = NETWORKS.get(config.model)
    if config.head not in spec.heads:
        raise InputError(f"{param('head')} {config.head!r} with {param('model')} {config.model}: "
                         f"allowed: {', '.join(spec.heads)}")
    if config.loss not in networks.LOSSES:
        raise InputError(f"{param('loss')} {config.loss!r}: allowed: {', '.join(networks.LOSSES)}")
    if config.loss not in spec.losses:
        givers = [name for name, other in NETWORKS.items() if config.loss in other.losses]
        why = (f"; the {config.loss} loss needs networks that give it its maps: {param('model')} {', '.join(givers)}"
               if givers else "")
        raise InputError(f"{param('loss')} {config.loss!r} with {param('model')} {config.model}: "
                         f"allowed: {', '.join(spec.losses)}"
                         + why)


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
    ds = datasets_for(store, dataclasses.replace(config, transform="none", target_transform="none"), "train")
    group = cube.read_group(store)          # damaged finished sims raise
    has_noise = cube.has_noise(group)
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
                x -= np.asarray(cube.read_noise(group, ds.split, sim), dtype=np.float64)[det, fld]
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
class TrainReport(StageReport):         # seconds: the training's wall time
    run: str
    epochs_done: int
    train_loss: list
    valid_loss: list
    checkpoint: str
    stopped_early: bool = False
    samples_per_s: float = 0.0
    config: dict | None = None           # the settings trained with (store-dependent scalings resolved)
    best: str = ""                       # the kept checkpoint of the lowest validation loss (what predict uses)
    best_epoch: int = 0                  # its epoch
    dropped: str = ""                    # --overwrite: what was dropped first, in words


def run(store: str, config: TrainConfig, run_name: str | None = None, device: str | None = None,
        resume: bool = False, deterministic: bool = False, progress: bool | None = None,
        num_workers: int = 0, force_size: bool = False, overwrite: bool = False,
        keep_checkpoints: str | None = None) -> TrainReport:
    """Train run ``run_name`` (default: the model's name) of ``config`` on the store.

    A run of that name already in the store (or checkpoints in its folder) is refused (exit 2) unless
    ``resume`` (continue it) or ``overwrite`` (drop it and what was made from it, then start afresh);
    ``keep_checkpoints``: ``best-last`` or ``all`` (see cmbcube.stages.checkpoints); default: what the
    resumed checkpoint was saved with (``all`` before the option existed), else ``best-last``."""
    import torch

    from cmbcube.progress import Progress
    cube.require_store(store)
    _check_loss(config)
    if config.epochs < 1 or config.batch_size < 1 or config.repeats < 1:
        raise InputError(f"{param('epochs')}, {param('batch_size')} and {param('repeats')} must be >= 1")
    augment.check(config.augment, NETWORKS.get(config.model).view)
    if config.precision not in PRECISIONS:
        raise InputError(f"{param('precision')} {config.precision!r}: allowed: {', '.join(PRECISIONS)}")
    if config.grad_clip is not None and not config.grad_clip > 0:
        raise InputError(f"{param('grad_clip')} {config.grad_clip}: must be > 0 (leave it out for no clipping)")
    run_name = cube.check_run_name(run_name or config.model)
    if keep_checkpoints is not None:
        check_keep(keep_checkpoints)
    found = train_guard.check(store, run_name, resume, overwrite)
    state = found.state if resume and found is not None else None
    # resumed: as the run was started (checkpoints saved before the option existed: all kept)
    keep = keep_checkpoints or (state.get("keep", "all") if state is not None else "best-last")
    dev = device_for(device)
    if deterministic:
        torch.use_deterministic_algorithms(True)
    config = resolve_noiseless(store, config, progress)
    spec = NETWORKS.get(config.model)
    train_ds = datasets_for(store, config, "train")
    try:
        valid_ds = datasets_for(store, config, "valid")
    except SelectionError:                       # no finished valid sims: train without validation
        valid_ds = None
    out_dir = cube.run_dir(store, run_name)
    if state is not None and json.loads(state["config"]) != config.as_dict():
        raise InputError(f"{param('resume')}: {found.checkpoint} was trained with other settings: {state['config']}")
    if not resume:
        probe = build_network(config, train_ds, n_train=len(train_ds))
        check_space(run_name, sum(p.numel() for p in probe.parameters()), spec.amsgrad, config.epochs,
                    config.checkpoint_every, out_dir, force_size, keep)
        del probe
    dropped = train_guard.drop(store, found) if overwrite else ""
    config_dict = {**config.as_dict(), "checkpoint_dir": str(out_dir.resolve())}
    irun = cube.ensure_run(store, run_name, config.model, config_dict,
                           cube.truth_beam(store),
                           uncertainty=spec.uncertainty)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    net = build_network(config, train_ds, n_train=len(train_ds)).to(dev)
    layout = torch.channels_last if config.channels_last and spec.view != "sky" else None
    if layout is not None:
        net = net.to(memory_format=layout)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=config.precision == "bf16")
    opt = torch.optim.Adam(net.parameters(), lr=config.lr_start, amsgrad=spec.amsgrad)
    steps_per_epoch = math.ceil(len(train_ds) / config.batch_size) * config.repeats
    total = steps_per_epoch * config.epochs
    ratio = config.lr_end / config.lr_start

    def lr_factor(step):
        return ratio ** (min(step, total) / total)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    start_epoch, train_losses, valid_losses, best, stale = 0, [], [], math.inf, 0
    if state is not None:
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        restore_rng(state)
        start_epoch = int(state["epoch"])
        train_losses, valid_losses = list(state["train_loss"]), list(state["valid_loss"])
        best, stale = float(state["best"]), int(state["stale"])
        log.info("resuming %s from epoch %d (%s)", run_name, start_epoch, found.checkpoint)
    elif resume:
        log.info("resuming %s: no checkpoint yet, starting from epoch 0", run_name)
    loss_fn = networks.loss_function(config.loss)
    x_u = [i for i, (_, field) in enumerate(train_ds.channels) if field == "U"]       # negated by a reflection
    y_u = [i for i, field in enumerate(config.fields) if field == "U"]
    done = state is not None and finished(state)          # nothing left: --resume only reports it
    t0, seen, stopped = time.perf_counter(), 0, bool(done and config.early_stopping and stale >= config.early_stopping)
    last_ckpt = str(found.checkpoint) if state is not None else ""
    best_ckpt = str(checkpoint_path(out_dir, prune(out_dir, train_losses, valid_losses, "all")[0])) if done else ""
    epochs_bar = Progress(config.epochs, f"train {run_name}", unit="epoch", progress=progress, initial=start_epoch,
                          where=f"{out_dir} (checkpoints), {store} loss_train/loss_valid")
    log.info("train %s: %s on %d train sample(s) from %d sim(s), %d valid, device %s", run_name, config.model,
             len(train_ds), _n_sims(train_ds), len(valid_ds) if valid_ds else 0, dev)
    for epoch in range(start_epoch, start_epoch if done else config.epochs):
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
        loader = torch.utils.data.DataLoader(train_ds, batch_size=config.batch_size, shuffle=True,
                                             generator=generator, num_workers=num_workers)
        net.train()
        moves = augment.generator(config.seed, epoch)
        total_loss, nbatch = 0.0, 0
        bar = Progress(len(loader), f"epoch {epoch + 1}/{config.epochs}", unit="batch", progress=progress,
                       leave=False)
        for batch in loader:
            x, y = augment.batch(batch["inputs"].to(dev), batch["target"].to(dev), config.augment, moves, x_u, y_u)
            if layout is not None:
                x = x.contiguous(memory_format=layout)
            for _ in range(config.repeats):
                opt.zero_grad()
                with autocast:
                    out = net(x)
                    loss = loss_fn(out.float() if config.precision == "bf16" else out, y)
                # concrete dropout (Bayesian networks): its regulariser joins the objective, not the recorded loss
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
                                        best, stale, keep)
            kept = prune(out_dir, train_losses, valid_losses, keep)[0]       # after the save: never none
            best_ckpt = str(checkpoint_path(out_dir, kept))
            log.info("%s: best checkpoint so far: epoch %d", run_name, kept)
        cube.write_losses(store, irun, train_losses, valid_losses, _n_sims(train_ds))
        plot_losses(out_dir / "loss.png", train_losses, valid_losses, run_name)
        if stopped:
            log.info("early stopping: validation loss has not improved for %d epochs", stale)
            break
    epochs_bar.close()
    seconds = time.perf_counter() - t0
    best_epoch = int(Path(best_ckpt).stem.split("_", 1)[1]) if best_ckpt else 0
    return TrainReport(run_name, len(train_losses), train_losses, valid_losses, last_ckpt, stopped,
                       seen / seconds if seconds else 0.0, config.as_dict(), best_ckpt, best_epoch, dropped,
                       seconds=seconds)


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
