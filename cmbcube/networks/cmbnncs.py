"""The cmbNNCS UNets (``cmbnncs-unet5``, ``cmbnncs-unet8``) on the 12-face plane (CubeDataset ``faces`` view).

cmbNNCS (Wang et al. 2022): every block is Conv2d (or ConvTranspose2d) with bias
-> BatchNorm2d -> PReLU; each encoder layer halves and each decoder layer
doubles the image (stride 2; kernel 4 with padding 1, or kernel 5 with padding 2
and output_padding 1 when transposed); each decoder layer takes the
concatenation of the skip and the previous output; the last layer maps to the
output channels with PReLU and no BatchNorm.  ``head="linear"`` drops that last PReLU: a PReLU whose
slope turns negative during training can only output values >= 0, which no CMB map is (measured: slope
-0.68 after training on 256 skies at nside 32, read by hand from the 256-sky run of
benchmarks/results/ranking_2026-12-07_published.txt).
``head="linear-path"`` also adds a per-pixel linear combination of the input channels (a 1x1 convolution)
to that linear output: the first layer halves the image, so the published UNet must squeeze every
pixel-scale detail through stride-2 convolutions; the linear path carries the small scales, where a
linear combination of the channels already separates the CMB (an ILC), and the UNet learns the rest.
"""
from __future__ import annotations

import torch
from torch import nn

from cmbcube.errors import InputError, param
from cmbcube.networks import UNET_HEADS

HEADS = UNET_HEADS                                 # TrainConfig.head values these UNets take
ARCHITECTURES = {
    "cmbnncs-unet5": dict(channels=(32, 64, 128, 256, 512), kernels=(5, 5, 4, 4, 4)),
    "cmbnncs-unet8": dict(channels=(16, 32, 64, 128, 256, 512, 1024, 2048), kernels=(5, 5, 4, 4, 4, 4, 4, 4)),
}


def _down(cin, cout, k):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride=2, padding=(k - 1) // 2 if k == 5 else 1, bias=True),
                         nn.BatchNorm2d(cout), nn.PReLU())


def _up(cin, cout, k, norm=True, activation=True):
    if k == 5:
        conv = nn.ConvTranspose2d(cin, cout, 5, stride=2, padding=2, output_padding=1, bias=True)
    else:
        conv = nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=True)
    layers = [conv] + ([nn.BatchNorm2d(cout)] if norm else []) + ([nn.PReLU()] if activation else [])
    return nn.Sequential(*layers)


class CMBNNCSUNet(nn.Module):
    """UNet of cmbNNCS on (batch, channels, 4 nside, 3 nside) face planes."""

    def __init__(self, in_channels: int, out_channels: int = 1, channels=(32, 64, 128, 256, 512),
                 kernels=(5, 5, 4, 4, 4), head: str = "published"):
        super().__init__()
        if head not in HEADS:
            raise InputError(f"head {head!r}: allowed: {', '.join(HEADS)}")
        if len(channels) != len(kernels):
            raise InputError("channels and kernels must have the same length")
        self.depth = len(channels)
        self.encoder = nn.ModuleList()
        cin = in_channels
        for c, k in zip(channels, kernels):
            self.encoder.append(_down(cin, c, k))
            cin = c
        self.decoder = nn.ModuleList()
        for i in range(self.depth - 1, 0, -1):
            cin = channels[i] if i == self.depth - 1 else 2 * channels[i]
            self.decoder.append(_up(cin, channels[i - 1], kernels[i]))
        self.last = _up(2 * channels[0], out_channels, kernels[0], norm=False, activation=head == "published")
        self.path = nn.Conv2d(in_channels, out_channels, 1) if head == "linear-path" else None

    def check_input(self, height: int, width: int) -> None:
        step = 2 ** self.depth
        if height % step or width % step:
            raise InputError(f"a {self.depth}-level UNet needs planes divisible by {step}: got {height} x {width} "
                             f"(face planes are 4 nside x 3 nside, so nside must be a multiple of {step})")

    def forward(self, x):
        self.check_input(*x.shape[-2:])
        path = self.path(x) if self.path is not None else None
        skips = []
        for layer in self.encoder:
            x = layer(x)
            skips.append(x)
        x = skips.pop()
        for layer in self.decoder:
            x = layer(x)
            x = torch.cat([skips.pop(), x], dim=1)
        x = self.last(x)
        return x if path is None else x + path


def min_nside(name: str) -> int:
    """Smallest nside the UNet accepts (the face plane, 4 nside x 3 nside, halves once per level)."""
    return 2 ** len(ARCHITECTURES[name]["channels"])


def build(in_channels: int, out_channels: int, nside: int, config=None, *, branches=None, n_train=None,
          name: str = "cmbnncs-unet5") -> CMBNNCSUNet:
    """The registry's builder for the UNet ``name`` (a key of ARCHITECTURES)."""
    if nside % min_nside(name):
        raise InputError(f"{param('model')} {name} needs nside to be a multiple of {min_nside(name)} "
                         f"(face plane {4 * nside} x {3 * nside} halved {len(ARCHITECTURES[name]['channels'])} times); "
                         f"this cube has nside {nside}"
                         + ("; use cmbnncs-unet5 (nside >= 32)" if name.endswith("8") else ""))
    head = getattr(config, "head", "published") if config is not None else "published"
    return CMBNNCSUNet(in_channels, out_channels, head=head, **ARCHITECTURES[name])
