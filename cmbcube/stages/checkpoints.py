"""A training run's checkpoints: ``<store>.runs/<run>/epoch_NNNN.pt`` and ``loss.png``.

A checkpoint holds the weights, the optimiser and scheduler states, the settings (JSON), the
losses so far and every random generator's state, so that ``--resume`` continues bit for bit.
It is written whole or not at all, and loaded weights-only (nothing in the file is executed).

Which are kept (``--keep-checkpoints``): ``best-last`` (the default) keeps the last checkpoint
(what ``--resume`` and ``predict --epoch last`` read) and the one of the lowest validation loss
(``predict``'s default; training loss where the run has no valid split); ``all`` keeps every saved epoch.
Older ones are deleted only after the new one is complete, so a run killed at any moment keeps its last checkpoint.
"""
from __future__ import annotations

import errno
import json
import logging
import math
import random
import shutil
from pathlib import Path

import numpy as np

from cmbcube.errors import InputError, os_error, param

log = logging.getLogger("cmbcube")


def checkpoint_bytes(n_params: int, amsgrad: bool) -> int:
    """Bytes of one checkpoint: float32 weights and Adam's two moments (AMSGrad keeps a third), plus the
    losses, RNG states and settings (~64 kB)."""
    return n_params * 4 * (4 if amsgrad else 3) + 64 * 2 ** 10


KEEP = ("best-last", "all")


def check_keep(keep: str) -> str:
    if keep not in KEEP:
        raise InputError(f"{param('keep_checkpoints')} {keep!r}: allowed: {', '.join(KEEP)}")
    return keep


def check_space(run_name: str, n_params: int, amsgrad: bool, epochs: int, checkpoint_every: int, out_dir,
                force_size: bool, keep: str = "all") -> None:
    """Refuse (LimitError, exit 2) before the run is created when its checkpoints cannot fit the free
    disk next to the store (``--force-size`` runs it anyway)."""
    from cmbcube.compute import limits
    saved = epochs // checkpoint_every + (epochs % checkpoint_every != 0)
    if keep == "best-last":             # the best, the previous last and the one being written
        saved = min(saved, 3)
    per = checkpoint_bytes(n_params, amsgrad)
    plan = limits.Plan(f"train {run_name}", files=saved, store_bytes=saved * per, worker_bytes=0)
    for problem in limits.check(plan, str(out_dir), (None, ""), force_size):
        log.warning("--force-size: %s", problem)


def checkpoint_path(out_dir, epoch: int) -> Path:
    """Where the checkpoint of ``epoch`` lives in a run's folder."""
    return Path(out_dir) / f"epoch_{epoch:04d}.pt"


def save_checkpoint(out_dir: Path, epoch, net, opt, sched, config, train_losses, valid_losses, best, stale,
                    keep: str = "all") -> str:
    import torch
    np_state = np.random.get_state()
    state = {"model": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "epoch": epoch, "config": json.dumps(config.as_dict()), "torch_rng": torch.get_rng_state(),
             "numpy_rng": torch.from_numpy(np_state[1].astype(np.int64)), "numpy_pos": int(np_state[2]),
             "python_rng": random.getstate(), "train_loss": list(train_losses), "valid_loss": list(valid_losses),
             "best": float(best), "stale": int(stale), "keep": keep}
    path = checkpoint_path(out_dir, epoch)
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
        raise os_error(errno.ENOSPC, f"No space left on device for the epoch-{epoch} checkpoint ({need / 1e6:.1f} MB); "
                       f"free some space, then rerun with {param('resume', True)} (earlier checkpoints are intact)",
                       str(path)) from None
    return str(path)


def restore_rng(state: dict) -> None:
    """Put torch's, numpy's and Python's global generators back where a checkpoint saved them."""
    import torch
    torch.set_rng_state(state["torch_rng"])
    np.random.set_state(("MT19937", state["numpy_rng"].numpy().astype(np.uint32), int(state["numpy_pos"]), 0, 0.0))
    random.setstate(tuple(_totuple(state["python_rng"])))


def _totuple(x):
    return tuple(_totuple(i) for i in x) if isinstance(x, (list, tuple)) else x


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
    is executed); a file that is not one is refused with InputError (exit 2) naming it."""
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


def saved_epochs(out_dir) -> list[int]:
    """The epochs whose checkpoint is in a run's folder, in order."""
    out = []
    for path in Path(out_dir).glob("epoch_*.pt"):
        try:
            out.append(int(path.stem.split("_", 1)[1]))
        except ValueError:
            continue
    return sorted(out)


def best_epoch(epochs, train_losses, valid_losses) -> int | None:
    """Of ``epochs`` (1-based), the one of the lowest validation loss (the training loss where it is NaN,
    as early stopping judges it); NaN losses never win; the earliest on a tie."""
    def score(epoch):
        k = epoch - 1
        value = valid_losses[k] if k < len(valid_losses) and not math.isnan(valid_losses[k]) else \
            (train_losses[k] if k < len(train_losses) else math.nan)
        return math.inf if math.isnan(value) else value
    return min(epochs, key=score, default=None)


def prune(out_dir, train_losses, valid_losses, keep: str) -> tuple[int | None, int | None]:
    """Delete the checkpoints ``keep`` does not keep; (best epoch, last epoch) of those left.

    Called after the last checkpoint is complete: each deletion leaves the last one (and the best), so
    a process killed in the middle leaves valid checkpoints and at worst one file too many."""
    epochs = saved_epochs(out_dir)
    if not epochs:
        return None, None
    best, last = best_epoch(epochs, train_losses, valid_losses), epochs[-1]
    if keep != "all":
        for epoch in epochs:
            if epoch not in (best, last):
                checkpoint_path(out_dir, epoch).unlink(missing_ok=True)
    return best, last


def finished(state: dict) -> bool:
    """Whether the run of a checkpoint's state has nothing left to train: all its epochs are done, or
    early stopping ended it."""
    config = json.loads(state["config"])
    patience = int(config.get("early_stopping") or 0)
    return int(state["epoch"]) >= int(config["epochs"]) or bool(patience and int(state["stale"]) >= patience)


def clear(out_dir) -> None:
    """Delete a run folder's checkpoints and loss plot (``train --overwrite`` of a folder the store
    does not know), then the folder if nothing else is in it."""
    folder = Path(out_dir)
    for pattern in ("epoch_*.pt", "epoch_*.pt.tmp", "loss.png"):
        for path in folder.glob(pattern):
            path.unlink(missing_ok=True)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


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
    else:                                   # a heteroscedastic loss goes negative
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
