"""What ``cmbcube train`` does with a run name already in use: it never replaces a run silently.

A run exists when its name is on the store's run axis (trained, killed half-way, or an ILC run) or
when ``<store>.runs/<run>/`` holds checkpoints.  Training it again without saying how is refused
(RunExists, exit 2) before any work, with the three ways out: ``--resume`` (continue it),
``--run NEWNAME`` (train beside it) and ``--overwrite`` (drop the run and everything made from it
with ``cmbcube drop``'s machinery: predictions, metrics, spectra, losses, checkpoints; then train
from scratch).  ``--resume`` is refused too where continuing would leave a product describing
other weights: a run whose predictions were made from an earlier epoch.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from cmbcube import cube
from cmbcube.errors import InputError, MissingFileError, command, param
from cmbcube.stages import checkpoints


class RunExists(InputError):
    """The run name is taken; the message says how to continue, rename or overwrite (exit 2)."""


@dataclasses.dataclass
class Existing:
    name: str
    in_store: bool
    config: dict                    # the stored run_config ({} when the store does not know the run)
    folder: Path
    checkpoint: Path | None         # its last checkpoint
    state: dict | None = None       # that checkpoint, loaded weights-only
    predicted: int = 0              # sims holding its predictions

    @property
    def network(self) -> bool:
        return not self.in_store or "model" in self.config

    def status(self) -> str:
        if not self.network:
            return f"a {self.config.get('method', 'non-network')} run (not a trained network)"
        where = "" if self.in_store else (f"not on the store's run axis, but {self.folder} holds its checkpoints "
                                          "(left by an earlier store of that name?); ")
        if self.state is None:
            return where + f"unfinished: no checkpoint yet in {self.folder}"
        done, total = int(self.state["epoch"]), int(json.loads(self.state["config"])["epochs"])
        if not checkpoints.finished(self.state):
            return where + f"unfinished: {done} of {total} epochs done (last checkpoint {self.checkpoint.name})"
        how = "all" if done >= total else "stopped early at"
        return where + f"finished: {how} {done} of {total} epochs (last checkpoint {self.checkpoint.name})"

    def derived(self) -> str:
        made = f"its predictions ({self.predicted} sim(s)) with the metrics and spectra scored from them, " \
            if self.predicted else "its predictions, metrics and spectra if any, "
        return made + ("its losses and checkpoints" if self.network else "its settings")


def find(store: str, name: str) -> Existing | None:
    """The run ``name`` as the store and its runs folder hold it; None when neither knows it."""
    from cmbcube.cube.analysis_io import run_names
    try:
        runs = run_names(store)
    except cube.StoreError:                     # no run axis yet
        runs = []
    folder = cube.run_dir(store, name)
    last = checkpoints.latest_checkpoint(folder) if folder.is_dir() else None
    if name not in runs and last is None:
        return None
    found = Existing(name, name in runs, {}, folder, last)
    if found.in_store:
        index = cube.run_index(store, name)
        found.config = cube.run_config(store, index)
        found.predicted = cube.pred_done_count(store, index)
    if last is not None and found.network:
        found.state = checkpoints.load_checkpoint(last, "cpu")
    return found


def check(store: str, name: str, resume: bool, overwrite: bool) -> Existing | None:
    """Refuse, before anything is read or written, what would silently replace run ``name``; the run as
    found (None: a new name).  ``overwrite`` only checks here: drop() does it once the settings are checked."""
    if resume and overwrite:
        raise InputError(f"{param('resume')} and {param('overwrite')} exclude each other: {param('resume')} "
                         f"continues the run, {param('overwrite')} drops it and trains it from scratch")
    found = find(store, name)
    if overwrite:
        return found
    if found is None:
        if resume:
            raise MissingFileError(f"{param('resume')}: no run {name!r} in {store} and no checkpoint in "
                                   f"{cube.run_dir(store, name)}; leave out {param('resume')} to train it")
        return None
    if not resume:
        raise RunExists(refusal(store, found))
    if not found.network:
        raise InputError(f"{param('resume')}: run {name!r} in {store} is {found.status()}; train a new "
                         f"{param('run', 'NAME')}, or {param('overwrite', True)} to drop it and train a network "
                         "under its name")
    if found.predicted and found.state is not None and not checkpoints.finished(found.state):
        raise RunExists(f"{param('resume')}: run {name!r} in {store} is {found.status()} and already holds predictions "
                        f"of {found.predicted} sim(s) made from those weights; continuing would change the weights "
                        f"under them. Drop them first ({command('drop', store, 'pred', run=name)}), train a new "
                        f"{param('run', 'NAME')}, or {param('overwrite', True)} to drop the run and train it from "
                        "scratch")
    return found


def refusal(store: str, found: Existing) -> str:
    name = found.name
    if not found.network:
        resume = "not possible (it is not a trained network)"
    elif found.state is None:
        resume = "start it from epoch 0 with its recorded settings"
    elif checkpoints.finished(found.state):
        resume = (f"it is finished, so {param('resume', True)} only reports it; it cannot add epochs (the "
                  f"learning-rate schedule spans {param('epochs')}): for more epochs train a new {param('run')}")
    else:
        resume = f"continue it from epoch {int(found.state['epoch'])} with its recorded settings"
    if not found.network:
        what = "replace it"
    else:
        what = "replace its checkpoints and losses" + (
            ", leaving its predictions and the metrics scored from them describing the old weights"
            if found.predicted else "")
    return (f"run {name!r} already exists in {store}: {found.status()}. Training it from scratch under that name "
            f"would {what}; nothing was changed. Choose one:\n"
            f"  {param('resume', True, width=15)} {resume}\n"
            f"  {param('run', 'NEWNAME', width=15)} train a separate run beside it\n"
            f"  {param('overwrite', True, width=15)} drop run {name!r} and everything made from it "
            f"({found.derived()}), as "
            f"'{command('drop', store, 'run', run=name)}' does, then train it from scratch")


def drop(store: str, found: Existing | None) -> str:
    """``--overwrite``: remove the run and everything made from it; what went, in words ('' if nothing)."""
    if found is None:
        return ""
    if found.folder.is_symlink() and checkpoints.saved_epochs(found.folder):
        raise InputError(f"{param('overwrite')}: {found.folder} is a link to another folder and holds checkpoints; "
                         f"cmbcube deletes nothing through a link: remove them yourself, or train a new {param('run')}")
    if found.in_store:
        from cmbcube.cube.drop import drop as drop_product, format_report
        text = format_report(drop_product(store, "run", found.name))
    else:
        text = f"dropped the checkpoints of {found.name!r} in {found.folder} (not a run of {store})"
    if found.folder.is_dir() and not found.folder.is_symlink():
        checkpoints.clear(found.folder)         # drop deletes the folder; this is for one the store does not know
    return text
