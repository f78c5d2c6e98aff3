"""The network layer: torch models that separate the CMB from multi-frequency maps, one registry.

``NETWORKS`` maps a model name (``cmbcube train --model NAME``, recipe ``pipeline.models``) to a
:class:`Network`: how to build it and everything the train and predict stages need to know about
it (the data view it reads, its published training defaults, the losses it trains with, whether
it gives a per-pixel uncertainty). The stages ask the spec and never test a model's name.

Built in (one file each, torch imported only when a network is built):

- ``cmbnncs-unet5``, ``cmbnncs-unet8``  cmbNNCS UNets on the 12-face plane       (networks/cmbnncs.py)
- ``patch-unet``                        a 2-D UNet on square NESTED patches       (networks/patch_unet.py)
- ``petroff``                           Petroff et al.'s Bayesian spherical CNN   (networks/petroff.py,
                                        graph operations in networks/sphere.py)

Adding a network: write its module with a builder
``build(in_channels, out_channels, nside, config, *, branches=None, n_train=None) -> torch.nn.Module``
and add one ``NETWORKS.register("name", Network(build=lazy("cmbcube.networks.mine:build"), ...))``
line below (or call it from your own code before training). Importing this package must stay cheap
(recipe validation reads the names): keep torch inside the network's own module.
"""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any

from cmbcube.errors import param
from cmbcube.registry import Registry

VIEWS = ("faces", "patches", "sky")          # CubeDataset views: 12-face plane, NESTED squares, whole NESTED maps
LOSSES = ("l1", "mse", "heteroscedastic")    # heteroscedastic: Gaussian NLL of (mean, -log variance) outputs


@dataclasses.dataclass(frozen=True)
class Network:
    """What the train and predict stages need to know about one network.

    build: ``(in_channels, out_channels, nside, config, *, branches, n_train) -> torch.nn.Module``;
        ``config`` is the run's TrainConfig (or None: the network's defaults), ``branches`` the input
        channels per detector in input order, ``n_train`` the number of training samples (or None);
    view: the CubeDataset view it reads and writes (faces, patches or sky);
    defaults: TrainConfig values of its published settings (what ``train --published`` uses);
    tuned: TrainConfig values cmbcube trains it with by default on top of ``defaults``, each measured
        better than the published one side by side (benchmarks/ranking.py --variant);
    losses: the losses it can train with (its default one, if not TrainConfig's l1, is in ``defaults``);
    mc_samples: > 0 for a Bayesian network: prediction averages this many Monte Carlo passes by
        default and stores the per-pixel sigma (``pred_sigma``); 0: one deterministic pass;
    mc_predict: ``(net, x, samples, generator=None) -> (mean, sigma)`` numpy (fields, npix) in
        transformed units, for the networks with ``mc_samples``; ``generator`` (a torch.Generator seeded
        per run, split and sim by predict) draws the Monte Carlo randomness;
    amsgrad: train with Adam's AMSGrad variant (which keeps a third moment per weight);
    min_nside: smallest nside it accepts;
    summary: one line for ``--help``;
    heads: the last layers it can be built with (TrainConfig.head): "published" (its own) first, then
        e.g. "linear" (a plain convolution, so the output can take any sign and size);
    data_limited_below: the report flags a run trained on fewer skies as data-limited: in the ranking
        study (``data_limited_source``, a results file) its test MAE at this many skies was lower than
        at the next smaller size studied, significantly (paired 95% interval) and by more than 10%;
        0: no flag (no such gain measured, or not studied at two sizes).
    """
    build: Callable[..., Any]
    view: str = "faces"
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    tuned: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    losses: tuple = ("l1", "mse")
    mc_samples: int = 0
    mc_predict: Callable[..., Any] | None = None
    amsgrad: bool = False
    min_nside: int = 1
    summary: str = ""
    heads: tuple = ("published",)
    data_limited_below: int = 0
    data_limited_source: str = ""

    def __post_init__(self):
        if self.view not in VIEWS:
            raise ValueError(f"Network.view {self.view!r}: allowed: {', '.join(VIEWS)}")
        unknown = [loss for loss in self.losses if loss not in LOSSES]
        if unknown or not self.losses:
            raise ValueError(f"Network.losses {self.losses!r}: allowed: {', '.join(LOSSES)}")
        if self.mc_samples and self.mc_predict is None:
            raise ValueError("Network.mc_samples needs an mc_predict function")

    @property
    def uncertainty(self) -> bool:
        """Whether predictions come with a per-pixel sigma (``pred_sigma``)."""
        return self.mc_samples > 0


NETWORKS = Registry("network", param("model"))


def lazy(target: str, **bound) -> Callable[..., Any]:
    """The function ``"package.module:name"``, imported on its first call (keeps torch out of this
    package's import); ``bound`` keyword arguments are passed on every call."""
    module, _, name = target.partition(":")

    def call(*args, **kwargs):
        return getattr(importlib.import_module(module), name)(*args, **{**bound, **kwargs})
    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"{target} (imported when first called)"
    return call


def build(name: str, in_channels: int, out_channels: int, nside: int, config=None, *, branches=None,
          n_train: int | None = None):
    """The torch module of the network ``name`` (an unknown name raises InputError listing the allowed ones)."""
    return NETWORKS.get(name).build(in_channels, out_channels, nside, config, branches=branches, n_train=n_train)


def min_nside(name: str) -> int:
    return NETWORKS.get(name).min_nside


