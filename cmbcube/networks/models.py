"""Networks: the cmbNNCS UNets on the 12-face plane, a patch UNet on NESTED squares, and
Petroff et al.'s Bayesian spherical network on whole NESTED maps (cmbcube.networks.petroff).

cmbNNCS (Wang et al. 2022): every block is Conv2d (or ConvTranspose2d) with bias
-> BatchNorm2d -> PReLU; each encoder layer halves and each decoder layer
doubles the image (stride 2; kernel 4 with padding 1, or kernel 5 with padding 2
and output_padding 1 when transposed); each decoder layer takes the
concatenation of the skip and the previous output; the last layer maps to the
output channels with PReLU and no BatchNorm.
"""
from __future__ import annotations

import torch
from torch import nn
from cmbcube.errors import InputError

CMBNNCS = {
    "cmbnncs-unet5": dict(channels=(32, 64, 128, 256, 512), kernels=(5, 5, 4, 4, 4)),
    "cmbnncs-unet8": dict(channels=(16, 32, 64, 128, 256, 512, 1024, 2048), kernels=(5, 5, 4, 4, 4, 4, 4, 4)),
}
MODELS = tuple(CMBNNCS) + ("patch-unet", "petroff")
VIEWS = {"patch-unet": "patches", "petroff": "sky"}       # CubeDataset view per model (default: faces)


def view_for(model: str) -> str:
    return VIEWS.get(model, "faces")


def _down(cin, cout, k):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride=2, padding=(k - 1) // 2 if k == 5 else 1, bias=True),
                         nn.BatchNorm2d(cout), nn.PReLU())


def _up(cin, cout, k, norm=True):
    if k == 5:
        conv = nn.ConvTranspose2d(cin, cout, 5, stride=2, padding=2, output_padding=1, bias=True)
    else:
        conv = nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=True)
    layers = [conv] + ([nn.BatchNorm2d(cout)] if norm else []) + [nn.PReLU()]
    return nn.Sequential(*layers)


class CMBNNCSUNet(nn.Module):
    """UNet of cmbNNCS on (batch, channels, 4 nside, 3 nside) face planes."""

    def __init__(self, in_channels: int, out_channels: int = 1, channels=(32, 64, 128, 256, 512),
                 kernels=(5, 5, 4, 4, 4)):
        super().__init__()
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
        self.last = _up(2 * channels[0], out_channels, kernels[0], norm=False)

    def check_input(self, height: int, width: int) -> None:
        step = 2 ** self.depth
        if height % step or width % step:
            raise InputError(f"a {self.depth}-level UNet needs planes divisible by {step}: got {height} x {width} "
                             f"(face planes are 4 nside x 3 nside, so nside must be a multiple of {step})")

    def forward(self, x):
        self.check_input(*x.shape[-2:])
        skips = []
        for layer in self.encoder:
            x = layer(x)
            skips.append(x)
        x = skips.pop()
        for layer in self.decoder:
            x = layer(x)
            x = torch.cat([skips.pop(), x], dim=1)
        return self.last(x)


def min_nside(model: str) -> int:
    """Smallest nside a face-plane model accepts (nside must be a multiple of 2^depth)."""
    if model in CMBNNCS:
        return 2 ** len(CMBNNCS[model]["channels"])
    if model == "petroff":
        return 1
    return 4


class _DoubleConv(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class PatchUNet(nn.Module):
    """A standard 2-D UNet (3x3 double convolutions, max-pooling, transposed-conv upsampling)."""

    def __init__(self, in_channels: int, out_channels: int = 1, base: int = 32, depth: int = 4):
        super().__init__()
        self.depth = depth
        chans = [base * 2 ** i for i in range(depth + 1)]
        self.down = nn.ModuleList([_DoubleConv(in_channels, chans[0])] +
                                  [_DoubleConv(chans[i], chans[i + 1]) for i in range(depth)])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList([nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in reversed(range(depth))])
        self.merge = nn.ModuleList([_DoubleConv(2 * chans[i], chans[i]) for i in reversed(range(depth))])
        self.last = nn.Conv2d(chans[0], out_channels, 1)

    def check_input(self, height: int, width: int) -> None:
        step = 2 ** self.depth
        if height % step or width % step:
            raise InputError(f"a depth-{self.depth} patch UNet needs patch sides divisible by {step}, got {height}")

    def forward(self, x):
        self.check_input(*x.shape[-2:])
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < self.depth:
                skips.append(x)
                x = self.pool(x)
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([skips.pop(), up(x)], dim=1))
        return self.last(x)


def default_patch_side(nside: int) -> int:
    """One patch per nside-4 parent pixel as CMB-ML (128 at nside 512), at least 4."""
    return max(nside // 4, 4) if nside >= 4 else nside


def patch_depth(side: int) -> int:
    """Depth of the patch UNet for a patch side: 4 at 128, fewer for small patches (>= 2 px at the bottom)."""
    return max(1, min(4, side.bit_length() - 2))


def branch_sizes(channels) -> list[int]:
    """Input channels per detector, in order, from CubeDataset.channels [(detector, field), ...]."""
    sizes: dict = {}
    for det, _ in channels:
        sizes[det] = sizes.get(det, 0) + 1
    return list(sizes.values())


def build(model: str, in_channels: int, out_channels: int, nside: int, patch_side: int | None = None,
          base_channels: int | None = None, branches=None, n_train: int | None = None) -> nn.Module:
    """``out_channels``: target fields (Petroff's network gives two maps per field: mean and -log variance).
    Petroff only: ``branches``, input channels per detector branch (default: one branch per channel);
    ``n_train``, training skies (concrete-dropout regularisers; default the published 800)."""
    if model in CMBNNCS:
        if nside % min_nside(model):
            raise InputError(f"--model {model} needs nside to be a multiple of {min_nside(model)} "
                             f"(face plane {4 * nside} x {3 * nside} halved {len(CMBNNCS[model]['channels'])} times); "
                             f"this cube has nside {nside}" + ("; use cmbnncs-unet5 (nside >= 32)" if model.endswith("8") else ""))
        return CMBNNCSUNet(in_channels, out_channels, **CMBNNCS[model])
    if model == "patch-unet":
        side = patch_side or default_patch_side(nside)
        return PatchUNet(in_channels, out_channels, base=base_channels or 32, depth=patch_depth(side))
    if model == "petroff":
        from cmbcube.networks.petroff import PetroffNet
        branches = list(branches) if branches is not None else [1] * in_channels
        if sum(branches) != in_channels:
            raise InputError(f"petroff: branches {branches} do not add up to {in_channels} input channels")
        return PetroffNet(branches, out_channels, nside, n_train=n_train)
    raise InputError(f"--model {model!r}: allowed: {', '.join(MODELS)}")