def default_patch_side(nside: int) -> int:
    """Side of the patches view: one patch per nside-4 parent pixel as CMB-ML (128 at nside 512), at least 4."""
    return max(nside // 4, 4) if nside >= 4 else nside


def branch_sizes(channels) -> list[int]:
    """Input channels per detector, in order, from CubeDataset.channels [(detector, field), ...]."""
    sizes: dict = {}
    for det, _ in channels:
        sizes[det] = sizes.get(det, 0) + 1
    return list(sizes.values())


def loss_function(name: str):
    """The torch loss ``name`` (one of LOSSES): ``loss(output, target) -> scalar tensor``."""
    import torch
    if name == "heteroscedastic":
        from cmbcube.networks.petroff import heteroscedastic_loss
        return heteroscedastic_loss
    return {"l1": torch.nn.L1Loss(), "mse": torch.nn.MSELoss()}[name]


def help_text() -> str:
    """The registered networks for ``--help``."""
    return ", ".join(f"{name} ({spec.summary})" if spec.summary else name for name, spec in NETWORKS.items())


# ----------------------------------------------------------------------------- the built-in networks
DEFAULT = "cmbnncs-unet5"             # what train, the CLI and recipes use unless told
# the ranking study behind data_limited_below: UNet5 test MAE 13.22 / 4.26 / 2.82 / 2.28 uK on 16 / 64 / 256 /
# 1024 skies (paired 256 -> 1024: -0.54 [-0.58, -0.50] uK, -19%: still gaining more than 10%, so below 1024);
# pixel-linear 2.53 / 2.47 / 2.36 / 2.15 (256 -> 1024: -0.21, -9.0%: no flag)
STUDY = "benchmarks/results/ranking_2026-12-07.txt"
UNET_HEADS = ("published", "linear", "linear-path")     # the cmbNNCS UNets' last layers (cmbnncs.HEADS)
# cmbcube's UNet5 settings over cmbNNCS's, each measured side by side on the same skies (nside 32, 64
# training skies, test MAE at 20.6' in uK, benchmarks/results/ranking_2026-12-07_{variants,head,path}.txt):
# robust input scaling (cmbNNCS feeds unscaled uK_CMB, up to ~6e5 at 353 GHz): 25.55 -> 10.07; a linear
# head with a per-pixel linear path: 7.51; Adam from lr 1e-2 (not 0.1) falling to 1e-5: 4.26.
UNET_TUNED = dict(transform="robust", head="linear-path", lr_start=1e-2, lr_end=1e-5)

NETWORKS.register("cmbnncs-unet5", Network(
    build=lazy("cmbcube.networks.cmbnncs:build", name="cmbnncs-unet5"), view="faces", heads=UNET_HEADS,
    tuned=UNET_TUNED, data_limited_below=1024, data_limited_source=STUDY,
    min_nside=32,
    summary="nside >= 32"))
NETWORKS.register("cmbnncs-unet8", Network(
    build=lazy("cmbcube.networks.cmbnncs:build", name="cmbnncs-unet8"), view="faces", heads=UNET_HEADS,
    min_nside=256,
    summary="nside >= 256"))
# not published: sensible settings for a standard UNet on standardised patches
NETWORKS.register("patch-unet", Network(
    build=lazy("cmbcube.networks.patch_unet:build"), view="patches", min_nside=4,
    defaults=dict(transform="standardize", target_transform="standardize", batch_size=16, repeats=1,
                  lr_start=1e-3, lr_end=1e-5)))
# not published: a learned per-pixel linear combination of the inputs, the baseline a network must beat
# (robust-scaled inputs so that one learning rate suits every channel; see cmbcube/networks/linear.py)
NETWORKS.register("pixel-linear", Network(
    build=lazy("cmbcube.networks.linear:build"), view="sky", min_nside=1,
    defaults=dict(transform="robust", target_transform="standardize", batch_size=1, repeats=1, lr_start=0.1,
                  lr_end=1e-4),
    summary="baseline: one learned linear combination of the inputs per pixel"))
# Petroff et al. 2020: 70-857 GHz, inputs divided by their max |x| over the noiseless train sims, target
# mapped to [0, 1], heteroscedastic loss, Adam (amsgrad) at its default constant learning rate 1e-3, batch 1,
# 100 Monte Carlo passes per sky.  Not published: the gradient norm clipped at 10.  Without it, one Monte
# Carlo pass whose mean lands far off while the predicted variance is small gives a gradient ~1e10 times
# the usual; AMSGrad keeps that second moment forever and the network stops learning (measured: valid loss
# -2.55 -> -1.0 after one such step at epoch 58 of a 60-sky run, never recovered).
# cmbcube's Petroff settings over the published ones, measured side by side on the same skies (nside 32,
# 16 training skies; benchmarks/results/ranking_2026-12-07.txt: 15.24 uK against 48.90 at 533b2c4): inputs
# scaled by their max |x| leave the CMB at ~1e-2 of a unit in the CMB channels (the Galaxy sets each max),
# so at lr 1e-3 the network predicts almost no CMB (dCl/Cl 0.999, test MAE 48.9 uK); robust inputs and a
# standardised target learn from the first epochs (valid loss 0.49 -> -0.18 in 31 epochs).
PETROFF_TUNED = dict(transform="robust", target_transform="standardize")
NETWORKS.register("petroff", Network(
    build=lazy("cmbcube.networks.petroff:build"), view="sky", min_nside=1, tuned=PETROFF_TUNED,
    defaults=dict(detectors=(70, 100, 143, 217, 353, 545, 857), transform="noiseless-maxabs",
                  target_transform="unit-maxabs", loss="heteroscedastic", batch_size=1, repeats=1, lr_start=1e-3,
                  lr_end=1e-3, grad_clip=10.0),
    losses=("heteroscedastic",), mc_samples=100, mc_predict=lazy("cmbcube.networks.petroff:mc_predict"),
    amsgrad=True, summary="Bayesian spherical network with per-pixel sigma"))
